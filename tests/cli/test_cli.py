"""The ``edge`` command as a user runs it: startup errors and the demo, as real processes."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

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


def test_workers_share_the_port() -> None:
    """--workers 2: two processes accept on one port (SO_REUSEPORT) and both answer."""
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
        _wait_for(url, edge_proc)
        time.sleep(1.0)  # the second worker is a spawned interpreter: give it time to bind
        statuses = set()
        for _ in range(40):
            with httpx.Client() as client:  # a new connection each time: the kernel spreads them
                resp = client.get(url)
            statuses.add(
                (resp.status_code, resp.content == (REPO / "origin/sample_site/robots.txt").read_bytes())
            )
        assert statuses == {(200, True)}
        children = subprocess.run(
            ["pgrep", "-P", str(edge_proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 1, "a second worker process runs"
    finally:
        for proc in (edge_proc, origin_proc):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert edge_proc.returncode is not None
