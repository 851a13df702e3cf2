"""Soak: minutes of mixed HTTP/1.1, HTTP/2 and HTTP/3 traffic through one edge, every body checked.

    python -m benchmarks.soak --quick              # about 60 s
    python -m benchmarks.soak --duration 300       # five minutes
    python -m benchmarks.soak --duration 1800 --rate 0 --json out.json

Not part of CI. What it starts (real processes on 127.0.0.1, through ``benchmarks/fleet.py``):

- the project's origin on a generated directory of ``--objects`` files (default 200) of
  1 KiB .. 2 MiB, log-uniform, every tenth one above the node's ``slice_size`` (1 MiB) so
  it is cached as slices. About half are opaque ``.bin`` (SHAKE-256 of the path), the rest
  text (``.js``, ``.css``, ``.json``, ``.txt``, ``.svg``: compressible, so the edge makes
  br/zstd/gzip siblings), and a quarter of those also have a precompressed ``.gz`` sibling
  at the origin (``Vary: Accept-Encoding`` from upstream). Content is deterministic from
  the path, so the sha256 of every object and of every byte range is known here;
- one edge with a cache far smaller than the objects (``--cache-size``, default 32MiB,
  against ≈ 50 MiB of objects) so entries are evicted all the time, its cleartext
  HTTP/1.1 port, the TLS front (HTTP/2) and HTTP/3 (QUIC) with a throw-away dev CA.

Then, for ``--duration`` seconds, at once: ``--concurrency`` request loops per protocol on
HTTP/1.1 (httpx, a pool of keep-alive connections, 2 % of requests with
``Connection: close``), HTTP/2 (httpx ``http2=True`` over TLS, two connections, each
replaced after 1,000 requests) and HTTP/3 (aioquic client of ``tests/support/h3client.py``,
two connections, each replaced after 400 requests). Objects are picked with a Zipf-like
popularity (some hot, a long cold tail: hits, misses and evictions). A request is a plain
GET with one of several Accept-Encoding values (no header, identity, gzip, br, zstd, lists
with q-values: the body is decoded here by its Content-Encoding, which must be one the
request accepted) or, one in five, a single byte range (``a-b``, ``a-`` or ``-n``; 206 with
the exact Content-Range and bytes required). ``--rate`` caps requests per second over all
loops (default 250; 0 = as fast as the clients go) to keep the shared machine usable.

It prints requests and errors per protocol and kind, corrupted bodies (a 200/206 whose
bytes, Content-Range or coding are wrong) grouped by reason, the edge's RSS
(``/proc/PID/status``, sampled every second) idle and as medians over 10-20 %, 45-55 % and
90-100 % of the run, the edge's /stats counters (evictions, hits, misses, upstream
requests) at 10 %, 50 % and the end, and the origin's request count. Checks (exit status 1
when one fails): errors 0, corrupted 0, every protocol served requests, evictions > 0, and
the end's RSS median within ``--rss-growth`` MiB (default 32) of the middle's (the cache
fills in the first seconds; after that the RSS must stay flat).

Bounds: every request has a 20 s timeout; no request starts after the deadline; at most
``--max-requests`` requests in all; every process is stopped on the way out (Ctrl-C too).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import itertools
import json
import math
import random
import re
import ssl
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brotli
import httpx
import zstandard

from benchmarks.fleet import HOST, Fleet, Node, free_port

KiB = 1024
MiB = 1024 * KiB
SLICE_SIZE = 1 * MiB
"""The node's default ``slice_size``: objects above it are cached as slices."""
REQUEST_TIMEOUT = 20.0
TEXT_TYPES = ("js", "css", "json", "txt", "svg")
ACCEPT_ENCODINGS: tuple[str | None, ...] = (
    None,
    "identity",
    "gzip",
    "br",
    "zstd",
    "gzip, deflate, br, zstd",
    "br;q=0.5, gzip;q=0.8",
    "zstd, gzip;q=0",
)
"""What full GETs send (None: no Accept-Encoding at all)."""
WORDS = [
    "function",
    "const",
    "let",
    "return",
    "if",
    "else",
    "for",
    "while",
    "await",
    "async",
    "import",
    "export",
    "default",
    "class",
    "extends",
    "this",
    "new",
    "null",
    "undefined",
    "true",
    "false",
    "value",
    "index",
    "length",
    "push",
    "map",
    "filter",
    "reduce",
    "document",
    "window",
    "console",
    "log",
    "error",
    "cache",
    "edge",
    "slice",
    "range",
    "body",
    "header",
    "status",
    "request",
    "response",
    "stream",
    "buffer",
    "encode",
    "decode",
    "color",
    "margin",
    "padding",
    "display",
    "flex",
    "grid",
    "none",
    "block",
    "inherit",
    "auto",
    "px",
    "em",
    "rem",
    "solid",
    "border",
    "radius",
    "width",
    "height",
    "position",
    "absolute",
    "relative",
]


