"""SIGHUP re-reads the configuration: new upstreams, log level and certificates apply to what
comes next, while open connections keep being served. Real `edge serve` processes on loopback.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.wiring.devcert import ensure_dev_cert
from tests.support.h3client import h3_client
from tests.support.nodes import free_port
from tests.wiring.test_shutdown import wait_port

REPO = Path(__file__).resolve().parents[2]


class Node:
    """An `edge serve` process whose stderr lines are read as they come."""

    def __init__(self, args: list[str], port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", *args],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        """Every stderr line so far (for failure messages)."""
        threading.Thread(target=self._read, daemon=True).start()
        wait_port(port, self.proc)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.seen.append(line)
            self.lines.put(line)

    def said(self, fragment: str, timeout: float = 20.0) -> str:
        """The next stderr line containing ``fragment`` (earlier other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the node did not say {fragment!r} within {timeout:g} s: {self.seen[-20:]}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if fragment in line:
                return line

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0


def origin(root: Path, files: dict[str, bytes]) -> tuple[subprocess.Popen[bytes], int]:
    root.mkdir()
    for name, body in files.items():
        (root / name).write_bytes(body)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "origin", "serve", "--root", str(root), "--listen", f"127.0.0.1:{port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port, proc)
    return proc, port


@pytest.fixture
def two_origins(tmp_path: Path) -> Iterator[tuple[int, int]]:
    a, port_a = origin(tmp_path / "a", {"app.js": b"from A\n"})
    b, port_b = origin(tmp_path / "b", {"app.js": b"from B\n", "only-b.js": b"only on B\n"})
    try:
        yield port_a, port_b
    finally:
        for proc in (a, b):
            proc.terminate()
            proc.wait(10)


def get(sock: socket.socket | ssl.SSLSocket, path: str) -> tuple[int, bytes]:
    """One keep-alive GET on an open connection: (status, body)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: cdn.test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the connection was closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection was closed"
        body += chunk
    return int(head.split(b" ")[1]), body


def test_sighup_takes_a_new_upstream_and_keeps_open_connections(
    two_origins: tuple[int, int], tmp_path: Path
) -> None:
    port_a, port_b = two_origins
    port = free_port()
    conf = tmp_path / "edge.toml"
    base = f'listen = "127.0.0.1:{port}"\nadmin_listen = ""\ntls_listen = ""\nquic_listen = ""\naccess_log = "off"\n'
    conf.write_text(base + f'upstream = "http://127.0.0.1:{port_a}"\n')
    node = Node(["--config", str(conf)], port)
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert get(client, "/app.js") == (200, b"from A\n")

        conf.write_text(base + f'upstream = "http://127.0.0.1:{port_b}"\nlog_level = "info"\n')
        node.hup()
        line = node.said("reloaded")
        assert "upstream" in line and "log_level" in line
        assert get(client, "/only-b.js") == (200, b"only on B\n")  # the same connection, the new upstream
        assert get(client, "/app.js") == (200, b"from A\n")  # what is cached stays cached

        conf.write_text("upstream = [not toml")
        node.hup()
        assert "previous configuration" in node.said("refused")
        assert get(client, "/only-b.js") == (200, b"only on B\n")

        conf.write_text(
            base.replace(f"127.0.0.1:{port}", "127.0.0.1:1") + f'upstream = "http://127.0.0.1:{port_b}"\n'
        )
        node.hup()
        assert "listen changed; applied at the next restart" in node.said("next restart")
        assert get(client, "/only-b.js") == (200, b"only on B\n")
        client.close()
    finally:
        node.stop()


def peer_cert(sock: ssl.SSLSocket) -> bytes:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def leaf_der(pem_chain: Path) -> bytes:
    first = pem_chain.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first)


def test_sighup_gives_new_handshakes_a_renewed_certificate_and_open_ones_keep_theirs(
    two_origins: tuple[int, int], tmp_path: Path
) -> None:
    old, new = ensure_dev_cert(tmp_path / "old"), ensure_dev_cert(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(old.cert, live / "cert.pem")
    shutil.copy(old.key, live / "key.pem")
    port, tls = free_port(), free_port()
    node = Node(
        ["--upstream", f"http://127.0.0.1:{two_origins[0]}", "--listen", f"127.0.0.1:{port}",
         "--admin-listen", "", "--access-log", "off", "--cert", str(live / "cert.pem"),
         "--key", str(live / "key.pem"), "--tls-listen", f"127.0.0.1:{tls}", "--quic-listen", f"127.0.0.1:{tls}"],
        port,
    )  # fmt: skip
    try:
        wait_port(tls, node.proc)
        trusting = ssl.create_default_context()
        trusting.check_hostname = False
        trusting.verify_mode = ssl.CERT_NONE
        before = trusting.wrap_socket(socket.create_connection(("127.0.0.1", tls), timeout=10))
        assert peer_cert(before) == leaf_der(old.cert)
        assert get(before, "/app.js") == (200, b"from A\n")

        shutil.copy(new.cert, live / "cert.pem")  # certbot renews in place
        shutil.copy(new.key, live / "key.pem")
        node.hup()
        node.said("reloaded")
        after = trusting.wrap_socket(socket.create_connection(("127.0.0.1", tls), timeout=10))
        assert peer_cert(after) == leaf_der(new.cert)
        assert get(after, "/app.js") == (200, b"from A\n")
        assert get(before, "/app.js") == (200, b"from A\n")  # the open connection keeps being served

        async def over_h3(ca: Path) -> int:
            async with h3_client("127.0.0.1", tls, str(ca)) as client:
                return (await client.request("/app.js")).status

        assert asyncio.run(over_h3(new.ca)) == 200  # HTTP/3 handshakes verify against the new chain

        (live / "key.pem").write_text("not a key")  # a broken renewal changes nothing
        node.hup()
        assert "still serving the previous one" in node.said("certificate not reloaded")
        again = trusting.wrap_socket(socket.create_connection(("127.0.0.1", tls), timeout=10))
        assert peer_cert(again) == leaf_der(new.cert)
        for sock in (before, after, again):
            sock.close()
    finally:
        node.stop()


def test_sighup_to_the_first_worker_reloads_every_worker(two_origins: tuple[int, int]) -> None:
    port, admin = free_port(), free_port()
    node = Node(
        ["--upstream", f"http://127.0.0.1:{two_origins[0]}", "--listen", f"127.0.0.1:{port}", "--workers", "2",
         "--admin-listen", f"127.0.0.1:{admin}", "--admin-token", "t", "--access-log", "off",
         "--tls-listen", "", "--quic-listen", ""],
        port,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:  # both workers up (each has taken SIGHUP once it answers the fan-out)
            try:
                stats = httpx.get(
                    f"http://127.0.0.1:{admin}/stats", headers={"Authorization": "Bearer t"}
                ).json()
                if len(stats["workers"]) == 2 and not any("error" in w for w in stats["workers"]):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.05)
        node.hup()
        said = {node.said("reloaded (worker").split("reloaded (")[1].split(")")[0] for _ in range(2)}
        assert said == {"worker 0", "worker 1"}
    finally:
        node.stop()
