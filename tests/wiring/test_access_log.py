"""The access log: one JSON line per request on every front, batched, never blocking the loop.

Real `edge serve` processes on loopback (HTTP/1.1, HTTP/2 over TLS, HTTP/3), plus the
writer on its own with a real pipe nobody reads and a file logrotate moves away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from edge.wiring.accesslog import BATCH_BYTES, MAX_BATCHES, AccessLog
from edge.wiring.devcert import ensure_dev_cert
from tests.support.h3client import H3Response, h3_client
from tests.support.nodes import free_port
from tests.wiring.test_shutdown import wait_port

REPO = Path(__file__).resolve().parents[2]

FIELDS = {
    "time", "client", "protocol", "method", "host", "target", "status", "bytes", "cache",
    "upstream_time", "total_time", "worker",
}  # fmt: skip


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "time": time.time(), "client": "127.0.0.1", "protocol": "HTTP/1.1", "method": "GET",
        "host": "cdn.test", "target": "/a.js", "status": 200, "bytes": 1024, "cache": "edge; hit",
        "upstream_time": None, "total_time": 0.0, "worker": None,
    }  # fmt: skip
    base.update(overrides)
    return base


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll a file-system state no event announces (lines a writer thread or process writes)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.01)


def lines_of(path: Path) -> list[dict[str, object]]:
    """The file's whole lines, parsed. A writer thread may be in the middle of a line while
    the test polls: what follows the last newline is left for the next poll, and a test that
    reads after the writer is closed checks :func:`ends_whole` too."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def ends_whole(path: Path) -> bool:
    data = path.read_bytes()
    return not data or data.endswith(b"\n")


# -- the writer on its own ---------------------------------------------------------------------------
def test_a_stalled_reader_never_blocks_the_loop_and_dropped_lines_are_counted() -> None:
    read_end, write_end = os.pipe()  # nobody reads: the pipe fills at 64 KiB, the writer thread blocks
    saved = os.dup(1)
    os.dup2(write_end, 1)
    try:
        log = AccessLog("-")

        async def flood() -> float:
            slowest = 0.0
            wide = record(target="/" + "x" * 600)
            for _ in range((MAX_BATCHES + 8) * BATCH_BYTES // 700):
                started = time.perf_counter()
                log(wide)
                slowest = max(slowest, time.perf_counter() - started)
            return slowest

        slowest = asyncio.run(flood())
        assert slowest < 0.05, f"a log call waited {slowest:.3f} s on a stalled destination"
        assert log.dropped > 0
        # What is still queued goes to /dev/null, not to the terminal once stdout is back.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        os.close(read_end)  # the blocked write fails (EPIPE); the rest drains to /dev/null
        log.close(timeout=5)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
        with contextlib.suppress(OSError):
            os.close(read_end)


def test_lines_are_whole_json_objects_and_reopen_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))

    async def write(n: int, start: int) -> None:
        for i in range(n):
            log(record(target=f"/{start + i}"))
        log.flush()

    asyncio.run(write(100, 0))
    wait_until(lambda: len(lines_of(path)) == 100, "the first 100 lines written")
    path.rename(tmp_path / "access.log.1")  # logrotate moves the file, then signals
    log.reopen()
    asyncio.run(write(50, 100))
    log.close()
    moved = lines_of(tmp_path / "access.log.1")
    fresh = lines_of(path)
    assert ends_whole(tmp_path / "access.log.1") and ends_whole(path)
    assert [r["target"] for r in moved] == [f"/{i}" for i in range(100)]
    assert [r["target"] for r in fresh] == [f"/{i}" for i in range(100, 150)]
    assert all(set(r) == FIELDS for r in moved + fresh)
    assert str(fresh[0]["time"]).endswith("Z") and "T" in str(fresh[0]["time"])


# -- a real node ----------------------------------------------------------------------------------------
def start_edge(origin: int, *args: str) -> tuple[subprocess.Popen[bytes], int, int]:
    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin}",
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", "--admin-token", "t",
         *args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_port(port, proc)
    return proc, port, admin


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(20)
    assert proc.stderr is not None
    assert code == 0, proc.stderr.read().decode()


