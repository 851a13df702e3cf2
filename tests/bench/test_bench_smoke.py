"""The benchmark harness without nginx, Varnish or Caddy: parsers, CPU accounting, table, h3load.

The h3load client runs against a minimal aioquic HTTP/3 responder started here
on loopback, bounded by count and by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from benchmarks import h3load
from benchmarks.run import (
    EdgeCaps,
    aggregate,
    format_table,
    install_hint,
    latency_summary,
    make_js,
    make_site,
    parse_h2load,
    parse_h2load_log,
    parse_proc_stat,
    parse_wrk,
    process_tree,
    reference_target,
    tree_cpu_seconds,
    tree_rss_bytes,
)
from benchmarks.targets import make_dev_cert, render_caddyfile, render_nginx, render_vcl

WRK_OUT = """Running 2s test @ http://127.0.0.1:8080/1k.bin
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.16ms  150.00us   3.00ms   90.00%
    Req/Sec    52.00k     1.00k   54.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    1.30ms
     99%    1.93ms
  104000 requests in 2.00s, 120.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  52000.00
Transfer/sec:     60.00MB
CDF 1 400
CDF 50 850
CDF 99 1930
"""

H2LOAD_OUT = """starting benchmark...
spawning thread #0: 8 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for each client.
Application protocol: h2c
progress: 10% of clients started
finished in 2.00s, 21616.50 req/s, 21.50MB/s
requests: 43233 total, 43297 started, 43233 done, 43230 succeeded, 3 failed, 0 errored, 0 timeout
status codes: 43230 2xx, 0 3xx, 2 4xx, 1 5xx
traffic: 42.91MB (44996118) total, 422.52KB (432330) headers (space savings 91.38%), 42.22MB (44270592) data
"""


# --------------------------------------------------------------------------- parsers


def test_parse_wrk_reads_rate_percentiles_errors_and_cdf() -> None:
    res = parse_wrk(WRK_OUT)
    assert res["requests"] == 104000
    assert res["rps"] == 52000.0
    assert res["elapsed_s"] == pytest.approx(2.0)
    assert res["p50_ms"] == pytest.approx(0.85)
    assert res["p99_ms"] == pytest.approx(1.93)
    assert res["non2xx"] == 3
    assert res["socket_errors"] == 3
    assert res["cdf"] == [[1.0, 0.4], [50.0, 0.85], [99.0, 1.93]]


def test_parse_wrk_without_errors_and_garbage() -> None:
    clean = "\n".join(line for line in WRK_OUT.splitlines() if "errors" not in line and "Non-2xx" not in line)
    res = parse_wrk(clean)
    assert res["non2xx"] == 0 and res["socket_errors"] == 0
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk("wrk: connection refused")


def test_parse_h2load_counts_failures_and_protocol() -> None:
    res = parse_h2load(H2LOAD_OUT)
    assert res["requests"] == 43230
    assert res["rps"] == 21616.5
    assert res["failed"] == 3
    assert res["non2xx"] == 3
    assert res["alpn"] == "h2c"
    with pytest.raises(ValueError):
        parse_h2load("no h2 here")


def test_h2load_log_latencies_keep_only_2xx(tmp_path: Path) -> None:
    log = tmp_path / "h2load.log"
    log.write_text("1700000000000000\t200\t1500\n1700000000000100\t200\t500\n1700000000000200\t503\t90\n")
    lat = parse_h2load_log(log)
    assert sorted(lat) == [500, 1500]
    summary = latency_summary(lat)
    assert summary["p50_ms"] == 0.5 and summary["p99_ms"] == 1.5
    assert summary["cdf"][-1] == [99.9, 1.5]
    assert latency_summary([]) == {"p50_ms": None, "p99_ms": None, "cdf": []}


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert h3load.percentile(values, 50) == 50
    assert h3load.percentile(values, 99) == 99
    assert h3load.percentile(values, 100) == 100
    assert h3load.percentile([7], 1) == 7
    assert h3load.percentile([], 50) == 0.0


# --------------------------------------------------------------------------- CPU and memory accounting


def test_parse_proc_stat_survives_spaces_and_parens_in_the_name() -> None:
    fields = " ".join(str(i) for i in range(4, 53))  # fields 4.. as their own numbers
    line = f"4242 (we(ird) name) S {fields}"
    ppid, ticks = parse_proc_stat(line)
    assert ppid == 4
    assert ticks == 14 + 15  # utime is field 14, stime field 15


def test_tree_cpu_counts_a_busy_child() -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)\n"
    before = tree_cpu_seconds(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_seconds(child.pid) < 0.35 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds(child.pid) >= 0.35
        assert child.pid in process_tree(os.getpid())
        assert tree_cpu_seconds(os.getpid()) - before >= 0.35  # the parent's tree includes the child
        assert tree_rss_bytes(child.pid) > 1_000_000
    finally:
        child.kill()
        child.wait()


# --------------------------------------------------------------------------- aggregation and table


def _run(rnd: int, target: str, rps: float, proto: str = "h1", group: str = "1core") -> dict[str, Any]:
    return {
        "round": rnd,
        "group": group,
        "proto": proto,
        "obj": "1k",
        "target": target,
        "rps": rps,
        "mib_s": rps / 1024,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "cpu_us_per_req": 1e6 / rps,
        "client_cores": 0.7,
        "other_cores": 0.01,
        "errors": 0,
    }


def test_ratio_is_the_median_of_same_round_ratios() -> None:
    runs = [
        _run(1, "nginx", 100),
        _run(1, "edge", 150),
        _run(2, "nginx", 50),
        _run(2, "edge", 60),
        _run(3, "nginx", 80),
        _run(3, "edge", 100),
    ]
    rows = {r.target: r for r in aggregate(runs)}
    # per-round ratios 1.5, 1.2, 1.25 → median 1.25 (not 100/80 = median edge / median nginx)
    assert rows["edge"].ratio == pytest.approx(1.25)
    assert rows["edge"].rps == 100
    assert rows["nginx"].ratio == 1.0
    assert rows["edge"].rounds == 3


def test_references_per_protocol_and_mode() -> None:
    assert reference_target("1core", "h1") == "nginx"
    assert reference_target("2core", "h1") == "nginx-w2"
    assert reference_target("1core", "h3") == "caddy"
    runs = [
        _run(1, "caddy", 100, "h3"),
        _run(1, "edge", 90, "h3"),
        _run(1, "nginx-w2", 10, group="2core"),
        _run(1, "edge-w2", 20, group="2core"),
    ]
    rows = {(r.proto, r.target): r for r in aggregate(runs)}
    assert rows[("h3", "edge")].ratio == pytest.approx(0.9) and rows[("h3", "edge")].ref == "caddy"
    assert rows[("h1", "edge-w2")].ratio == pytest.approx(2.0)


def test_table_has_a_row_per_target_and_marks_errors_and_missing_refs() -> None:
    runs = [_run(1, "nginx", 100), _run(1, "edge", 150), _run(1, "varnish", 50, proto="h2c")]
    runs[1]["errors"] = 4
    table = format_table(aggregate(runs))
    lines = table.splitlines()
    assert lines[0].startswith("| mode | proto | object | target | req/s | MiB/s | p50 ms | p99 ms |")
    assert "other cores" in lines[0]
    assert len(lines) == 2 + 3
    edge = next(line for line in lines if "| edge |" in line)
    assert "1.50x nginx" in edge and "⚠4 err" in edge and "| 6,667" not in edge
    varnish = next(line for line in lines if "| varnish |" in line)
    assert varnish.rstrip().endswith("| - |")  # no nginx h2c run in this round → no ratio


# --------------------------------------------------------------------------- setup pieces


def test_edge_caps_from_help() -> None:
    old = "usage: edge serve [--listen LISTEN] [--workers WORKERS]\n  --alt-svc ALT_SVC  ..."
    assert EdgeCaps.from_help(old) == EdgeCaps()
    new = (
        old
        + "\n  --tls-listen TLS_LISTEN\n  --quic-listen QUIC_LISTEN\n  --cert CERT\n  --key KEY\n  --quic-backend B"
    )
    caps = EdgeCaps.from_help(new)
    assert caps.tls_flag == "--tls-listen" and caps.quic_flag == "--quic-listen"
    assert caps.cert_flags == ("--cert", "--key") and caps.quic_backend_flag == "--quic-backend"
    no_cert = old + "\n  --quic-listen QUIC_LISTEN"
    assert EdgeCaps.from_help(no_cert).quic_flag is None  # cannot start without a certificate


def test_install_hint_names_debian_packages() -> None:
    assert install_hint(["h2load", "varnishd", "wrk"]) == (
        "apt-get update && apt-get install -y nghttp2-client varnish wrk"
    )


def test_site_objects_and_precompressed_js(tmp_path: Path) -> None:
    sizes = make_site(tmp_path)
    assert sizes["1k.bin"] == 1024 and sizes["4m.bin"] == 4 * 1024 * 1024
    assert sizes["app.js"] == 200 * 1024
    assert sizes["app.js.br"] < sizes["app.js.gz"] < sizes["app.js"] // 3
    assert sizes["br-size.bin"] == sizes["app.js.br"]  # the identity twin of the br hit
    assert make_js(5000) == make_js(5000) and len(make_js(5000)) == 5000


def test_peer_configs_render(tmp_path: Path) -> None:
    conf = render_nginx(
        tmp_path,
        origin_port=1,
        h1_port=2,
        h2c_port=3,
        tls_port=4,
        cert=tmp_path / "c",
        key=tmp_path / "k",
        workers=2,
        as_root=True,
    )
    assert "worker_processes 2;" in conf and "user root;" in conf and "listen 127.0.0.1:3 http2" in conf
    assert "keepalive_requests" in conf and "{" in conf and "{{" not in conf
    assert '.port = "9";' in render_vcl(origin_port=9)
    caddy = render_caddyfile(site=tmp_path, state=tmp_path / "s", http_port=5, https_port=6)
    assert (
        "http://127.0.0.1:5" in caddy and "https://127.0.0.1:6" in caddy and "precompressed br gzip" in caddy
    )


# --------------------------------------------------------------------------- h3load against a real QUIC server

BODY = os.urandom(3000)


def _udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _h3_server(tmp_path: Path) -> AsyncIterator[str]:
    """A minimal aioquic HTTP/3 responder on loopback answering every GET with BODY."""
    pytest.importorskip("aioquic")
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration

    class Responder(QuicConnectionProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._h3 = H3Connection(self._quic)

        def quic_event_received(self, event: Any) -> None:
            for ev in self._h3.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    if (b":path", b"/silent") in ev.headers:
                        continue  # never answered: the client's timeout must fire
                    if (b":path", b"/nostatus") in ev.headers:
                        self._h3.send_headers(ev.stream_id, [(b"x-cache", b"HIT")], end_stream=True)
                        continue
                    fields = [
                        (b":status", b"200"),
                        (b"content-length", str(len(BODY)).encode()),
                        (b"x-cache", b"HIT"),
                    ]
                    self._h3.send_headers(ev.stream_id, fields)
                    self._h3.send_data(ev.stream_id, BODY, end_stream=True)

    cert = make_dev_cert(tmp_path / "tls")
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(cert.cert, cert.key)
    port = _udp_port()
    server = await serve("127.0.0.1", port, configuration=config, create_protocol=Responder)
    try:
        yield f"https://127.0.0.1:{port}/obj.bin"
    finally:
        server.close()


@pytest_asyncio.fixture
async def h3_url(tmp_path: Path) -> AsyncIterator[str]:
    async with _h3_server(tmp_path) as url:
        yield url


def _backends() -> list[str]:
    out = []
    for name in ("aioquic", "qh3"):
        try:
            __import__(name)
            out.append(name)
        except ImportError:
            pass
    return out or ["aioquic"]


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", _backends())
async def test_h3load_stops_at_the_request_count(h3_url: str, backend: str) -> None:
    res = await h3load.run_load(
        h3_url, connections=2, streams=4, duration=20.0, max_requests=150, backend=backend, timeout=5.0
    )
    assert res.requests == 150 and res.errors == 0
    assert res.statuses == {200: 150}
    assert res.body_bytes == 150 * len(BODY)
    assert res.elapsed_s < 20.0 and res.cpu_s > 0
    summary = res.as_dict()
    assert summary["rps"] > 0 and summary["p50_ms"] <= summary["p99_ms"]
    assert [p for p, _ in summary["cdf"]] == list(h3load.CDF_POINTS)


@pytest.mark.asyncio
async def test_h3load_stops_at_the_deadline(h3_url: str) -> None:
    t0 = time.monotonic()
    res = await h3load.run_load(
        h3_url, connections=1, streams=2, duration=0.4, max_requests=10**9, backend="aioquic", timeout=5.0
    )
    assert time.monotonic() - t0 < 10
    assert res.requests > 0 and res.elapsed_s < 3.0


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", _backends())
async def test_h3load_counts_unanswered_requests_as_errors_after_the_timeout(
    h3_url: str, backend: str
) -> None:
    silent = h3_url.rsplit("/", 1)[0] + "/silent"
    t0 = time.monotonic()
    res = await h3load.run_load(
        silent, connections=1, streams=3, duration=0.2, max_requests=100, backend=backend, timeout=0.6
    )
    assert (res.requests, res.errors) == (0, 3)
    assert 0.6 <= time.monotonic() - t0 < 5


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", _backends())
async def test_h3load_fails_a_response_without_status_fast_and_restores_validation(
    h3_url: str, backend: str
) -> None:
    module = __import__(f"{backend}.h3.connection", fromlist=["validate_response_headers"])
    original = module.validate_response_headers
    bad = h3_url.rsplit("/", 1)[0] + "/nostatus"
    t0 = time.monotonic()
    res = await h3load.run_load(
        bad, connections=1, streams=2, duration=0.2, max_requests=2, backend=backend, timeout=30.0
    )
    assert res.requests == 0 and res.errors == 2
    assert time.monotonic() - t0 < 10  # the connection closed; nobody waited for the timeout
    assert module.validate_response_headers is original  # --check / fetch_once validate fully


@pytest.mark.asyncio
async def test_fetch_once_returns_fields_and_body(h3_url: str) -> None:
    status, fields, body = await h3load.fetch_once(h3_url, [("accept-encoding", "br")], backend="aioquic")
    assert status == 200 and fields["x-cache"] == "HIT" and body == BODY


def test_merge_adds_counts_and_takes_the_longest_elapsed() -> None:
    a = h3load.LoadSummary(10, 1, {200: 10}, 100, 2.0, 1.5, 1, [1, 5])
    b = h3load.LoadSummary(20, 0, {200: 19, 404: 1}, 200, 2.5, 2.0, 1, [2, 3])
    m = h3load.merge([a, b])
    assert (m.requests, m.errors, m.body_bytes, m.elapsed_s, m.cpu_s, m.processes) == (
        30,
        1,
        300,
        2.5,
        3.5,
        2,
    )
    assert m.statuses == {200: 29, 404: 1} and m.latencies_us == [1, 2, 3, 5]
    assert m.as_dict()["client_bound"] is False  # 3.5 s CPU over 2.5 s with 2 processes


def test_h3load_cli_runs_two_processes(h3_url_thread: str) -> None:
    """The CLI's --processes path: children start together and their figures merge."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.h3load",
            h3_url_thread,
            "-P",
            "2",
            "-c",
            "1",
            "-m",
            "2",
            "-n",
            "60",
            "-d",
            "10",
            "--backend",
            "aioquic",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["processes"] == 2 and summary["requests"] == 60 and summary["errors"] == 0


@pytest.fixture
def h3_url_thread(tmp_path: Path) -> Iterator[str]:
    """The same responder on an event loop in a thread, for a test that blocks on a subprocess."""
    pytest.importorskip("aioquic")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = _h3_server(tmp_path)
    try:
        yield asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(timeout=10)
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