# -- objects ------------------------------------------------------------------------------------


@dataclass
class Obj:
    path: str
    body: bytes
    sha: str
    text: bool
    precompressed: bool


def _text(path: str, size: int) -> bytes:
    """Deterministic, compressible text of ``size`` bytes (words drawn from a seeded PRNG)."""
    rng = random.Random(path)
    out = bytearray()
    while len(out) < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(4, 14)))
        out += f"{line}; // {len(out)}\n".encode()
    return bytes(out[:size])


def make_objects(root: Path, count: int, seed: int) -> list[Obj]:
    """Write ``count`` objects under ``root/soak`` and return them with their bytes and sha256."""
    rng = random.Random(seed)
    objects = []
    low, high = math.log(1 * KiB), math.log(2 * MiB)
    for i in range(count):
        # every tenth above slice_size (sliced), the rest log-uniform
        size = rng.randint(SLICE_SIZE + 1, 2 * MiB) if i % 10 == 9 else int(math.exp(rng.uniform(low, high)))
        text = rng.random() < 0.5
        ext = rng.choice(TEXT_TYPES) if text else "bin"
        path = f"/soak/o-{i:04d}.{ext}"
        body = _text(path, size) if text else hashlib.shake_256(path.encode()).digest(size)
        file = root / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(body)
        precompressed = text and rng.random() < 0.25
        if precompressed:
            file.with_name(file.name + ".gz").write_bytes(gzip.compress(body, 6, mtime=0))
        objects.append(Obj(path, body, hashlib.sha256(body).hexdigest(), text, precompressed))
    return objects


# -- what a response must be ------------------------------------------------------------------------


def accepted_codings(ae: str | None) -> set[str]:
    """Codings a response to this Accept-Encoding may carry (identity unless refused)."""
    if ae is None:
        return {"identity"}  # the node sends identity to clients that say nothing (see edge.http)
    out = {"identity"}
    for member in ae.split(","):
        name, _, params = member.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            q = float(params.strip()[2:])
        if q > 0:
            out.add(name.strip().lower())
        elif name.strip().lower() == "identity":
            out.discard("identity")
    return out


def decode(body: bytes, coding: str) -> bytes:
    if coding in ("", "identity"):
        return body
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        return bytes(brotli.decompress(body))
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise ValueError(f"unexpected Content-Encoding {coding!r}")


@dataclass
class Plan:
    obj: Obj
    kind: str
    """``full`` or ``range``."""
    headers: dict[str, str]
    ae: str | None = None
    span: tuple[int, int] | None = None
    """(first, last) inclusive, for a range."""


def pick(rng: random.Random, objects: list[Obj], cum_weights: list[float]) -> Plan:
    obj = rng.choices(objects, cum_weights=cum_weights)[0]
    length = len(obj.body)
    if rng.random() < 0.2:
        shape = rng.random()
        if shape < 0.6:
            first = rng.randrange(length)
            last = min(length - 1, first + rng.randint(0, 300 * KiB))
            spec = f"{first}-{last}"
        elif shape < 0.8:
            first = rng.randrange(length)
            last = length - 1
            spec = f"{first}-"
        else:
            n = rng.randint(1, min(length, 64 * KiB))
            first, last = length - n, length - 1
            spec = f"-{n}"
        return Plan(obj, "range", {"range": f"bytes={spec}"}, None, (first, last))
    ae = rng.choice(ACCEPT_ENCODINGS)
    return Plan(obj, "full", {} if ae is None else {"accept-encoding": ae}, ae)


