"""Per-connection budgets of the HTTPS front against HTTP/2 floods, sans-I/O.

:class:`FrameMeter` reads the 9-byte header of every frame a client sends *before* the h2
library parses it, so a flood is refused after a bounded number of frames and the rest of
the read is never handed to h2 (whose per-frame cost is ~100x this scan). What is counted,
per connection, in a fixed window of ``WINDOW`` seconds (docs/architecture.md lists the values):

- streams reset by the client (RST_STREAM) against streams opened (HEADERS): more than
  ``RESET_BURST`` resets that are also more than half of the streams opened is the rapid
  reset attack (CVE-2023-44487);
- control frames that ask for work and carry no request: PING, SETTINGS, empty DATA without
  END_STREAM (CVE-2019-9518), and WINDOW_UPDATE, PRIORITY and unknown types beyond the
  credit that real traffic earns (two per DATA frame sent: one WINDOW_UPDATE for the stream,
  one for the connection; one per stream opened: a client that enlarges each new stream's
  window or sets its priority); more than ``CONTROL_BURST`` is a flood (CVE-2019-9512, 9513,
  9515, 9517 and relatives);
- replies owed (PING and SETTINGS acknowledgements) while the client is not reading what is
  sent (the transport asked to pause writing): at most ``OWED_REPLIES`` (CVE-2019-9512,
  9515: the acknowledgements would otherwise queue without bound);
- a header block in CONTINUATION frames: at most ``MAX_CONTINUATIONS`` frames and
  ``block_limit`` bytes (CVE-2024-27316 and relatives; h2 alone allows 64 frames).

Each verdict is an HTTP/2 error code for GOAWAY (ENHANCE_YOUR_CALM); the front closes the
connection. The meter also cuts a read after ``max_streams`` HEADERS frames so that the
front can hand h2 a bounded amount of work per event-loop turn.
"""

from __future__ import annotations

import struct

__all__ = [
    "CONTROL_BURST",
    "ENHANCE_YOUR_CALM",
    "MAX_CONTINUATIONS",
    "OWED_REPLIES",
    "RESET_BURST",
    "WINDOW",
    "FrameMeter",
]

WINDOW = 10.0
"""Seconds over which resets, streams opened and control frames are counted."""
RESET_BURST = 256
"""Client resets per window before the reset/opened ratio is looked at (2 x MAX_STREAMS)."""
CONTROL_BURST = 1000
"""PING, SETTINGS, PRIORITY, unknown, empty DATA and unearned WINDOW_UPDATE frames per window."""
OWED_REPLIES = 128
"""PING/SETTINGS acknowledgements owed while the client does not read."""
MAX_CONTINUATIONS = 8
"""CONTINUATION frames in one header block (a 64 KiB block at 16 KiB frames needs 3)."""
MAX_CREDIT = 4096
"""Credit for WINDOW_UPDATE, PRIORITY and unknown frames earned by DATA sent and streams opened, at most."""

ENHANCE_YOUR_CALM = 0xB

_PREFACE = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEAD = struct.Struct(">I")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4


