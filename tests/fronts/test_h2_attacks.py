"""HTTP/2 attacks against the own HTTPS front: each is refused within a bounded time and
cost, and a second client fetching every 50 ms on its own connection keeps being served.

The attacks are :mod:`benchmarks.h2_attacks` (hand-built frames on a raw TLS connection),
run in a thread against an edge in this process, with smaller counts than the benchmark.
Every test names the defence it checks (:mod:`edge.fronts.h2_limits`, :mod:`edge.fronts.h2`)
and fails without it: the connection then stays open, or closes with another code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from benchmarks import h2_attacks
from benchmarks.h2_attacks import Result, client_context, run_attack
from edge.fronts import h2 as h2_front
from edge.fronts.h2_ngh2 import NgH2Protocol
from edge.wiring.devcert import DevCert
from tests.fronts.test_h3_adapter import CACHEABLE, blob
from tests.support.nodes import SecureEdge, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60), pytest.mark.usefixtures("h2_engine")]

LARGE = 16 * 1024 * 1024


@pytest.fixture
def backend() -> str:
    return "qh3"


@pytest_asyncio.fixture
async def node(origin: ScriptedOrigin, dev_cert: DevCert) -> AsyncIterator[SecureEdge]:
    origin.routes[h2_attacks.SMALL] = fixed(
        200, blob(1024), [*CACHEABLE, ("Content-Type", "application/octet-stream")]
    )
    edge = await start_secure_edge(origin.url, dev_cert, tls_front="own")
    async with edge.h2_client() as client:  # cached before the attacks: the victim's fetches are hits
        assert (await client.get(h2_attacks.SMALL)).status_code == 200
    yield edge
    await edge.stop()


async def attack(node: SecureEdge, name: str, count: int, linger: float = 3.0) -> Result:
    ctx = client_context(node.cert.ca)
    return await asyncio.to_thread(run_attack, name, "127.0.0.1", node.port, ctx, count, None, 5.0, linger)


def served_meanwhile(result: Result) -> None:
    """The victim fetched throughout the attack, never waiting near a second."""
    assert result.victim_failures == []
    assert result.victim_fetches >= 3
    assert result.victim_max_ms < 1000, result


def refused(result: Result, code: str, within: float = 2.0) -> None:
    assert result.goaway == code, result
    assert result.goaway_after is not None and result.goaway_after < within, result
    assert result.closed_after is not None and result.closed_after < within + 1, result


async def test_rapid_reset_gets_enhance_your_calm(node: SecureEdge) -> None:
    """CVE-2023-44487: FrameMeter's reset budget (RESET_BURST, resets against streams opened)."""
    result = await attack(node, "rapid_reset", 3000)
    refused(result, "ENHANCE_YOUR_CALM")
    served_meanwhile(result)


@pytest.mark.parametrize(
    "name",
    ["ping_flood_reading", "settings_flood", "priority_flood", "empty_data", "window_update_flood"],
)
async def test_control_frame_flood_gets_enhance_your_calm(node: SecureEdge, name: str) -> None:
    """CVE-2019-9512/9515/9513/9518 and WINDOW_UPDATE floods: FrameMeter's CONTROL_BURST
    (empty DATA and unearned WINDOW_UPDATE count as control frames), from a client that reads."""
    result = await attack(node, name, 5000)
    refused(result, "ENHANCE_YOUR_CALM")
    served_meanwhile(result)


async def test_ping_flood_from_a_client_that_does_not_read(node: SecureEdge) -> None:
    """The measured case (150,000 PINGs, nothing read), at a tenth of the count."""
    result = await attack(node, "ping_flood", 15_000)
    refused(result, "ENHANCE_YOUR_CALM")
    served_meanwhile(result)


async def test_acknowledgements_owed_to_a_client_that_does_not_read(
    node: SecureEdge, origin: ScriptedOrigin
) -> None:
    """A client fills the send path with a 16 MiB response it does not read, then sends
    PINGs, fewer than the control budget: FrameMeter's OWED_REPLIES refuses them (and the
    close does not wait for the unread response: CLOSE_GRACE)."""
    origin.routes[h2_attacks.LARGE] = fixed(
        200, blob(LARGE), [*CACHEABLE, ("Content-Type", "application/octet-stream")]
    )
    async with node.h2_client() as client:
        assert len((await client.get(h2_attacks.LARGE)).content) == LARGE
    result = await attack(node, "slow_read_pings", 600, linger=5.0)
    assert result.goaway == "ENHANCE_YOUR_CALM", result
    assert result.closed_after is not None and result.closed_after < 5.0, result
    served_meanwhile(result)


async def test_continuation_flood_gets_enhance_your_calm(node: SecureEdge) -> None:
    """CVE-2024-27316: FrameMeter's MAX_CONTINUATIONS (h2 alone allows 64 frames and answers
    PROTOCOL_ERROR)."""
    result = await attack(node, "continuation_flood", 400)
    refused(result, "ENHANCE_YOUR_CALM")
    served_meanwhile(result)


async def test_hpack_bomb_before_settings_are_acknowledged(node: SecureEdge) -> None:
    """A 4 KiB field referenced 12 times (52 KB decoded), from a client that never
    acknowledges the node's SETTINGS: the decoder's limit is the advertised header list size
    from the first frame (h2 keeps 64 KiB until the acknowledgement)."""
    result = await attack(node, "hpack_bomb", 12)
    refused(result, "ENHANCE_YOUR_CALM")
    served_meanwhile(result)


