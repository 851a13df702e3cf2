"""SIGTERM drains the node: readiness turns 503, the port stops accepting, a download in flight
finishes whole, then the process exits 0. Real processes on loopback.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.nodes import free_port

REPO = Path(__file__).resolve().parents[2]
SIZE = 24 * 1024 * 1024


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, "the process exited before listening"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} after {deadline} s")


def readyz(admin: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_sigterm_lets_a_download_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    body = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(body)
    origin_port, port, admin = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "origin", "serve", "--root", str(tmp_path), "--listen", f"127.0.0.1:{origin_port}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    try:
        wait_port(origin_port, procs[0])
        edge = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", "--shutdown-grace", "30"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(edge)
        wait_port(port, edge)
        assert readyz(admin) == 200
        client = socket.create_connection(("127.0.0.1", port), timeout=20)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a slow client: a small window
        client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: cdn.test\r\n\r\n")
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received += client.recv(65536)
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % SIZE in head
        got = bytearray(rest)

        edge.send_signal(signal.SIGTERM)
        # Readiness turns 503 while the response is still being sent (the admin API stays up).
        end = time.monotonic() + 10
        while readyz(admin) != 503:
            assert time.monotonic() < end, "readiness did not turn 503"
            time.sleep(0.02)
        assert edge.poll() is None, "the node exited with a response in flight"
        end = time.monotonic() + 10
        while True:  # the public port stops accepting
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                break
            assert time.monotonic() < end, "the port still accepts connections"
            time.sleep(0.02)

        while len(got) < SIZE:  # the slow client reads on: the whole body arrives
            chunk = client.recv(65536)
            assert chunk, f"connection closed after {len(got)} of {SIZE} bytes"
            got += chunk
            time.sleep(0.001)  # the scenario: a slow reader, not a wait for the node
        client.close()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert edge.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_sigterm_closes_the_tls_listener_first_and_a_tls_download_finishes(tmp_path: Path) -> None:
    import ssl

    from edge.wiring.devcert import ensure_dev_cert

    cert = ensure_dev_cert(tmp_path / "cert")
    body = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(body)
    origin_port, port, tls, admin = free_port(), free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "origin", "serve", "--root", str(tmp_path), "--listen", f"127.0.0.1:{origin_port}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    try:
        wait_port(origin_port, procs[0])
        edge = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", "--shutdown-grace", "30",
             "--cert", str(cert.cert), "--key", str(cert.key), "--tls-listen", f"127.0.0.1:{tls}",
             "--quic-listen", "", "--access-log", "off"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(edge)
        wait_port(tls, edge)
        context = ssl.create_default_context(cafile=str(cert.ca))
        raw = socket.create_connection(("127.0.0.1", tls), timeout=20)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client = context.wrap_socket(raw, server_hostname="localhost")
        client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received += client.recv(65536)
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % SIZE in head
        got = bytearray(rest)

        edge.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        while True:  # the TLS listener stops accepting while the download goes on
            try:
                socket.create_connection(("127.0.0.1", tls), timeout=0.5).close()
            except OSError:
                break
            assert time.monotonic() < end, "the TLS port still accepts connections"
            time.sleep(0.02)
        assert edge.poll() is None, "the node exited with a response in flight"
        while len(got) < SIZE:
            chunk = client.recv(65536)
            assert chunk, f"connection closed after {len(got)} of {SIZE} bytes"
            got += chunk
        client.close()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert edge.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_sigterm_refuses_new_http3_connections_and_serves_open_ones(tmp_path: Path) -> None:
    import asyncio

    import httpx

    from edge.wiring.devcert import ensure_dev_cert
    from tests.support.h3client import h3_client

    cert = ensure_dev_cert(tmp_path / "cert")
    (tmp_path / "big.bin").write_bytes(os.urandom(SIZE))
    (tmp_path / "small.txt").write_bytes(b"small\n")
    origin_port, port, tls, admin = free_port(), free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "origin", "serve", "--root", str(tmp_path), "--listen", f"127.0.0.1:{origin_port}"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    try:
        wait_port(origin_port, procs[0])
        edge = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", "--shutdown-grace", "30",
             "--cert", str(cert.cert), "--key", str(cert.key), "--tls-listen", f"127.0.0.1:{tls}",
             "--access-log", "off"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(edge)
        wait_port(tls, edge)
        # A download held in flight (nothing read) keeps the node draining while HTTP/3 is tried.
        client = socket.create_connection(("127.0.0.1", port), timeout=20)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: cdn.test\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200")

        async def scenario() -> tuple[int, bool, int]:
            async with h3_client("127.0.0.1", tls, str(cert.ca)) as open_one:
                before = (await open_one.request("/small.txt")).status
                edge.send_signal(signal.SIGTERM)
                async with httpx.AsyncClient() as http:
                    while (await http.get(f"http://127.0.0.1:{admin}/readyz")).status_code != 503:
                        await asyncio.sleep(0.02)
                try:
                    async with asyncio.timeout(2), h3_client("127.0.0.1", tls, str(cert.ca)) as new_one:
                        await new_one.request("/small.txt")
                    refused = False
                except (TimeoutError, ConnectionError):
                    refused = True
                after = (await asyncio.wait_for(open_one.request("/small.txt"), 10)).status
            return before, refused, after

        before, refused, after = asyncio.run(scenario())
        assert before == 200
        assert refused, "a new HTTP/3 connection was accepted during the drain"
        assert after == 200, "an HTTP/3 connection opened before the drain was not served"
        client.close()
        assert edge.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
