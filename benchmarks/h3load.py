"""A bounded HTTP/3 load client on aioquic's (or qh3's) H3 API.

Debian's h2load has no QUIC, so the benchmark brings its own client. It opens
``-c`` QUIC connections, runs ``-m`` concurrent request loops (streams) on
each, and stops when ``--duration`` seconds have passed or ``--requests``
requests have been started, whichever comes first; requests still in flight
then get ``--timeout`` seconds to finish. ``--processes N`` runs N copies of
itself in parallel (each with its share of the count) and merges the figures.

It reports req/s, MiB/s of response bodies, latency percentiles and its own
CPU seconds (``resource.getrusage``): when client CPU ≈ wall time x processes,
the figure is bound by this client, not by the server. Usage::

    python -m benchmarks.h3load https://127.0.0.1:8443/1k.bin -c 4 -m 16 -d 5
    python -m benchmarks.h3load URL --check     # one request, print status and headers

All traffic goes to the host in the URL; the benchmark only ever passes loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import resource
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LoadSummary", "fetch_once", "merge", "percentile", "run_load", "summarize"]

H3_REQUEST_CANCELLED = 0x10C
"""RFC 9114 §8.1: the client no longer wants the response (sent with STOP_SENDING)."""

#: Percentiles reported in ``cdf`` (the latency CDF plots use them).
CDF_POINTS = (1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 90, 95, 99, 99.9)


def default_backend() -> str:
    """qh3 when installed (a Rust core: the client is less likely to be the limit), else aioquic."""
    try:
        importlib.import_module("qh3")
    except ImportError:
        return "aioquic"
    return "qh3"


def _backend(name: str) -> SimpleNamespace:
    """The pieces of the QUIC library ``name`` (``aioquic`` or ``qh3``; same API)."""
    if name not in ("aioquic", "qh3"):
        raise ValueError(f"unknown QUIC backend {name!r}")
    client = importlib.import_module(f"{name}.asyncio.client")
    protocol = importlib.import_module(f"{name}.asyncio.protocol")
    h3 = importlib.import_module(f"{name}.h3.connection")
    h3events = importlib.import_module(f"{name}.h3.events")
    qconfig = importlib.import_module(f"{name}.quic.configuration")
    qevents = importlib.import_module(f"{name}.quic.events")
    return SimpleNamespace(
        connect=client.connect,
        QuicConnectionProtocol=protocol.QuicConnectionProtocol,
        QuicConfiguration=qconfig.QuicConfiguration,
        H3Connection=h3.H3Connection,
        H3_ALPN=h3.H3_ALPN,
        HeadersReceived=h3events.HeadersReceived,
        DataReceived=h3events.DataReceived,
        ConnectionTerminated=qevents.ConnectionTerminated,
        StreamReset=qevents.StreamReset,
        StreamDataReceived=qevents.StreamDataReceived,
        DATA_FRAME=int(h3.FrameType.DATA),
        # qh3's request-stream parser hands a fragment of a DATA frame through unchanged
        # when nothing is buffered; the client counts such fragments itself (see below).
        count_data_fragments=name == "qh3",
    )


@contextlib.contextmanager
def _status_only(backend: str) -> Iterator[None]:
    """While a load run is on qh3, read only ``:status`` from response fields.

    qh3 checks every byte of every response field name in Python; that was a tenth of
    the client's CPU at 1 KiB, and more for servers that send more fields, so it
    skewed a client-bound comparison. A load client measures, it does not audit:
    ``--check`` and ``fetch_once`` (the benchmark's warm-up check) keep qh3's full
    validation, since the swap lasts only as long as :func:`run_load`.
    """
    module = importlib.import_module(f"{backend}.h3.connection") if backend == "qh3" else None
    original = getattr(module, "validate_response_headers", None)
    if module is None or original is None:
        yield
        return
    message_error = module.MessageError

    def status_only(headers: list[tuple[bytes, bytes]]) -> int:
        for name, value in headers:
            if name == b":status":
                if len(value) == 3 and value.isdigit():
                    return int(value)
                break
        # A protocol error: qh3 closes the connection and the requests on it fail.
        raise message_error("response without a valid :status")

    setattr(module, "validate_response_headers", status_only)  # noqa: B010 - the module is untyped
    try:
        yield
    finally:
        setattr(module, "validate_response_headers", original)  # noqa: B010


@dataclass(slots=True)
class _Pending:
    """One request in flight on a stream."""

    future: asyncio.Future[_Pending]
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    nbytes: int = 0
    keep_body: bool = False
    body: bytearray = field(default_factory=bytearray)
    began: float = 0.0


def _client_class(b: SimpleNamespace) -> type:
    """An H3 client protocol class on backend ``b``; request() returns a finished _Pending."""

    fast_data = b.count_data_fragments
    data_event = b.StreamDataReceived
    data_frame = b.DATA_FRAME

    class H3Client(b.QuicConnectionProtocol):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._h3 = b.H3Connection(self._quic)
            self._pending: dict[int, _Pending] = {}
            self.terminated = False

        def request(
            self, headers: list[tuple[bytes, bytes]], keep_body: bool = False
        ) -> asyncio.Future[_Pending]:
            stream_id = self._quic.get_next_available_stream_id()
            self._h3.send_headers(stream_id, headers, end_stream=True)
            pending = _Pending(self._loop.create_future(), keep_body=keep_body, began=self._loop.time())
            self._pending[stream_id] = pending
            # Requests started in the same loop iteration leave in one batch of datagrams,
            # as h2load writes several requests at once; one sendmsg per request made the
            # client, not the server, the limit at 1 KiB.
            self._transmit_soon()
            return pending.future

        def expire(self, older_than: float) -> None:
            """Fail requests started before ``older_than`` (loop time): the per-request timeout."""
            expired = [sid for sid, pending in self._pending.items() if pending.began < older_than]
            for stream_id in expired:
                pending = self._pending.pop(stream_id)
                if not pending.future.done():
                    pending.future.set_exception(TimeoutError("no response in time"))
                with contextlib.suppress(Exception):  # tell the server to stop sending it
                    self._quic.stop_stream(stream_id, H3_REQUEST_CANCELLED)
            if expired:
                self._transmit_soon()

        def quic_event_received(self, event: Any) -> None:
            if fast_data and type(event) is data_event and not event.end_stream:
                # Most events of a large body are a fragment inside one DATA frame. Count it
                # here and advance the library's frame state exactly as its own fast path
                # does, without building an H3 event: the client's Python work per packet is
                # what bounds it on one core (measured with py-spy).
                stream = self._h3._stream.get(event.stream_id)
                if (
                    stream is not None
                    and stream.frame_type == data_frame
                    and stream.frame_size is not None
                    and len(event.data) < stream.frame_size
                    and not stream.buffer
                    and not stream.blocked
                ):
                    waiter = self._pending.get(event.stream_id)
                    if waiter is not None and not waiter.keep_body:
                        stream.frame_size -= len(event.data)
                        waiter.nbytes += len(event.data)
                        return
            if isinstance(event, b.ConnectionTerminated):
                self.terminated = True
                for pending in self._pending.values():
                    if not pending.future.done():
                        pending.future.set_exception(
                            ConnectionError(f"connection closed: {event.reason_phrase}")
                        )
                self._pending.clear()
                return
            if isinstance(event, b.StreamReset):
                reset = self._pending.pop(event.stream_id, None)
                if reset is not None and not reset.future.done():
                    reset.future.set_exception(ConnectionError(f"stream reset ({event.error_code})"))
                return
            for ev in self._h3.handle_event(event):
                waiter = self._pending.get(getattr(ev, "stream_id", -1))
                if waiter is None:
                    continue
                if isinstance(ev, b.HeadersReceived):
                    for name, value in ev.headers:
                        if name == b":status":
                            waiter.status = int(value)
                    waiter.headers.extend(ev.headers)
                elif isinstance(ev, b.DataReceived):
                    waiter.nbytes += len(ev.data)
                    if waiter.keep_body:
                        waiter.body += ev.data
                if ev.stream_ended:
                    del self._pending[ev.stream_id]
                    if not waiter.future.done():
                        waiter.future.set_result(waiter)

    return H3Client


def _configuration(b: SimpleNamespace, server_name: str, cafile: str | None) -> Any:
    config = b.QuicConfiguration(is_client=True, alpn_protocols=b.H3_ALPN)
    config.server_name = server_name
    # Receive windows large enough that a 4 MiB body is never window-bound.
    config.max_data = 64 * 1024 * 1024
    config.max_stream_data = 16 * 1024 * 1024
    if cafile:
        config.load_verify_locations(cafile)
    else:
        config.verify_mode = ssl.CERT_NONE
    return config


def _request_headers(
    authority: str, path: str, extra: Sequence[tuple[str, str]]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
        (b"user-agent", b"h3load"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in extra]
    return headers


@dataclass(slots=True)
class LoadSummary:
    """What one load run measured (one process, or several merged)."""

    requests: int
    """Requests that completed with a response (any status)."""
    errors: int
    """Requests that failed: reset, connection closed, or past the timeout."""
    statuses: dict[int, int]
    """Completed requests by status code."""
    body_bytes: int
    """Response body bytes received (after any Content-Encoding, i.e. as sent)."""
    elapsed_s: float
    """Wall time from the first request to the last completion (longest process)."""
    cpu_s: float
    """This client's user + system CPU seconds over the run (all processes)."""
    processes: int
    """Client processes that took part."""
    latencies_us: list[int] = field(default_factory=list)
    """Per-request latency in microseconds, sorted."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary with rates and percentiles (latencies left out)."""
        elapsed = max(self.elapsed_s, 1e-9)
        lat = self.latencies_us
        return {
            "requests": self.requests,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "body_bytes": self.body_bytes,
            "elapsed_s": round(self.elapsed_s, 4),
            "rps": self.requests / elapsed,
            "mib_per_s": self.body_bytes / elapsed / 2**20,
            "p50_ms": percentile(lat, 50) / 1000,
            "p90_ms": percentile(lat, 90) / 1000,
            "p99_ms": percentile(lat, 99) / 1000,
            "max_ms": (lat[-1] / 1000) if lat else 0.0,
            "cpu_s": round(self.cpu_s, 4),
            "cpu_per_wall": self.cpu_s / elapsed,
            "processes": self.processes,
            "client_bound": self.cpu_s / elapsed >= 0.9 * self.processes,
            "cdf": [[p, percentile(lat, p) / 1000] for p in CDF_POINTS],
        }


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-pct * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def merge(parts: Sequence[LoadSummary]) -> LoadSummary:
    """Combine the summaries of processes that ran side by side."""
    statuses: dict[int, int] = {}
    for part in parts:
        for code, n in part.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    return LoadSummary(
        requests=sum(p.requests for p in parts),
        errors=sum(p.errors for p in parts),
        statuses=statuses,
        body_bytes=sum(p.body_bytes for p in parts),
        elapsed_s=max((p.elapsed_s for p in parts), default=0.0),
        cpu_s=sum(p.cpu_s for p in parts),
        processes=sum(p.processes for p in parts),
        latencies_us=sorted(x for p in parts for x in p.latencies_us),
    )


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run_load(
    url: str,
    *,
    connections: int = 4,
    streams: int = 16,
    duration: float = 5.0,
    max_requests: int = 1_000_000,
    headers: Sequence[tuple[str, str]] = (),
    backend: str | None = None,
    timeout: float = 10.0,
    cafile: str | None = None,
    start_at: float | None = None,
) -> LoadSummary:
    """Run bounded load against ``url`` in this process and summarise it.

    Stops starting requests after ``duration`` seconds or ``max_requests``
    requests; ``start_at`` (a ``time.time()`` value) lets several processes
    begin together once their handshakes are done.
    """
    name = backend or default_backend()
    with _status_only(name):
        return await _run_load(
            url,
            connections=connections,
            streams=streams,
            duration=duration,
            max_requests=max_requests,
            headers=headers,
            backend=name,
            timeout=timeout,
            cafile=cafile,
            start_at=start_at,
        )


async def _run_load(
    url: str,
    *,
    connections: int,
    streams: int,
    duration: float,
    max_requests: int,
    headers: Sequence[tuple[str, str]],
    backend: str,
    timeout: float,
    cafile: str | None,
    start_at: float | None,
) -> LoadSummary:
    b = _backend(backend)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    req_headers = _request_headers(parts.netloc, path, headers)
    config = _configuration(b, host, cafile)
    klass = _client_class(b)
    statuses: dict[int, int] = {}
    latencies: list[int] = []
    counters = {"started": 0, "errors": 0, "bytes": 0}

    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(connections):
            cm = b.connect(host, port, configuration=config, create_protocol=klass)
            clients.append(await asyncio.wait_for(stack.enter_async_context(cm), timeout))
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        deadline = t0 + duration
        last_done = t0

        async def watchdog() -> None:
            # One timer for every request in flight instead of a wait_for() per request.
            loop_time = asyncio.get_running_loop().time
            while True:
                await asyncio.sleep(min(timeout / 4, 0.5))
                for client in clients:
                    client.expire(loop_time() - timeout)

        async def loop(client: Any) -> None:
            nonlocal last_done
            perf = time.perf_counter
            while counters["started"] < max_requests and perf() < deadline and not client.terminated:
                counters["started"] += 1
                began = perf()
                try:
                    done = await client.request(req_headers)
                except Exception:  # reset, closed, timed out, or the library refused: one error
                    counters["errors"] += 1
                    await asyncio.sleep(0)  # a request refused at once must not starve the loop
                    continue
                last_done = perf()
                latencies.append(int((last_done - began) * 1e6))
                statuses[done.status] = statuses.get(done.status, 0) + 1
                counters["bytes"] += done.nbytes

        guard = asyncio.get_running_loop().create_task(watchdog())
        try:
            await asyncio.gather(*(loop(c) for c in clients for _ in range(streams)))
        finally:
            guard.cancel()
        cpu = _cpu_seconds() - cpu0
    latencies.sort()
    return LoadSummary(
        requests=len(latencies),
        errors=counters["errors"],
        statuses=statuses,
        body_bytes=counters["bytes"],
        elapsed_s=last_done - t0,
        cpu_s=cpu,
        processes=1,
        latencies_us=latencies,
    )


async def fetch_once(
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    backend: str | None = None,
    timeout: float = 10.0,
    cafile: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One GET over HTTP/3: status, response fields (lower-case names, last wins), body."""
    b = _backend(backend or default_backend())
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cm = b.connect(
        host, port, configuration=_configuration(b, host, cafile), create_protocol=_client_class(b)
    )
    async with contextlib.AsyncExitStack() as stack:
        client = await asyncio.wait_for(stack.enter_async_context(cm), timeout)
        done = await asyncio.wait_for(
            client.request(_request_headers(parts.netloc, path, headers), keep_body=True), timeout
        )
    fields = {k.decode().lower(): v.decode() for k, v in done.headers if not k.startswith(b":")}
    return done.status, fields, bytes(done.body)


def summarize(parts: Sequence[LoadSummary]) -> dict[str, Any]:
    """Merged summary of several processes, as a JSON-ready dict."""
    return merge(parts).as_dict()


def _run(coro: Any) -> Any:
    """Run on uvloop when installed: less event-loop overhead per datagram in the client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header must be 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _run_processes(args: argparse.Namespace) -> LoadSummary:
    """Run ``args.processes`` copies of this client, started together, and merge them."""
    share = max(1, args.requests // args.processes)
    start_at = time.time() + 2.0 + 0.1 * args.processes  # after every child's handshakes
    cmd_base = [
        sys.executable,
        "-m",
        "benchmarks.h3load",
        args.url,
        "-c",
        str(args.connections),
        "-m",
        str(args.streams),
        "-d",
        str(args.duration),
        "-n",
        str(share),
        "--timeout",
        str(args.timeout),
        "--backend",
        args.backend,
        "--raw",
        "--start-at",
        repr(start_at),
    ]
    for name, value in args.header:
        cmd_base += ["-H", f"{name}: {value}"]
    if args.cafile:
        cmd_base += ["--cafile", args.cafile]
    root = Path(__file__).resolve().parent.parent  # so ``-m benchmarks.h3load`` resolves from anywhere
    procs = [
        subprocess.Popen(cmd_base, stdout=subprocess.PIPE, text=True, cwd=root) for _ in range(args.processes)
    ]
    limit = args.duration + args.timeout + 30
    parts = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"h3load child exited {proc.returncode}")
        raw = json.loads(out)
        raw["statuses"] = {int(k): v for k, v in raw["statuses"].items()}
        parts.append(LoadSummary(**raw))
    return merge(parts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="https://HOST:PORT/path (loopback in the benchmark)")
    ap.add_argument("-c", "--connections", type=int, default=4)
    ap.add_argument("-m", "--streams", type=int, default=16, help="concurrent requests per connection")
    ap.add_argument("-d", "--duration", type=float, default=5.0, help="seconds of load (upper bound)")
    ap.add_argument("-n", "--requests", type=int, default=1_000_000, help="most requests to start (total)")
    ap.add_argument("-H", "--header", type=_parse_header, action="append", default=[])
    ap.add_argument("-P", "--processes", type=int, default=1)
    ap.add_argument("--backend", choices=["aioquic", "qh3"], default=default_backend())
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request and per handshake")
    ap.add_argument("--cafile", help="verify the server against this CA (default: no verification)")
    ap.add_argument("--check", action="store_true", help="one request; print status, fields, body length")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.check:
        status, fields, body = _run(
            fetch_once(args.url, args.header, backend=args.backend, timeout=args.timeout, cafile=args.cafile)
        )
        print(json.dumps({"status": status, "headers": fields, "body_length": len(body)}))
        return 0 if status else 1
    if args.processes > 1:
        result = _run_processes(args)
    else:
        result = _run(
            run_load(
                args.url,
                connections=args.connections,
                streams=args.streams,
                duration=args.duration,
                max_requests=args.requests,
                headers=args.header,
                backend=args.backend,
                timeout=args.timeout,
                cafile=args.cafile,
                start_at=args.start_at,
            )
        )
    if args.raw:
        raw = {k: getattr(result, k) for k in LoadSummary.__slots__}
        print(json.dumps(raw))
        return 0
    summary = result.as_dict()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['requests']} requests, {summary['errors']} errors in {summary['elapsed_s']:.2f}s "
            f"({result.processes} process(es), {args.connections} conn x {args.streams} streams each, "
            f"{args.backend})"
        )
        print(
            f"  {summary['rps']:.0f} req/s, {summary['mib_per_s']:.2f} MiB/s; latency p50 "
            f"{summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms; statuses {summary['statuses']}"
        )
        bound = " (client-bound)" if summary["client_bound"] else ""
        print(f"  client CPU {summary['cpu_s']:.2f} s = {summary['cpu_per_wall']:.2f} cores{bound}")
    return 0 if result.requests and not result.errors else 1


if __name__ == "__main__":
    sys.exit(main())