def check(plan: Plan, status: int, headers: Callable[[str], str | None], body: bytes) -> tuple[str, str]:
    """("ok" | "error" | "corrupt", reason) for one response."""
    obj = plan.obj
    coding = (headers("content-encoding") or "identity").strip().lower()
    if plan.kind == "range":
        assert plan.span is not None
        if status != 206:
            return "error", f"range: status {status}"
        first, last = plan.span
        want = f"bytes {first}-{last}/{len(obj.body)}"
        if headers("content-range") != want:
            return "corrupt", f"Content-Range {headers('content-range')!r}, want {want!r}"
        if coding != "identity":
            return "corrupt", f"range with Content-Encoding {coding}"
        if body != obj.body[first : last + 1]:
            return "corrupt", f"range {first}-{last}: {len(body)} bytes, wrong content"
        return "ok", ""
    if status != 200:
        return "error", f"status {status}"
    if coding not in accepted_codings(plan.ae):
        return "corrupt", f"Content-Encoding {coding} for Accept-Encoding {plan.ae!r}"
    try:
        decoded = decode(body, coding)
    except Exception as exc:  # a body that does not decode is a corrupted one
        return "corrupt", f"{coding} does not decode: {exc}"
    if hashlib.sha256(decoded).hexdigest() != obj.sha:
        return "corrupt", f"sha256 mismatch ({coding}, {len(decoded)} of {len(obj.body)} bytes)"
    return "ok", ""


