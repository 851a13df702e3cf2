"""What every answered request leaves behind: the node's request counters and the access log.

The counters feed ``/metrics`` (requests by protocol, status and cache result, bytes,
total and upstream latency histograms, collapsed requests); the access log, when the
wiring turns it on, gets one record per request.

Guarantees:
- every request a client-facing front answers is counted once: fast hits by the front
  itself on the entry's memoised hit head (one integer add, no call, no clock read;
  :class:`FrontTally` sums the heads), everything
  the core answers by :func:`edge.core.sink.serve_guarded` through :class:`Recorder`,
  and refusals (400, 413, 414, 431, ...) by the front through :meth:`RequestLog.refused`;
- a fast hit is answered inside the callback that parsed it, so its duration is counted
  as 0 (the lowest latency bucket) and never read from the clock: the hit path pays one
  attribute add for the counters and one ``is not None`` test for the access log;
- the cache result is read from the ``Cache-Status`` member this node wrote (RFC 9211),
  so the log and the metrics say what the client was told;
- with the access log off (``access is None``) no record is built.
"""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from edge.http.fields import Headers
from edge.http.message import Request

__all__ = ["LATENCY_BUCKETS", "AccessRecord", "FrontTally", "Recorder", "RequestLog", "cache_result"]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Upper bounds (seconds) of the latency histograms; a last, unbounded bucket follows."""

AccessRecord = dict[str, Any]
"""One access-log record: time, client, protocol, method, host, target, status, bytes,
cache, upstream_time, total_time, worker."""

AccessWriter = Callable[[AccessRecord], None]

PROTOCOL_LABELS = {"1.0": "h1", "1.1": "h1", "2": "h2", "3": "h3"}
"""Request.http_version → the protocol label of the metrics."""

PROTOCOL_NAMES = {"h1": "HTTP/1.1", "h2": "HTTP/2", "h3": "HTTP/3"}
"""The metrics label → the protocol an access record names, for refusals (no Request)."""

LOGGED_TARGET = 2048
"""A refused request's target is logged up to this many bytes (a 414's is longer)."""


def cache_result(member: bytes | None) -> str:
    """The metrics label of a Cache-Status member: ``hit``, the ``fwd`` reason, or ``none``."""
    if not member:
        return "none"
    params = member.split(b";")[1:]
    for param in params:
        param = param.strip()
        if param == b"hit":
            return "hit"
        if param.startswith(b"fwd="):
            return param[4:].decode("ascii", "replace")
    return "none"


class Histogram:
    """Counts per bucket of :data:`LATENCY_BUCKETS` (not cumulative) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class HitCounter(Protocol):
    """What a front's memoised hit head counts (``edge.fronts.hit.HitHead``): one per stored
    entry and front, so a hit adds 1 to an object the front already holds."""

    hits: int
    """Hits served from it, HEAD included."""
    heads: int
    """Of those, hits that sent no body (HEAD, or an empty body)."""
    status: int
    length: int
    """The status and body length of the entry it belongs to."""
    cache_status: bytes
    """The Cache-Status member its head carries this second."""


class FrontTally:
    """Fast hits of one protocol front: the live hit heads' counts, plus those of heads gone.

    A hit head registers here when it is made and gives its counts back when it is freed
    (its entry evicted or replaced), so no hit is lost and the hit path adds one to an
    attribute of an object it holds anyway.
    """

    __slots__ = ("access", "gone", "gone_bytes", "live", "log", "protocol")

    def __init__(self, log: RequestLog, protocol: str) -> None:
        self.log = log
        self.protocol = protocol
        self.live: weakref.WeakSet[HitCounter] = weakref.WeakSet()
        self.gone: Counter[int] = Counter()
        """status → hits counted by heads no longer alive."""
        self.gone_bytes = 0
        self.access = log.access
        """The access-log writer, or None: the front tests this before calling :meth:`logged_hit`."""

    def register(self, counter: HitCounter) -> None:
        self.live.add(counter)

    def retire(self, counter: HitCounter) -> None:
        """Keep the counts of a hit head being freed."""
        if counter.hits:
            self.gone[counter.status] += counter.hits
            self.gone_bytes += (counter.hits - counter.heads) * counter.length

    def counts(self) -> tuple[Counter[int], int]:
        """(status → fast hits, body bytes they sent), over live and freed heads."""
        hits: Counter[int] = Counter(self.gone)
        sent = self.gone_bytes
        for counter in list(self.live):
            if counter.hits:
                hits[counter.status] += counter.hits
                sent += (counter.hits - counter.heads) * counter.length
        return hits, sent

    def logged_hit(self, req: Request, head: HitCounter) -> None:
        """Write the access record of a fast hit sent with ``head`` (only called while the
        access log is on)."""
        sent = 0 if req.method == b"HEAD" else head.length
        self.log.write(req, head.status, sent, head.cache_status, None, 0.0)


class Recorder:
    """A ResponseSink in front of the front's own: notes status, Cache-Status and bytes sent."""

    __slots__ = ("cache", "sent", "sink", "status")

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.status = 0
        self.cache: bytes | None = None
        self.sent = 0

    @property
    def started(self) -> bool:
        return bool(self.sink.started)

    @started.setter
    def started(self, value: bool) -> None:
        self.sink.started = value

    def interim(self, status: int, headers: Headers) -> None:
        self.sink.interim(status, headers)

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        self.status = status
        for name, value in headers:
            if name.lower() == b"cache-status":
                self.cache = value.rpartition(b",")[2].strip()  # ours is the last member
        self.sink.start(status, reason, headers, length)

    async def write(self, data: bytes | memoryview) -> None:
        self.sent += len(data)
        await self.sink.write(data)

    @property
    def can_send_file(self) -> bool:
        return bool(getattr(self.sink, "can_send_file", False))

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        self.sent += count
        await self.sink.send_file(fd, offset, count)

    def end(self) -> None:
        self.sink.end()

    def abort(self) -> None:
        self.sink.abort()


