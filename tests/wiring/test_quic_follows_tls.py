"""HTTP/3 listens where HTTPS does unless told otherwise, and Alt-Svc names a port that listens."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from edge import config as edge_config
from edge.wiring.devcert import ensure_dev_cert
from tests.support.h3client import h3_client
from tests.support.nodes import free_port
from tests.wiring.conftest import REPO
from tests.wiring.test_shutdown import wait_port


def test_quic_listen_defaults_to_the_tls_addresses() -> None:
    flags = {"upstream": "http://127.0.0.1:9", "tls_listen": "0.0.0.0:443,[::]:443"}
    assert edge_config.load(None, {}, flags).quic_listen == "0.0.0.0:443,[::]:443"
    assert edge_config.load(None, {}, {**flags, "quic_listen": ""}).quic_listen == ""
    assert edge_config.load(None, {}, {**flags, "quic_listen": "0.0.0.0:8443"}).quic_listen == "0.0.0.0:8443"


def test_a_node_given_only_tls_listen_serves_http3_on_that_port_and_says_so(
    site: int, tmp_path: Path
) -> None:
    cert = ensure_dev_cert(tmp_path / "cert")
    port, tls = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{site}",
         "--listen", f"127.0.0.1:{port}", "--admin-listen", "", "--access-log", "off",
         "--cert", str(cert.cert), "--key", str(cert.key), "--tls-listen", f"127.0.0.1:{tls}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(tls, proc)
        with httpx.Client(verify=str(cert.ca)) as client:
            alt_svc = client.get(f"https://localhost:{tls}/app.js").headers["alt-svc"]
        assert alt_svc.startswith(f'h3=":{tls}"')

        async def over_h3() -> int:
            async with h3_client("127.0.0.1", tls, str(cert.ca)) as h3:
                return (await h3.request("/app.js")).status

        assert asyncio.run(over_h3()) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
