"""The ``origin`` command in a real subprocess: startup errors, serving, the access log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from origin_testsite import Site, free_port  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_origin(tmp_path: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "origin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(tmp_path),
        cwd=tmp_path,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_port_in_use(tmp_path: Path, site: Site) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_origin(tmp_path, "serve", "--root", str(site.root), "--listen", f"127.0.0.1:{port}")
    assert_one_line_error(proc, "cannot listen", str(port))


@pytest.mark.parametrize(
    ("root", "needle"),
    [("does-not-exist", "does not exist"), ("file.txt", "not a directory")],
)
def test_bad_root(tmp_path: Path, root: str, needle: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    proc = run_origin(tmp_path, "serve", "--root", str(tmp_path / root), "--listen", "127.0.0.1:0")
    assert_one_line_error(proc, needle)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_root(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        proc = run_origin(tmp_path, "serve", "--root", str(locked), "--listen", "127.0.0.1:0")
    finally:
        locked.chmod(0o755)
    assert_one_line_error(proc, "not readable")


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:http"])
def test_bad_listen(tmp_path: Path, site: Site, listen: str) -> None:
    proc = run_origin(tmp_path, "serve", "--root", str(site.root), "--listen", listen)
    assert_one_line_error(proc, "--listen")


def test_bad_rules_file(tmp_path: Path, site: Site) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rule]\n")
    proc = run_origin(tmp_path, "serve", "--root", str(site.root), "--rules", str(rules))
    assert_one_line_error(proc, "not valid TOML")
    proc = run_origin(tmp_path, "serve", "--root", str(site.root), "--rules", str(tmp_path / "none"))
    assert_one_line_error(proc, "cannot read rules file")


def test_help_documents_flags(tmp_path: Path) -> None:
    proc = run_origin(tmp_path, "serve", "--help")
    assert proc.returncode == 0
    for flag in ("--root", "--listen", "--rules", "127.0.0.1:8000"):
        assert flag in proc.stdout


class Running:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self) -> tuple[str, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out, err


@pytest.fixture
def served(tmp_path: Path, site: Site) -> Iterator[Running]:
    port = free_port()
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nglob = "*.txt"\ncache_control = "public, max-age=42"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "origin",
            "serve",
            "--root",
            str(site.root),
            "--listen",
            f"127.0.0.1:{port}",
            "--rules",
            str(rules),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    running = Running(proc, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"origin exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    yield running
    if proc.poll() is None:
        running.stop()


ACCESS = re.compile(
    r'^(?P<client>\S+) "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/(?P<ver>[\d.]+)" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<ms>[\d.]+)ms(?: range=\"(?P<range>[^\"]*)\")?$"
)


def test_serve_logs_one_line_per_request(served: Running) -> None:
    with httpx.Client(base_url=served.url, headers={"Accept-Encoding": "identity"}) as c:
        assert c.get("/notes.txt").headers["cache-control"] == "public, max-age=42"
        assert c.get("/big.bin", headers={"Range": "bytes=0-99"}).status_code == 206
        assert c.head("/index.html").status_code == 200
        assert c.get("/missing").status_code == 404
        assert c.post("/notes.txt").status_code == 405
    out, err = served.stop()
    assert served.proc.returncode == 0, err
    assert "Traceback" not in err
    assert "origin: serving" in err and "Running on" in err
    lines = [ACCESS.match(line) for line in out.strip().splitlines()]
    assert all(lines), out
    got = [(m["method"], m["target"], m["status"], m["bytes"], m["range"]) for m in lines if m]
    assert got == [
        ("GET", "/notes.txt", "200", "13", None),
        ("GET", "/big.bin", "206", "100", "bytes=0-99"),
        ("HEAD", "/index.html", "200", "0", None),
        ("GET", "/missing", "404", "10", None),
        ("POST", "/notes.txt", "405", "19", None),
    ]


def test_sample_site_command(tmp_path: Path) -> None:
    dest = tmp_path / "site"
    proc = run_origin(tmp_path, "sample-site", "--dest", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest)
    assert (dest / "index.html").is_file()
    assert (dest / "downloads" / "dataset-20MiB.bin").stat().st_size == 20 * 1024 * 1024


def test_serve_without_root_uses_sample_site(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "origin", "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    running = Running(proc, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        body = b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = httpx.get(f"{running.url}/").content
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert b"Driftwood Static" in body
        r = httpx.head(f"{running.url}/downloads/dataset-20MiB.bin")
        assert r.headers["content-length"] == str(20 * 1024 * 1024)
    finally:
        _out, err = running.stop()
    assert str(tmp_path / "state" / "edge-cdn" / "sample-site") in err