# -- the run --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    """By ``proto`` and ``proto/kind``."""
    errors: Counter[str] = field(default_factory=Counter)
    corrupt: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    """Failures by protocol, kind and reason with numbers left out (one line per kind of failure)."""
    codings: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    bytes: int = 0
    started: int = 0

    def add(self, proto: str, plan: Plan, verdict: str, reason: str, coding: str, size: int) -> None:
        self.requests[proto] += 1
        self.requests[f"{proto}/{plan.kind}"] += 1
        self.bytes += size
        if verdict == "ok":
            if plan.kind == "full":
                self.codings[coding] += 1
            return
        (self.errors if verdict == "error" else self.corrupt)[proto] += 1
        self.reasons[f"{verdict} {proto}/{plan.kind}: " + re.sub(r"\d+", "N", reason)] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{proto} {plan.obj.path} {plan.headers}: {verdict}: {reason}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Pacer:
    """At most ``rate`` request starts per second over every loop (0: no cap)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


async def soak(
    args: argparse.Namespace, fleet: Fleet, node: Node, tls_port: int, objects: list[Obj]
) -> dict[str, Any]:
    assert node.proc is not None and node.quic_port is not None and fleet.ca is not None
    from tests.support.h3client import h3_client

    rng = random.Random(args.seed + 1)
    ranked = objects[:]
    rng.shuffle(ranked)  # popularity independent of size and type
    cum_weights = list(itertools.accumulate(1.0 / (r + 1) ** 0.8 for r in range(len(ranked))))
    tally = Tally()
    # one pacer per protocol: the HTTP/1.1 client is the cheapest, and would take every slot
    pacers = {proto: Pacer(args.rate / 3) for proto in ("h1", "h2", "h3")}
    began = time.monotonic()
    deadline = began + args.duration
    ctx = ssl.create_default_context(cafile=str(fleet.ca))
    https = f"https://localhost:{tls_port}"
    authority = f"localhost:{tls_port}"

    def more() -> bool:
        return time.monotonic() < deadline and tally.started < args.max_requests

    async def one(
        proto: str, send: Callable[[Plan], Awaitable[tuple[int, Callable[[str], str | None], bytes]]]
    ) -> None:
        await pacers[proto].wait()
        if not more():
            return
        tally.started += 1
        plan = pick(rng, ranked, cum_weights)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status, headers, body = await send(plan)
        except Exception as exc:  # transport failures, resets, timeouts: all errors
            tally.add(proto, plan, "error", f"{type(exc).__name__}: {exc}", "", 0)
            return
        verdict, reason = check(plan, status, headers, body)
        tally.add(
            proto, plan, verdict, reason, (headers("content-encoding") or "identity").lower(), len(body)
        )

    async def httpx_send(
        client: httpx.AsyncClient, plan: Plan, extra: dict[str, str]
    ) -> tuple[int, Callable[[str], str | None], bytes]:
        async with client.stream("GET", plan.obj.path, headers={**plan.headers, **extra}) as resp:
            body = b"".join([chunk async for chunk in resp.aiter_raw()])
        return resp.status_code, resp.headers.get, body

    def httpx_client(**kw: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False, **kw)
        client.headers.pop("accept-encoding", None)  # each request says what it accepts, or nothing
        return client

    async def h1_loops() -> None:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx_client(base_url=node.url, limits=limits, headers={"Host": HOST}) as client:

            async def send(plan: Plan) -> tuple[int, Callable[[str], str | None], bytes]:
                extra = {"connection": "close"} if rng.random() < 0.02 else {}
                return await httpx_send(client, plan, extra)

            async def loop() -> None:
                while more():
                    await one("h1", send)

            await asyncio.gather(*(loop() for _ in range(args.concurrency)))

    async def h2_connection(streams: int) -> None:
        while more():
            budget = 1000
            async with httpx_client(base_url=https, http2=True, verify=ctx) as client:

                async def send(plan: Plan) -> tuple[int, Callable[[str], str | None], bytes]:
                    async with client.stream("GET", plan.obj.path, headers=plan.headers) as resp:
                        if resp.http_version != "HTTP/2":
                            raise RuntimeError(f"negotiated {resp.http_version}, not HTTP/2")
                        body = b"".join([chunk async for chunk in resp.aiter_raw()])
                    return resp.status_code, resp.headers.get, body

                async def loop() -> None:
                    nonlocal budget
                    while more() and budget > 0:
                        budget -= 1
                        await one("h2", send)

                await asyncio.gather(*(loop() for _ in range(streams)))

    async def h3_connection(streams: int) -> None:
        while more():
            budget = 400
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    opened = h3_client("127.0.0.1", node.quic_port, str(fleet.ca))
                    conn = await opened.__aenter__()
            except Exception as exc:
                tally.errors["h3"] += 1
                tally.examples.append(f"h3 connect: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1)
                continue
            try:

                async def send(
                    plan: Plan, conn: Any = conn
                ) -> tuple[int, Callable[[str], str | None], bytes]:
                    resp = await conn.request(
                        plan.obj.path, headers=list(plan.headers.items()), authority=authority
                    )
                    if resp.reset is not None:
                        raise RuntimeError(f"stream reset with {resp.reset:#x}")
                    return resp.status, resp.header, bytes(resp.body)

                async def loop() -> None:
                    nonlocal budget
                    while more() and budget > 0:
                        budget -= 1
                        await one("h3", send)

                await asyncio.gather(*(loop() for _ in range(streams)))
            finally:
                await opened.__aexit__(None, None, None)

    # RSS (sampled every second) and /stats (at 10 % and 50 %) over the run
    samples: list[tuple[float, int]] = []
    idle = rss_kib(node.proc.pid)
    stats_at: dict[str, dict[str, Any]] = {}

    async def watch() -> None:
        targets = [("10%", 0.1), ("50%", 0.5)]
        last_print = began
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            samples.append((now - began, rss_kib(node.proc.pid)))
            while targets and now - began >= targets[0][1] * args.duration:
                name, _ = targets.pop(0)
                stats_at[name] = await asyncio.to_thread(fleet.stats, node)
            if now - last_print >= args.progress:
                last_print = now
                done = sum(tally.requests[p] for p in ("h1", "h2", "h3"))
                print(
                    f"  {now - began:6.0f} s  {done:>8,} requests  errors {sum(tally.errors.values())}  "
                    f"corrupt {sum(tally.corrupt.values())}  RSS {samples[-1][1] / 1024:.1f} MiB",
                    flush=True,
                )

    per_proto = max(1, args.concurrency // 2)
    tasks = [
        h1_loops(),
        *(h2_connection(per_proto) for _ in range(2)),
        *(h3_connection(per_proto) for _ in range(2)),
        watch(),
    ]
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    samples.append((elapsed, rss_kib(node.proc.pid)))

    def median_between(low: float, high: float) -> int:
        window = sorted(r for t, r in samples if low * elapsed <= t <= high * elapsed) or [samples[-1][1]]
        return window[len(window) // 2]

    # One sample is noisy (a 2 MiB body in flight moves it by MiBs): medians over windows.
    marks = {
        "idle": idle,
        "start (10-20%)": median_between(0.1, 0.2),
        "middle (45-55%)": median_between(0.45, 0.55),
        "end (90-100%)": median_between(0.9, 1.0),
    }
    stats_at["100%"] = await asyncio.to_thread(fleet.stats, node)
    assert fleet.origin is not None
    fleet.origin.sync()
    return {
        "seconds": elapsed,
        "tally": tally,
        "rss_kib": marks,
        "rss_max_kib": max([s for _, s in samples] + list(marks.values())),
        "rss_samples": samples,
        "stats": stats_at,
        "origin_requests": fleet.origin.total(),
    }


def report(args: argparse.Namespace, objects: list[Obj], node: Node, result: dict[str, Any]) -> bool:
    tally: Tally = result["tally"]
    total_bytes = sum(len(o.body) for o in objects)
    sliced = sum(len(o.body) > SLICE_SIZE for o in objects)
    texts = sum(o.text for o in objects)
    print()
    print(
        f"objects: {len(objects)} ({total_bytes / MiB:.1f} MiB; {texts} text, {sliced} above slice_size, "
        f"{sum(o.precompressed for o in objects)} with a .gz at the origin); edge cache {args.cache_size}"
    )
    print(
        f"ran {result['seconds']:.1f} s, rate cap {args.rate or 'none'} req/s, "
        f"{args.concurrency} loops per protocol, {tally.bytes / MiB:.0f} MiB of bodies received"
    )
    print()
    print("| protocol | requests | full GETs | ranges | errors | corrupted | req/s |")
    print("|---|---|---|---|---|---|---|")
    for proto in ("h1", "h2", "h3"):
        n = tally.requests[proto]
        print(
            f"| {proto} | {n:,} | {tally.requests[f'{proto}/full']:,} | {tally.requests[f'{proto}/range']:,} "
            f"| {tally.errors[proto]} | {tally.corrupt[proto]} | {n / result['seconds']:.0f} |"
        )
    print()
    print("codings of verified full GETs: " + ", ".join(f"{k} {v:,}" for k, v in tally.codings.most_common()))
    rss = result["rss_kib"]
    print(
        "edge RSS, median of 1 s samples (MiB): "
        + ", ".join(f"{k} {v / 1024:.1f}" for k, v in rss.items())
        + f", max {result['rss_max_kib'] / 1024:.1f}"
    )
    for mark, stats in result["stats"].items():
        keys = (
            "entries",
            "bytes",
            "evictions",
            "inserts",
            "hits",
            "misses",
            "upstream_requests",
            "fills_in_flight",
        )
        print(f"edge /stats at {mark}: " + ", ".join(f"{k} {stats.get(k)}" for k in keys))
    print(f"origin requests: {result['origin_requests']:,}")
    if tally.reasons:
        print("failures by kind:")
        for line, n in tally.reasons.most_common():
            print(f"  {n:>6,}  {line}")
    if tally.examples:
        print("first failures:")
        for line in tally.examples:
            print("  " + line)

    end = result["stats"]["100%"]
    growth = (rss["end (90-100%)"] - rss["middle (45-55%)"]) / 1024
    checks = [
        ("errors == 0", sum(tally.errors.values()) == 0),
        ("corrupted == 0", sum(tally.corrupt.values()) == 0),
        ("every protocol served requests", all(tally.requests[p] > 0 for p in ("h1", "h2", "h3"))),
        ("evictions > 0", int(end.get("evictions", 0)) > 0),
        (f"RSS growth middle→end {growth:+.1f} MiB <= {args.rss_growth:g} MiB", growth <= args.rss_growth),
    ]
    print()
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "seconds": result["seconds"],
                    "requests": dict(tally.requests),
                    "errors": dict(tally.errors),
                    "corrupt": dict(tally.corrupt),
                    "codings": dict(tally.codings),
                    "reasons": dict(tally.reasons),
                    "examples": tally.examples,
                    "rss_kib": rss,
                    "rss_samples": result["rss_samples"],
                    "stats": result["stats"],
                    "origin_requests": result["origin_requests"],
                    "checks": {name: ok for name, ok in checks},
                    "edge": node.command(),
                },
                indent=1,
                default=str,
            )
        )
    return all(ok for _, ok in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--quick", action="store_true", help="60 s")
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--cache-size", default="32MiB")
    parser.add_argument("--concurrency", type=int, default=4, help="request loops per protocol")
    parser.add_argument(
        "--rate", type=float, default=250.0, help="request starts per second, all loops (0: no cap)"
    )
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument(
        "--rss-growth",
        type=float,
        default=32.0,
        help="MiB the RSS median may grow from the middle to the end",
    )
    parser.add_argument("--progress", type=float, default=15.0, help="seconds between progress lines")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 60.0
    with Fleet(keep=args.keep) as fleet:
        print(f"work directory {fleet.dir}")
        objects = make_objects(fleet.root, args.objects, args.seed)
        fleet.start_origin()
        tls_port = free_port()
        spec = fleet.edge_spec(
            "soak-edge",
            h3=True,
            options={
                "cache-size": args.cache_size,
                "tls-listen": f"127.0.0.1:{tls_port}",
                "read-timeout": "15",
            },
        )
        node = fleet.start_node(spec)
        print(f"edge: {node.command()}")
        print(f"load: {args.duration:g} s ...", flush=True)
        result = asyncio.run(soak(args, fleet, node, tls_port, objects))
        ok = report(args, objects, node, result)
        if not node.running:
            print("FAIL the edge exited during the run:\n" + node.log_tail())
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
