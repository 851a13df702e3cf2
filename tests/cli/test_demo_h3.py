"""``edge demo`` serves HTTPS and HTTP/3 with a dev certificate on 127.0.0.1 and ::1 and prints the SPKI hash."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.wiring.devcert import ensure_dev_cert
from tests.support.h3client import h3_client

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_demo_serves_h3_with_a_dev_cert(tmp_path: Path) -> None:
    tls_port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "demo", "--origin-listen", f"127.0.0.1:{_free_port()}",
         "--listen", f"127.0.0.1:{_free_port()}", "--admin-listen", "", "--tls-port", str(tls_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "demo did not start"
                time.sleep(0.1)
        cert = ensure_dev_cert(tmp_path / "edge-cdn" / "certs")  # reuses what the demo made
        hosts = ["127.0.0.1", "::1"] if _has_ipv6_loopback() else ["127.0.0.1"]
        for host in hosts:
            async with h3_client(host, tls_port, str(cert.ca)) as client:
                resp = await client.request("/robots.txt")
            assert resp.status == 200 and resp.header("cache-status") is not None
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert f"--ignore-certificate-errors-spki-list={cert.spki}" in out
    assert f"https://localhost:{tls_port}/index.html" in out