class RequestLog:
    """One worker's request counters, and its access-log writer when the log is on."""

    def __init__(self) -> None:
        self.worker: int | None = None
        """The worker's index in access records; None in a node of one worker."""
        self.access: AccessWriter | None = None
        self.fronts: dict[str, FrontTally] = {}
        self.counts: Counter[tuple[str, int, str]] = Counter()
        """(protocol, status, cache result) → requests the core or a refusal answered."""
        self.sent: Counter[str] = Counter()
        """protocol → body bytes sent by the core and refusals."""
        self.duration = Histogram()
        self.upstream = Histogram()
        self.collapsed = 0

    def set_access(self, writer: AccessWriter | None, worker: int | None = None) -> None:
        """Turn the access log on (a writer) or off (None), for the fronts already made too."""
        self.access = writer
        self.worker = worker
        for tally in self.fronts.values():
            tally.access = writer

    def front(self, protocol: str) -> FrontTally:
        """The fast-hit tally of ``protocol`` (one per protocol, shared by its connections)."""
        tally = self.fronts.get(protocol)
        if tally is None:
            tally = self.fronts[protocol] = FrontTally(self, protocol)
        return tally

    def done(self, req: Request, recorder: Recorder, started: float) -> None:
        """Count a request the core answered (called by ``serve_guarded``)."""
        total = time.perf_counter() - started
        protocol = PROTOCOL_LABELS.get(req.http_version, "h1")
        member = recorder.cache
        self.counts[protocol, recorder.status, cache_result(member)] += 1
        self.sent[protocol] += recorder.sent
        self.duration.observe(total)
        upstream: float | None = getattr(req, "upstream_time", None)
        if upstream is not None:
            self.upstream.observe(upstream)
        if member is not None and member.endswith(b"collapsed"):
            self.collapsed += 1
        if self.access is not None:
            self.write(req, recorder.status, recorder.sent, member, upstream, total)

    def tunnelled(self, req: Request, status: int, sent: int, started: float) -> None:
        """Count (and log) a WebSocket handshake once its tunnel ended (``sent``: bytes to the
        client, the tunnel's included)."""
        total = time.perf_counter() - started
        protocol = PROTOCOL_LABELS.get(req.http_version, "h1")
        self.counts[protocol, status, "none"] += 1
        self.sent[protocol] += sent
        self.duration.observe(total)
        upstream: float | None = getattr(req, "upstream_time", None)
        if upstream is not None:
            self.upstream.observe(upstream)
        if self.access is not None:
            self.write(req, status, sent, None, upstream, total)

    def refused(
        self,
        protocol: str,
        client: str,
        method: bytes | None,
        target: bytes,
        status: int,
        sent: int,
        host: bytes | None = None,
    ) -> None:
        """Count (and log) a request a front refused before the core saw it."""
        self.counts[protocol, status, "none"] += 1
        self.sent[protocol] += sent
        self.duration.observe(0.0)
        if self.access is not None:
            self.access(
                {
                    "time": time.time(),
                    "client": client,
                    "protocol": PROTOCOL_NAMES.get(protocol, protocol),
                    "method": (method or b"").decode("latin-1"),
                    "host": (host or b"")[:LOGGED_TARGET].decode("latin-1"),
                    "target": target[:LOGGED_TARGET].decode("latin-1"),
                    "status": status,
                    "bytes": sent,
                    "cache": None,
                    "upstream_time": None,
                    "total_time": 0.0,
                    "worker": self.worker,
                }
            )

    def write(
        self, req: Request, status: int, sent: int, member: bytes | None, upstream: float | None, total: float
    ) -> None:
        """Hand one access record to the writer."""
        assert self.access is not None
        self.access(
            {
                "time": time.time(),
                "client": req.client,
                "protocol": "HTTP/" + req.http_version,
                "method": req.method.decode("latin-1"),
                "host": req.host.decode("latin-1"),
                "target": req.target.decode("latin-1"),
                "status": status,
                "bytes": sent,
                "cache": member.decode("latin-1") if member is not None else None,
                "upstream_time": round(upstream, 6) if upstream is not None else None,
                "total_time": round(total, 6),
                "worker": self.worker,
            }
        )

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data (for /stats and /metrics), fast hits folded in."""
        counts: Counter[tuple[str, int, str]] = Counter(self.counts)
        sent: Counter[str] = Counter(self.sent)
        duration = list(self.duration.counts)
        for protocol, tally in self.fronts.items():
            hits, hit_bytes = tally.counts()
            for status, n in hits.items():
                counts[protocol, status, "hit"] += n
                duration[0] += n
            sent[protocol] += hit_bytes
        return {
            "requests": [[p, s, c, n] for (p, s, c), n in sorted(counts.items())],
            "response_bytes": dict(sent),
            "duration": {"counts": duration, "sum": self.duration.total},
            "upstream_duration": {"counts": list(self.upstream.counts), "sum": self.upstream.total},
            "collapsed": self.collapsed,
        }
