"""FrameMeter, sans-I/O: floods spend a budget, the traffic of real clients does not."""

from __future__ import annotations

import struct

from benchmarks.h2_attacks import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    RST_STREAM,
    WINDOW_UPDATE,
    frame,
    request_block,
    settings,
)
from edge.fronts.h2_limits import CONTROL_BURST, ENHANCE_YOUR_CALM, RESET_BURST, WINDOW, FrameMeter

BLOCK = request_block(b"localhost", b"/a")


def scan_all(meter: FrameMeter, data: bytes, now: float = 0.0, piece: int | None = None) -> int:
    """Feed ``data`` in pieces of ``piece`` bytes; the first error code, or 0."""
    step = piece or len(data) or 1
    for start in range(0, len(data), step):
        chunk = data[start : start + step]
        pos, error, _ = meter.scan(chunk, 0, len(chunk), now, 10**9)
        if error:
            return error
        assert pos == len(chunk)
    return 0


def wu(stream_id: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", 16384))


def test_a_browser_session_spends_no_budget() -> None:
    """5,000 requests, each answered with 4 DATA frames that the client acknowledges with
    two WINDOW_UPDATEs each, a PRIORITY per stream, 100 cancelled, a PING a second."""
    meter = FrameMeter(0.0, 1 << 20)
    out = [PREFACE, settings((0x4, 6 << 20)), wu(0)]
    for i in range(5000):
        sid = 2 * i + 1
        out += [frame(HEADERS, END_STREAM | END_HEADERS, sid, BLOCK), frame(PRIORITY, 0, sid, b"\0" * 5)]
        if i % 50 == 0:
            out.append(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
        if i % 500 == 0:
            out.append(frame(PING, 0, 0, b"x" * 8))
    data = b"".join(out)
    assert scan_all(meter, data, piece=1000) == 0
    acks = (wu(1) + wu(0)) * 100
    for _ in range(5000 * 4 // 100):  # the acknowledgements follow the DATA by up to 100 frames
        for _ in range(100):
            meter.sent_data()
        assert scan_all(meter, acks, piece=4096) == 0


def test_frame_headers_split_across_reads_are_counted() -> None:
    meter = FrameMeter(0.0, 1 << 20)
    pings = PREFACE + frame(PING, 0, 0, b"12345678") * (CONTROL_BURST + 1)
    assert scan_all(meter, pings, piece=5) == ENHANCE_YOUR_CALM
    assert "PING" in meter.reason


def test_rapid_reset_spends_the_reset_budget_and_the_window_renews_it() -> None:
    pair = b"".join(
        frame(HEADERS, END_STREAM | END_HEADERS, sid, BLOCK) + frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
        for sid in range(1, 2 * RESET_BURST, 2)
    )
    meter = FrameMeter(0.0, 1 << 20)
    assert scan_all(meter, PREFACE + pair) == 0  # RESET_BURST resets: still allowed
    assert scan_all(meter, pair[: len(pair) // RESET_BURST], now=1.0) == ENHANCE_YOUR_CALM
    meter = FrameMeter(0.0, 1 << 20)
    assert scan_all(meter, PREFACE + pair) == 0
    assert scan_all(meter, pair, now=WINDOW) == 0  # a new window


def test_resets_among_many_completed_streams_are_allowed() -> None:
    """Resets beyond the burst are a flood only while they are most of the streams opened."""
    meter = FrameMeter(0.0, 1 << 20)
    out = [PREFACE]
    for i in range(3 * RESET_BURST):
        sid = 2 * i + 1
        out.append(frame(HEADERS, END_STREAM | END_HEADERS, sid, BLOCK))
        if i % 2:
            out.append(frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
    assert scan_all(meter, b"".join(out)) == 0


def test_empty_data_and_unearned_window_updates_are_control_frames() -> None:
    for flood in (frame(DATA, 0, 1), wu(0), frame(PRIORITY, 0, 3, b"\0" * 5)):
        meter = FrameMeter(0.0, 1 << 20)
        assert scan_all(meter, PREFACE + flood * (CONTROL_BURST + 1)) == ENHANCE_YOUR_CALM
    meter = FrameMeter(0.0, 1 << 20)
    assert scan_all(meter, PREFACE + frame(DATA, END_STREAM, 1) * (CONTROL_BURST + 1)) == 0


def test_the_scan_stops_before_the_headers_frame_past_the_turn() -> None:
    meter = FrameMeter(0.0, 1 << 20)
    one = frame(HEADERS, END_STREAM | END_HEADERS, 1, BLOCK)
    data = PREFACE + one * 10
    pos, error, left = meter.scan(data, 0, len(data), 0.0, 4)
    assert (pos, error, left) == (len(PREFACE) + 4 * len(one), 0, 0)
    pos, error, left = meter.scan(data, pos, len(data), 0.0, 100)
    assert (pos, error, left) == (len(data), 0, 94)
    assert meter.opened == 10