async def test_zero_window_streams_stall_then_goaway(
    node: SecureEdge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Initial window 0 and 40 requests whose responses can never be sent: STALL_TIMEOUT
    (30 s; 1 s here) closes the connection instead of holding them for ever."""
    monkeypatch.setattr(h2_front, "STALL_TIMEOUT", 1.0)
    result = await attack(node, "zero_window", 40, linger=4.0)
    refused(result, "ENHANCE_YOUR_CALM", within=3.0)
    assert result.goaway_after is not None and result.goaway_after > 0.9
    served_meanwhile(result)


async def test_too_many_concurrent_streams_get_protocol_error(node: SecureEdge, h2_engine: str) -> None:
    """More open streams than SETTINGS_MAX_CONCURRENT_STREAMS (MAX_STREAMS, 128): h2's
    connection error PROTOCOL_ERROR. nghttp2 refuses each stream over the limit instead
    (RST_STREAM, the stream error RFC 9113 §5.1.2 also allows; see the next test)."""
    result = await attack(node, "too_many_streams", 300)
    if h2_engine == "ngh2":
        assert result.goaway == "-", result
    else:
        refused(result, "PROTOCOL_ERROR")
    served_meanwhile(result)


async def test_a_stream_over_the_limit_is_reset(node: SecureEdge, h2_engine: str) -> None:
    """MAX_STREAMS uploads that never end hold every place; the next stream is refused:
    RST_STREAM with nghttp2 (a stream error), GOAWAY(PROTOCOL_ERROR) with h2."""
    ctx = node.ssl()
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", node.port, ssl=ctx, server_hostname="localhost"
    )
    block = h2_attacks.request_block(b"localhost:%d" % node.port, b"/upload", b"POST")
    over = 2 * h2_front.MAX_STREAMS + 1
    writer.write(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + h2_attacks.frame(h2_attacks.SETTINGS, 0, 0, b"")
        + b"".join(h2_attacks.frame(h2_attacks.HEADERS, 0x4, sid, block) for sid in range(1, over + 1, 2))
    )
    got: list[tuple[int, int, int]] = []
    buf = b""
    while not got:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, "closed without a frame"
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, sid, payload = buf[3], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9 : 9 + length]
            buf = buf[9 + length :]
            if kind == h2_attacks.RST_STREAM:
                got.append((kind, sid, int.from_bytes(payload[:4], "big")))
            elif kind == h2_attacks.GOAWAY:
                got.append((kind, sid, int.from_bytes(payload[4:8], "big")))
    writer.close()
    if h2_engine == "ngh2":  # PROTOCOL_ERROR, or REFUSED_STREAM before SETTINGS are acknowledged
        assert got[0][:2] == (h2_attacks.RST_STREAM, over) and got[0][2] in (0x1, 0x7), got
    else:
        assert got[0][0] == h2_attacks.GOAWAY and got[0][2] == 0x1, got


async def test_a_large_read_is_handled_over_several_turns(
    node: SecureEdge, monkeypatch: pytest.MonkeyPatch, h2_engine: str
) -> None:
    """3,000 HEAD hits written at once (responses are read): no single turn of the event loop
    answers more than TURN_STREAMS of them (one more may complete whose frame began in the turn
    before), and the victim keeps being served. Without the bound, h2 would see hundreds of
    requests in one read, all open at once: more than MAX_STREAMS, a PROTOCOL_ERROR."""
    most = [0]
    count = [0]
    engine = h2_front.H2Protocol if h2_engine == "h2" else NgH2Protocol
    take, on_request = h2_front.H2Protocol.take, engine.on_request

    def counting_take(self: h2_front.H2Protocol, data: bytes) -> None:
        count[0] = 0
        take(self, data)
        most[0] = max(most[0], count[0])

    def counting_on_request(self: h2_front.H2Protocol, event: object) -> None:
        count[0] += 1
        on_request(self, event)  # type: ignore[arg-type]

    monkeypatch.setattr(h2_front.H2Protocol, "take", counting_take)
    monkeypatch.setattr(engine, "on_request", counting_on_request)
    monkeypatch.setitem(h2_attacks.ATTACKS, "head_burst", (head_burst, 3000))
    result = await attack(node, "head_burst", 3000, linger=1.0)
    assert result.goaway == "-" and result.written_kib > 30, result
    assert 0 < most[0] <= h2_front.TURN_STREAMS + 1, most
    served_meanwhile(result)


def head_burst(n: int, authority: bytes) -> h2_attacks.Plan:
    """``n`` HEAD requests for the cached object in one write: each is answered at once
    (HEADERS only, no window needed), so none stays open."""
    block = b"\x02\x04HEAD" + h2_attacks.request_block(authority, h2_attacks.SMALL.encode())[1:]
    reqs = (
        h2_attacks.frame(h2_attacks.HEADERS, h2_attacks.END_STREAM | h2_attacks.END_HEADERS, sid, block)
        for sid in range(1, 2 * n, 2)
    )
    return h2_attacks.Plan(iter([b"".join(reqs)]))
