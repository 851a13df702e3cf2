"""The ``edge`` command as a user runs it: startup errors and the demo, as real processes."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import procnet
from tests.support.nodes import free_port

REPO = Path(__file__).resolve().parents[2]


def edge_cmd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def assert_one_clean_line(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edge: error:") and fragment in lines[0], lines[0]


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = edge_cmd("serve", "--upstream", "http://127.0.0.1:1", "--listen", f"127.0.0.1:{port}")
    assert_one_clean_line(proc, "cannot listen")


def test_demo_with_its_origin_port_in_use_is_one_clear_line() -> None:
    """Another server on the origin's port must not be cached in the sample origin's place."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = edge_cmd(
            "demo", "--origin-listen", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{free_port()}",
            "--admin-listen", "", "--tls-port", "0",
        )  # fmt: skip
    assert_one_clean_line(proc, "port is in use")


def test_missing_upstream_is_one_clear_line() -> None:
    proc = edge_cmd("serve", "--listen", "127.0.0.1:0", env={"EDGE_UPSTREAM": ""})
    assert_one_clean_line(proc, "no upstream")


def test_bad_config_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "edge.toml"
    bad.write_text("cache_size = 'lots'\n")
    assert_one_clean_line(edge_cmd("serve", "--config", str(bad)), "not a size")
    bad.write_text("[edge\n")
    assert_one_clean_line(edge_cmd("serve", "--config", str(bad)), "invalid TOML")
    bad.write_text("colour = 'blue'\n")
    assert_one_clean_line(edge_cmd("serve", "--config", str(bad)), "unknown setting")
    assert_one_clean_line(edge_cmd("serve", "--config", str(tmp_path / "none.toml")), "cannot read config")


def test_serve_help_documents_every_setting() -> None:
    out = edge_cmd("serve", "--help").stdout
    for flag in ("--upstream", "--listen", "--cache-size", "--config", "--workers", "--read-timeout"):
        assert flag in out
    assert "EDGE_CACHE_SIZE" in out


def test_flags_win_over_env_over_file(tmp_path: Path) -> None:
    from edge import config

    conf = tmp_path / "edge.toml"
    conf.write_text('upstream = "http://file:1"\nname = "from-file"\ncache_size = "1GiB"\n')
    loaded = config.load(
        conf, {"EDGE_NAME": "from-env", "EDGE_UPSTREAM": "http://env:2"}, {"upstream": "http://flag:3"}
    )
    assert loaded.upstream == "http://flag:3"
    assert loaded.name == "from-env"
    assert loaded.cache_size == 1024**3


def _wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_demo_serves_the_sample_site_miss_then_hit(tmp_path: Path) -> None:
    origin_port, edge_port, admin_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "demo", "--origin-listen", f"127.0.0.1:{origin_port}",
         "--listen", f"127.0.0.1:{edge_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
         "--tls-port", str(free_port())],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{edge_port}"
        _wait_for(base + "/robots.txt", proc)
        page = httpx.get(base + "/index.html")
        assert page.status_code == 200 and b"<html" in page.content.lower()
        js = next(p for p in (tmp_path / "edge-cdn/sample-site/assets").iterdir() if p.suffix == ".js")
        url = f"{base}/assets/{js.name}"
        first = httpx.get(url, headers={"Accept-Encoding": "identity"})
        second = httpx.get(url, headers={"Accept-Encoding": "identity"})
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert hashlib.sha256(first.content).digest() == hashlib.sha256(second.content).digest()
        assert first.content == js.read_bytes()
        big = httpx.get(base + "/downloads/dataset-20MiB.bin", timeout=30)
        assert len(big.content) == 20 * 1024 * 1024
        assert httpx.get(f"http://127.0.0.1:{admin_port}/healthz").text.strip() == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"http://127.0.0.1:{edge_port}/index.html" in out, "the demo prints the URLs to open"
    purge_line = next(line for line in out.splitlines() if line.startswith("purge:"))
    assert "--token" in purge_line