class FrameMeter:
    """Frame counts of one client connection and the verdict when a budget is spent."""

    __slots__ = (
        "block_bytes",
        "block_frames",
        "block_limit",
        "control",
        "credit",
        "in_block",
        "opened",
        "owed",
        "partial",
        "paused",
        "reason",
        "resets",
        "skip",
        "window_start",
    )

    def __init__(self, now: float, block_limit: int) -> None:
        self.skip = _PREFACE
        """Bytes still to pass before the next frame header (payload, or the preface)."""
        self.partial = b""
        """The start of a frame header split across reads."""
        self.window_start = now
        self.opened = 0
        self.resets = 0
        self.control = 0
        self.owed = 0
        self.credit = 0
        self.paused = False
        """Set by the front while the transport asks it to pause writing (client not reading)."""
        self.in_block = False
        self.block_frames = 0
        self.block_bytes = 0
        self.block_limit = block_limit
        self.reason = ""
        """What the last verdict was about, for the log."""

    def sent_data(self) -> None:
        """A DATA frame went out: the client may answer it with two WINDOW_UPDATEs."""
        if self.credit < MAX_CREDIT:
            self.credit += 2

    def resumed(self) -> None:
        """The client reads again: the owed acknowledgements are on their way."""
        self.paused = False
        self.owed = 0

    def scan(
        self, data: bytes | memoryview, start: int, end: int, now: float, max_streams: int
    ) -> tuple[int, int, int]:
        """Count the frames starting in ``data[start:end]``.

        Returns ``(position, error, streams)``: ``error`` is 0 while every budget holds, else
        the GOAWAY code; ``position`` is where scanning stopped: ``end``, or the start of the
        frame header of the HEADERS frame after ``max_streams`` of them (not yet counted),
        or the frame that spent a budget; ``streams`` is what is left of ``max_streams``.
        """
        if now - self.window_start >= WINDOW:
            self.window_start = now
            self.opened = self.resets = self.control = 0
        pos = start
        while pos < end:
            skip = self.skip
            if skip:
                step = skip if skip < end - pos else end - pos
                self.skip = skip - step
                pos += step
                continue
            partial = self.partial
            head: bytes | memoryview
            if partial:
                need = 9 - len(partial)
                if end - pos < need:
                    self.partial = partial + bytes(data[pos:end])
                    return end, 0, max_streams
                head = partial + bytes(data[pos : pos + need])
                off = 0
            elif end - pos < 9:
                self.partial = bytes(data[pos:end])
                return end, 0, max_streams
            else:
                head = data
                off = pos
                need = 9
            length = _HEAD.unpack_from(head, off)[0] >> 8
            kind = head[off + 3]
            flags = head[off + 4]
            if kind == HEADERS:
                if max_streams <= 0:
                    return pos, 0, 0  # the rest waits for the next turn
                max_streams -= 1
            self.partial = b""
            pos += need
            self.skip = length
            error = self.frame(kind, flags, length)
            if error:
                return pos, error, max_streams
        return pos, 0, max_streams

    def frame(self, kind: int, flags: int, length: int) -> int:
        """Count one frame; the GOAWAY code when it spends a budget, else 0."""
        if self.in_block:
            if kind != CONTINUATION:
                self.in_block = False  # h2 refuses the block (PROTOCOL_ERROR)
                return 0
            self.block_frames += 1
            self.block_bytes += length
            if self.block_frames > MAX_CONTINUATIONS or self.block_bytes > self.block_limit:
                self.reason = f"CONTINUATION flood ({self.block_frames} frames, {self.block_bytes} bytes)"
                return ENHANCE_YOUR_CALM
            if flags & END_HEADERS:
                self.in_block = False
            return 0
        if kind == DATA:
            if length or flags & END_STREAM:
                return 0
            return self.control_frame("empty DATA")
        if kind == HEADERS:
            self.opened += 1
            if self.credit < MAX_CREDIT:
                self.credit += 1
            if not flags & END_HEADERS:
                self.in_block = True
                self.block_frames = 0
                self.block_bytes = length
                if length > self.block_limit:
                    self.reason = f"header block over {self.block_limit} bytes"
                    return ENHANCE_YOUR_CALM
            return 0
        if kind == RST_STREAM:
            self.resets += 1
            if self.resets > RESET_BURST and self.resets * 2 > self.opened:
                self.reason = f"rapid reset ({self.resets} resets, {self.opened} streams opened)"
                return ENHANCE_YOUR_CALM
            return 0
        if kind in (PING, SETTINGS):
            if not flags & ACK and self.paused:
                self.owed += 1
                if self.owed > OWED_REPLIES:
                    self.reason = f"{self.owed} acknowledgements owed to a client that does not read"
                    return ENHANCE_YOUR_CALM
            return self.control_frame("PING" if kind == PING else "SETTINGS")
        if kind in (GOAWAY, PUSH_PROMISE, CONTINUATION):
            return 0  # h2 closes the connection (GOAWAY) or refuses the frame (PROTOCOL_ERROR)
        if self.credit > 0:  # WINDOW_UPDATE, PRIORITY, extension frames
            self.credit -= 1
            return 0
        names = {WINDOW_UPDATE: "WINDOW_UPDATE", PRIORITY: "PRIORITY"}
        return self.control_frame(names.get(kind) or f"frame type {kind}")

    def control_frame(self, what: str) -> int:
        self.control += 1
        if self.control > CONTROL_BURST:
            self.reason = f"control frame flood ({self.control} frames, the last {what})"
            return ENHANCE_YOUR_CALM
        return 0