def metrics(admin: int) -> str:
    return httpx.get(f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": "Bearer t"}).text


def test_every_front_logs_one_line_per_request_with_what_the_client_was_told(
    site: int, tmp_path: Path
) -> None:
    cert = ensure_dev_cert(tmp_path / "cert")
    log_path = tmp_path / "access.log"
    tls = free_port()
    proc, port, admin = start_edge(
        site, "--access-log", str(log_path), "--cert", str(cert.cert), "--key", str(cert.key),
        "--tls-listen", f"127.0.0.1:{tls}", "--quic-listen", f"127.0.0.1:{tls}",
    )  # fmt: skip
    try:
        wait_port(tls, proc)
        told: list[tuple[str, str, int, str, int]] = []
        with httpx.Client() as h1:
            for method in ("GET", "GET", "HEAD"):
                r = h1.request(method, f"http://127.0.0.1:{port}/app.js")
                told.append(
                    ("HTTP/1.1", method, r.status_code, r.headers["cache-status"], r.num_bytes_downloaded)
                )
            r = h1.get(f"http://127.0.0.1:{port}/" + "a" * 9000)
            assert r.status_code == 414
        with httpx.Client(http2=True, verify=str(cert.ca)) as h2:
            r = h2.get(f"https://localhost:{tls}/app.js")
            assert r.http_version == "HTTP/2"
            told.append(("HTTP/2", "GET", r.status_code, r.headers["cache-status"], r.num_bytes_downloaded))

        async def over_h3() -> H3Response:
            async with h3_client("127.0.0.1", tls, str(cert.ca)) as client:
                return await client.request("/app.js")

        resp = asyncio.run(over_h3())
        told.append(("HTTP/3", "GET", resp.status, resp.header("cache-status") or "", len(resp.body)))
        wait_until(lambda: len(lines_of(log_path)) >= 6, "six access lines", timeout=10)
        lines = lines_of(log_path)
        assert len(lines) == 6
        assert all(set(line) == FIELDS for line in lines)
        logged = [
            (line["protocol"], line["method"], line["status"], line["cache"], line["bytes"]) for line in lines
        ]
        for expected in told:
            assert expected in logged
        miss, hit = lines[0], lines[1]
        assert str(miss["cache"]).startswith("edge; fwd=uri-miss") and miss["upstream_time"] is not None
        assert str(hit["cache"]).startswith("edge; hit") and hit["upstream_time"] is None
        assert all(line["client"] == "127.0.0.1" for line in lines)
        refused = [line for line in lines if line["status"] == 414]
        assert len(refused) == 1 and refused[0]["cache"] is None and refused[0]["protocol"] == "HTTP/1.1"
        text = metrics(admin)
        assert 'edge_requests_total{cache="hit",protocol="h1",status="200"} 2.0' in text
        assert 'edge_requests_total{cache="uri-miss",protocol="h1",status="200"} 1.0' in text
        assert 'edge_requests_total{cache="none",protocol="h1",status="414"} 1.0' in text
        assert 'edge_requests_total{cache="uri-miss",protocol="h2",status="200"} 1.0' in text
        assert 'edge_requests_total{cache="uri-miss",protocol="h3",status="200"} 1.0' in text
        assert "edge_request_duration_seconds_count 6.0" in text
        assert "edge_upstream_duration_seconds_count 3.0" in text
    finally:
        stop(proc)


def test_access_log_off_writes_nothing_and_still_counts(site: int, tmp_path: Path) -> None:
    proc, port, admin = start_edge(site, "--access-log", "off", "--tls-listen", "", "--quic-listen", "")
    try:
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/app.js").status_code == 200
        assert 'edge_requests_total{cache="hit",protocol="h1",status="200"} 2.0' in metrics(admin)
    finally:
        stop(proc)
    assert not list(tmp_path.glob("*.log"))


def test_two_workers_write_whole_lines_to_one_file(site: int, tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    proc, port, _ = start_edge(
        site, "--workers", "2", "--access-log", str(log_path), "--tls-listen", "", "--quic-listen", ""
    )
    requests = 400
    try:

        async def load() -> None:
            limits = httpx.Limits(max_connections=16)
            async with httpx.AsyncClient(limits=limits) as client:
                for start in range(0, requests, 40):
                    batch = [
                        client.get(f"http://127.0.0.1:{port}/app.js?{i}") for i in range(start, start + 40)
                    ]
                    for r in await asyncio.gather(*batch):
                        assert r.status_code == 200

        asyncio.run(load())
        wait_until(
            lambda: len(log_path.read_bytes().splitlines()) >= requests, "every line written", timeout=10
        )
    finally:
        stop(proc)
    lines = lines_of(log_path)  # json.loads fails on a line two workers mixed
    client_lines = [line for line in lines if str(line["target"]).startswith("/app.js?")]
    assert sorted(int(str(line["target"]).split("?")[1]) for line in client_lines) == list(range(requests))
    assert {line["worker"] for line in client_lines} <= {0, 1}


def test_a_reopen_that_fails_keeps_the_log_writing_where_it_was(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "access.log"
    log = AccessLog(str(path))

    async def write(n: int, start: int) -> None:
        for i in range(n):
            log(record(target=f"/{start + i}"))
        log.flush()

    asyncio.run(write(10, 0))
    wait_until(lambda: len(lines_of(path)) == 10, "the first lines written")
    moved = tmp_path / "moved"
    logs.rename(moved)  # the directory is gone: the reopen cannot create the file
    log.reopen()
    asyncio.run(write(10, 10))
    log.close()
    assert log._thread.is_alive() is False  # it ended at close, not at the failed reopen
    assert [r["target"] for r in lines_of(moved / "access.log")] == [f"/{i}" for i in range(20)]
    assert log.dropped == 0