def test_served_node_purges_through_its_admin_port(tmp_path: Path) -> None:
    """edge serve starts the admin API beside the public port; edge purge reaches it."""
    origin_proc = subprocess.Popen(
        [sys.executable, "-m", "origin", "serve", "--root", str(REPO / "origin/sample_site"),
         "--listen", f"127.0.0.1:{(origin_port := free_port())}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    edge_port, admin_port = free_port(), free_port()
    env = {**os.environ, "EDGE_ADMIN_TOKEN": "s3cret"}
    edge_proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
         "--listen", f"127.0.0.1:{edge_port}", "--admin-listen", f"127.0.0.1:{admin_port}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{edge_port}/robots.txt"
        _wait_for(url, edge_proc)
        httpx.get(url)
        assert httpx.get(url).headers["x-cache"] == "HIT"
        admin = f"http://127.0.0.1:{admin_port}"
        purged = edge_cmd("purge", "--admin", admin, url, env={"EDGE_ADMIN_TOKEN": "s3cret"})
        assert purged.returncode == 0 and purged.stdout.startswith("1 "), purged.stderr
        assert httpx.get(url).headers["x-cache"] == "MISS"
        refused = edge_cmd("purge", "--admin", admin, "--token", "wrong", url)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
    finally:
        for proc in (edge_proc, origin_proc):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _poll(predicate: Callable[[], bool], what: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    """Return once ``predicate()`` holds; fail if ``proc`` exits first or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _edge_workers(parent: int) -> tuple[list[int], dict[int, list[str]]]:
    """The node's serving processes (``parent`` and its spawned workers), and its other children.

    A worker started by multiprocessing's spawn runs ``python -c "from multiprocessing.spawn
    import spawn_main; ..." --multiprocessing-fork``; the same machinery also starts a
    resource tracker (``-c "from multiprocessing.resource_tracker import main; ..."``),
    which is a child too but serves nothing.
    """
    workers, others = [parent], {}
    for child in procnet.children(parent):
        argv = procnet.cmdline(child)
        if "--multiprocessing-fork" in argv and any("spawn_main" in arg for arg in argv):
            workers.append(child)
        else:
            others[child] = argv
    return workers, others


def _answered_by(port: int, path: str, workers: list[int]) -> tuple[int | None, int, bytes]:
    """GET ``path`` on a new connection: (pid of the worker holding its server end, status, body).

    The connection stays open (keep-alive) until its owner is looked up in /proc.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.connect()
        assert conn.sock is not None
        client = conn.sock.getsockname()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return procnet.connection_owner(("127.0.0.1", port), client, pids=workers), resp.status, body
    except TimeoutError:
        owner = procnet.connection_owner(("127.0.0.1", port), client)
        raise AssertionError(
            f"no answer within 10 s (server end held by pid {owner}; None: never accepted)"
        ) from None
    finally:
        conn.close()


@pytest.mark.skipif(not procnet.AVAILABLE, reason="tells workers apart through Linux /proc")
def test_workers_share_the_port() -> None:
    """--workers 2: two processes accept on one port, each on its own socket (SO_REUSEPORT), and both answer."""
    origin_port, edge_port = free_port(), free_port()
    origin_proc = subprocess.Popen(
        [sys.executable, "-m", "origin", "serve", "--root", str(REPO / "origin/sample_site"),
         "--listen", f"127.0.0.1:{origin_port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    edge_proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
         "--listen", f"127.0.0.1:{edge_port}", "--admin-listen", "", "--workers", "2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{edge_port}/robots.txt"
        _wait_for(url, edge_proc)  # the parent serves; it started the worker before that
        workers, others = _edge_workers(edge_proc.pid)
        assert len(workers) == 2, (
            f"the parent and one spawned worker serve: {workers}; other children {others}"
        )
        # The spawned worker is a fresh interpreter: wait until it, too, listens on the port.
        _poll(
            lambda: set(procnet.listeners(edge_port, pids=workers)) == set(workers),
            "both workers listen on the port",
            edge_proc,
        )
        listening = procnet.listeners(edge_port, pids=workers)
        sockets = [inodes for _, inodes in sorted(listening.items())]
        assert all(len(inodes) == 1 for inodes in sockets) and sockets[0] != sockets[1], (
            f"each worker has a listening socket of its own: {listening}"
        )
        robots = (REPO / "origin/sample_site/robots.txt").read_bytes()
        answers: dict[int, int] = {}
        for _ in range(200):  # the kernel spreads new connections over the two sockets by hash
            owner, status, body = _answered_by(edge_port, "/robots.txt", workers)
            assert (status, body) == (200, robots)
            assert owner in workers, f"the connection that answered is held by no worker ({owner})"
            answers[owner] = answers.get(owner, 0) + 1
            if len(answers) == len(workers):
                break
        assert set(answers) == set(workers), f"answers per worker pid: {answers}"
    finally:
        for proc in (edge_proc, origin_proc):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert edge_proc.returncode is not None
