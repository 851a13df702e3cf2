"""The HTTPS front's HTTP/2 engine on ``ngh2`` (libnghttp2): config ``h2_engine = "ngh2"``.

Why: with the pure-Python ``h2`` library, parsing frames, running the stream state machines
and building events took about 60 % of the front's CPU for a 1 KiB hit (py-spy, h2load
-c8 -m8); libnghttp2 does that work in C (docs/architecture.md has the figures).

:class:`NgH2Protocol` is :class:`edge.fronts.h2.H2Protocol` with the engine calls replaced;
everything else is shared: the frame meter runs on the bytes before ngh2 sees them (so every
flood budget holds as with h2), requests go through the same checks and refusals, hits are
answered inside ``data_received`` and the rest goes to the core through the same sink.

A fast hit whose request field block was seen before with the same hit is answered by
that block, without the checks and the request rules (:meth:`NgH2Protocol.on_request`, the
HTTP/1.1 front's ``Replay`` by block instead of bytes).

What differs, because nghttp2 owns flow control and framing:
- response bodies are handed to nghttp2, which frames DATA as the windows allow. A cached
  hit's body goes whole (nghttp2 keeps a reference); of a streamed response at most
  ``FEED`` bytes wait inside nghttp2, the rest stays in the stream's ``pending`` (so a
  writer waits, as with h2) and is handed over when nghttp2 has sent what it held
  (:meth:`NgH2Protocol.flush` tops streams up after each write). Output is written
  ``OUT_PIECE`` bytes at a time, at most ``WRITE_BUDGET`` per connection per loop turn;
- nghttp2 answers PING and SETTINGS itself; request body bytes are credited back
  (WINDOW_UPDATE) as they are taken, as with h2;
- a frame nghttp2 refuses queues its GOAWAY: the connection closes once that is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any

import ngh2

from edge.cache.entry import Entry
from edge.core.node import ROUTE_MAX_CHARGE
from edge.fronts import h2 as h2_front
from edge.fronts.h1 import NOT_REPLAYED, REPLAY_MAX_BYTES, REPLAY_TABLE_SIZE, SEEN_ONCE, Replay
from edge.fronts.h2 import MAX_STREAMS, H2Protocol, _H2HitHead, _Stream
from edge.fronts.h2_limits import MAX_CONTINUATIONS, MAX_CREDIT
from edge.fronts.request import body_too_large
from edge.http.fields import Headers
from edge.http.h2_request import malformed_trailers
from edge.http.message import Request

__all__ = ["NgH2Protocol"]

log = logging.getLogger("edge.fronts.h2")

FEED = 16384
"""Bytes of a streamed response (a miss, a pass) that may wait inside nghttp2; the rest
waits in the stream's ``pending``, so the writer waits as with h2 (one DATA frame's worth).
A cached hit's body is handed over whole instead (:meth:`NgH2Protocol.send_hit`): ngh2
keeps a reference, not a copy, and the object is in memory anyway."""
OUT_PIECE = 65536
"""Most bytes taken from nghttp2 per transport write (``data_to_send(OUT_PIECE)``). Taking
all it has framed at once (megabytes, with the large windows load tools open) cost 20-30 %
more CPU per 256 KiB hit: the output and its encryption fall out of the CPU caches. 16 KiB
pieces cost more calls; 32-96 KiB measured alike (h2load -c8 -m8, 256 KiB: 209-249 us of
server CPU per request, against 259-277 us handing nghttp2 16 KiB per stream and round)."""
WRITE_BUDGET = 1024 * 1024
"""Most bytes one connection writes per event-loop turn; the rest goes from the next turn,
so a connection with wide-open windows and a large hit cannot hold the loop (about 0.3 ms
of encryption and sending here). At 256 KiB hits (8 streams per connection, 2 MiB per
read) a 256 KiB budget measured 229-246 us of CPU per request against 207-240 us."""
_FRAME = 16384
"""nghttp2's DATA frame payload: the meter's credit counts frames of this size."""

_GONE = (ngh2.StreamProtocolError, ngh2.ConnectionStateError)
"""What ngh2 raises on a send to a stream it has closed (or a connection it is ending)."""

_GOAWAY = struct.Struct(">HBBBLLL")
"""A GOAWAY frame: length (24 bits), type, flags, stream 0, last stream id, error code."""
_GOAWAY_TYPE = 0x7

_RequestReceived = ngh2.RequestReceived
_DataReceived = ngh2.DataReceived
_StreamReset = ngh2.StreamReset
_StreamClosed = ngh2.StreamClosed
_TrailersReceived = ngh2.TrailersReceived
_GoAwayReceived = ngh2.GoAwayReceived
_ConnectionClosed = ngh2.ConnectionClosed


def _join_cookies(pairs: Headers) -> Headers:
    """Cookie crumbs joined into one field (RFC 9113 §8.2.3), as h2 does on receipt."""
    cookies = [value for name, value in pairs if name == b"cookie"]
    if len(cookies) < 2:
        return pairs
    out = [(name, value) for name, value in pairs if name != b"cookie"]
    out.append((b"cookie", b"; ".join(cookies)))
    return out


class NgH2Protocol(H2Protocol):
    """One TLS connection whose HTTP/2 is libnghttp2's (through ngh2)."""

    conn: ngh2.Connection  # type: ignore[assignment]

    def make_engine(self, header_list: int) -> None:
        self.ending = False
        """GOAWAY asked for here: the caller closes the connection, not flush."""
        self.fed = 0
        """Response bytes handed to nghttp2; less what it still holds, what it has framed."""
        self.last_stream = 0
        """The last stream the client opened (for a GOAWAY framed here)."""
        self.hungry: dict[int, _Stream] = {}
        self.more_soon = False
        """A flush is scheduled for the next loop turn (the last one spent its budget)."""
        """Streams with bytes in ``pending`` that nghttp2 could not take yet."""
        self.replays: dict[Any, Replay] | None = None
        """Fast hits by request field block (see :meth:`on_request`), shared by the node's
        HTTP/2 connections; None with a rate limit (its verdict is not the block's)."""
        if self.rules.rate is None:
            # The core owns the tables (EdgeCore.replay_tables): a purge empties them.
            self.replays = self.core.replay_tables.setdefault("h2", {})
        self.conn = ngh2.Connection(
            ngh2.Role.SERVER,
            ngh2.Configuration(
                auto_window_update=False,  # credited as the front takes the bytes (on_ng_data)
                max_inbound_header_list_size=header_list,
                # every field costs 32 bytes of the list size: that bounds the count, and a
                # request over max_count reaches the front's check and is answered 431
                max_inbound_header_count=header_list // 32 + 1,
                max_continuations=MAX_CONTINUATIONS,
            ),
        )
        self.settings = {
            ngh2.Setting.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            ngh2.Setting.ENABLE_CONNECT_PROTOCOL: 1,  # RFC 8441: WebSockets (edge.fronts.stream_tunnel)
            ngh2.Setting.MAX_HEADER_LIST_SIZE: header_list,
        }

    def initiate(self) -> None:
        self.conn.initiate_connection(self.settings)

    def send_head(self, stream_id: int, head: Headers, end: bool = False) -> None:
        if head[0][1][:1] == b"1":
            self.conn.send_informational_response(stream_id, head)
        else:
            self.conn.send_response(stream_id, head, end_stream=end)

    def reset(self, stream_id: int, error_code: int) -> None:
        with contextlib.suppress(ngh2.NGH2Error):
            self.conn.reset_stream(stream_id, error_code)

    def goaway(self, error_code: int) -> None:
        self.ending = True  # the caller closes (close, refuse_flood): flush leaves it to them
        with contextlib.suppress(ngh2.NGH2Error):
            self.conn.terminate_connection(error_code)

    def tunnel_credit(self, stream_id: int, size: int) -> None:
        with contextlib.suppress(ngh2.NGH2Error):
            self.conn.acknowledge_received_data(size, stream_id)

    def tunnel_reset(self, stream_id: int) -> None:
        self.reset(stream_id, ngh2.ErrorCode.CANCEL)

    # -- output ------------------------------------------------------------------
    def flush(self) -> None:
        """Write what nghttp2 frames, ``OUT_PIECE`` bytes at a time, at most
        ``WRITE_BUDGET`` per call (the rest from the next loop turn, so one connection cannot
        hold the loop); top up streams waiting for room inside nghttp2, and close once
        nghttp2 has nothing more to say (after a GOAWAY it queued)."""
        conn = self.conn
        hungry = self.hungry
        transport = self.transport
        budget = WRITE_BUDGET
        while True:
            if self.write_paused and not (self.ending or self.closing):
                break  # resume_writing flushes: nothing more into a paused transport (a GOAWAY still goes)
            data = conn.data_to_send(OUT_PIECE)
            if data:
                if transport is not None and not self.closing:
                    transport.write(data)
                budget -= len(data)
                if budget > 0 and not self.write_paused:
                    continue
                if not self.write_paused and not self.more_soon:
                    self.more_soon = True
                    asyncio.get_running_loop().call_soon(self.flush_more)
                break
            if not hungry or self.write_paused or self.closing:
                break
            fed = self.sent_frames
            for stream_id, stream in list(hungry.items()):
                try:
                    self.pump(stream_id, stream)
                except _GONE:
                    self.on_reset(stream_id)
            if self.sent_frames == fed:
                break
        done = not (conn.want_read or conn.want_write or self.ending or self.closing)
        if done and transport is not None:
            self.closing = True
            transport.close()
            self.abort_later()

    def flush_more(self) -> None:
        self.more_soon = False
        if not self.closing:
            self.flush()

    def pump(self, stream_id: int, stream: _Stream) -> None:
        """Hand nghttp2 what it has room for of the stream's pending bytes (END_STREAM with
        the last of them when due)."""
        if stream.ended or self.closing:
            return
        pending = stream.pending
        if pending and not self.write_paused:
            conn = self.conn
            queued = conn.queued_body_size(stream_id)
            while pending and queued < FEED:
                chunk = pending.popleft()
                size = len(chunk)
                if size > FEED:
                    pending.appendleft(chunk[FEED:])
                    chunk = chunk[:FEED]
                    size = FEED
                end = stream.end and not pending
                conn.send_data(stream_id, chunk, end_stream=end)
                queued += size
                self.fed += size
                self.sent_frames += 1
                meter = self.meter  # two WINDOW_UPDATEs a client may answer each DATA frame with
                meter.credit = min(MAX_CREDIT, meter.credit + 2 * (size // _FRAME + 1))
                if end:
                    stream.ended = True
            if self.stall_timer is None:
                self.watch_stall(self.fed - conn.queued_body_size())
        if pending:
            self.hungry[stream_id] = stream
            if self.stall_timer is None:
                self.watch_stall(self.fed - self.conn.queued_body_size())
        else:
            self.hungry.pop(stream_id, None)
            if stream.end and not stream.ended:
                self.conn.end_stream(stream_id)
                stream.ended = True
            stream.wake()
        if stream.ended:
            self.streams.pop(stream_id, None)

    def pump_all(self) -> None:
        for stream_id, stream in list(self.streams.items()):
            if stream.pending or (stream.end and not stream.ended):
                try:
                    self.pump(stream_id, stream)
                except _GONE:
                    self.on_reset(stream_id)

    def check_stall(self, sent: int) -> None:
        """As with h2, with progress counted in bytes nghttp2 has framed (``sent``: the count
        when the timer was set): responses wait while nghttp2 holds bytes or streams are hungry."""
        self.stall_timer = None
        if self.closing:
            return
        queued = self.conn.queued_body_size()
        if not self.hungry and not queued:
            return
        if self.fed - queued != sent:
            self.watch_stall(self.fed - queued)
            return
        self.meter.reason = f"no DATA sent for {h2_front.STALL_TIMEOUT:g} s with responses waiting"
        self.refuse_flood(ngh2.ErrorCode.ENHANCE_YOUR_CALM)

    def on_reset(self, stream_id: int) -> None:
        self.hungry.pop(stream_id, None)
        super().on_reset(stream_id)

    # -- input -------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Hand one slice of input to nghttp2 and act on its events."""
        if self.closing:
            return
        conn = self.conn
        try:
            conn.receive_data(data)
        except ngh2.NGH2Error as exc:
            # nghttp2 refused the input and the session is unusable (it sends nothing more):
            # GOAWAY is framed here. A limit of nghttp2's (header list size, count, ...) is
            # ENHANCE_YOUR_CALM as the h2 engine answers it; any other refusal PROTOCOL_ERROR.
            log.debug("h2 protocol error from %s: %r", self.client, exc)
            calm = isinstance(exc, ngh2.DenialOfServiceError)
            code = ngh2.ErrorCode.ENHANCE_YOUR_CALM if calm else ngh2.ErrorCode.PROTOCOL_ERROR
            if self.transport is not None:
                self.transport.write(_GOAWAY.pack(0, 8, _GOAWAY_TYPE, 0, 0, self.last_stream, code))
            self.closing = True
            if self.transport is not None:
                self.transport.close()
                self.abort_later()
            return
        for event in conn.events():
            kind = type(event)
            try:
                if kind is _RequestReceived:
                    self.on_request(event)  # type: ignore[arg-type]
                elif kind is _DataReceived:
                    self.on_ng_data(event.stream_id, event.data, event.end_stream)  # type: ignore[attr-defined]
                elif kind is _StreamReset or kind is _StreamClosed:
                    self.on_reset(event.stream_id)  # type: ignore[attr-defined]
                elif kind is _TrailersReceived:
                    self.on_ng_trailers(event.stream_id, event.headers)  # type: ignore[attr-defined]
                elif kind is _GoAwayReceived or kind is _ConnectionClosed:
                    self.flush()
                    self.closing = True
                    if self.transport is not None:
                        self.transport.close()
                    return
            except _GONE:
                self.on_reset(getattr(event, "stream_id", 0))
        self.flush()

    def on_request(self, event: ngh2.RequestReceived) -> None:  # type: ignore[override]
        """A request's field block: answered again by the block when it is one seen with a
        fast hit before (as the HTTP/1.1 front does by bytes, ``edge.fronts.h1.Replay``),
        else checked, parsed and answered (a fast hit, or the core's full path).

        nghttp2 hands over the decoded fields as a tuple of byte pairs: a dict key as it
        comes. Everything the checks and the request rules decide is a function of that
        block and of whether it ends the stream, but the per-address rate limit (with one,
        no table) and a trusted proxy's ``X-Forwarded-Proto`` (never kept)."""
        stream_id = event.stream_id
        self.last_stream = stream_id
        pairs: Headers = event.headers  # type: ignore[assignment]  # tuples of bytes
        replays = self.replays
        wanted = 0
        if replays is not None and event.end_stream:
            replay = replays.get(pairs)
            if replay is None:
                wanted = 1  # first seen: marked SEEN_ONCE if it gets a fast hit
            elif replay is SEEN_ONCE:
                wanted = 2  # its fast hit is kept this time
            elif replay is not NOT_REPLAYED:
                if self.replay(stream_id, replay):
                    return
                replays.pop(pairs, None)  # the route no longer holds
                wanted = 1
        stream = _Stream()
        req = self.open_request(stream_id, stream, _join_cookies(pairs), event.end_stream)
        if req is None or not event.end_stream:
            return  # refused, a tunnel, or the body follows (on_stream_ended)
        found = self.fresh_hit(req)
        if found is None:
            self.start(stream_id, stream, req)
            return
        entry, memo = found
        if wanted:
            self.offer(pairs, wanted, req, entry)
        self.send_hit(stream_id, stream, entry, memo, req.method == b"HEAD")

    def offer(self, pairs: Headers, wanted: int, req: Request, entry: Entry) -> None:
        """Remember ``pairs``, a request that just got the fast hit ``entry``: marked the
        first time, its route the second (so hits that never repeat cost a dict insert)."""
        replays = self.replays
        assert replays is not None
        fields = req.fields
        if wanted == 1:
            if sum(len(name) + len(value) for name, value in pairs) > REPLAY_MAX_BYTES:
                return
            if len(replays) >= REPLAY_TABLE_SIZE:
                replays.clear()
        if b"x-forwarded-proto" in fields or b"content-length" in fields or b"expect" in fields:
            mark: Replay = NOT_REPLAYED  # the scheme may depend on who sent it; a body was announced
        elif len(entry.body) > ROUTE_MAX_CHARGE:
            mark = NOT_REPLAYED  # a route holds its object: only small ones (HitRoute)
        elif wanted == 1:
            mark = SEEN_ONCE
        else:
            route = self.core.hit_route(req, entry)
            if route is None:
                return  # a compressed sibling is still being made: not final yet
            mark = Replay(route, req, True)
        replays[pairs] = mark

    def replay(self, stream_id: int, replay: Replay) -> bool:
        """Answer a request by its field block; False when its route no longer holds."""
        now = self.clock()
        entry = self.core.replay(replay.route, now)
        if entry is None:
            return False
        req = replay.req
        if self.tally.access is not None and req.client != self.client:
            req = Request(
                req.method, req.target, req.headers, req.fields, req.scheme, req.host, self.client,
                req.http_version,
            )  # fmt: skip
        self.send_hit(stream_id, None, entry, self.hit_head(entry, req, now), req.method == b"HEAD")
        return True

    def on_ng_data(self, stream_id: int, data: bytes, ended: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.tunnel is not None:
            stream.tunnel.from_client(data, len(data))  # credited back as the origin takes it
            if ended:
                self.on_stream_ended(stream_id)
            return
        if data:
            self.conn.acknowledge_received_data(len(data), stream_id)
        if stream is None or stream.req is None or stream.task is not None:
            return  # already answered (e.g. 413): the rest is read and dropped
        if data:
            stream.body_size += len(data)
            if stream.body_size > self.max_body:
                stream.body.clear()
                req = stream.req
                self.refuse(stream_id, stream, body_too_large(), req.method, req.target, req.host)
                return
            stream.body.append(data)
        if ended:
            self.on_stream_ended(stream_id)

    def on_ng_trailers(self, stream_id: int, pairs: Headers) -> None:
        malformed = malformed_trailers(pairs)
        if malformed is not None:
            log.debug("malformed trailers from %s: %s", self.client, malformed)
            self.reset(stream_id, ngh2.ErrorCode.PROTOCOL_ERROR)
            self.on_reset(stream_id)
            return
        self.on_stream_ended(stream_id)  # trailers end the request

    # -- answering ---------------------------------------------------------------
    def try_hit(self, stream_id: int, stream: _Stream, req: Request) -> bool:
        found = self.fresh_hit(req)
        if found is None:
            return False
        entry, memo = found
        self.send_hit(stream_id, stream, entry, memo, req.method == b"HEAD")
        return True

    def send_hit(
        self, stream_id: int, stream: _Stream | None, entry: Entry, memo: _H2HitHead, head_only: bool
    ) -> None:
        """Frame a fresh hit on ``stream_id``. The body is handed to nghttp2 whole: ngh2
        keeps a reference to the stored bytes (no copy) and frames them as the windows
        allow, ``flush`` takes the output a piece at a time; the stream leaves the front's
        table at once (a reset or a close drops what nghttp2 still holds of it)."""
        body = entry.body
        conn = self.conn
        if stream is not None:
            self.streams.pop(stream_id, None)
        if head_only or not body:
            conn.send_response(stream_id, memo.head, end_stream=True)
            memo.heads += 1
            return
        conn.send_response(stream_id, memo.head, end_stream=False)
        conn.send_data(stream_id, body, end_stream=True)
        size = len(body)
        self.fed += size
        self.sent_frames += 1
        meter = self.meter  # two WINDOW_UPDATEs a client may answer each DATA frame with
        meter.credit = min(MAX_CREDIT, meter.credit + 2 * (size // _FRAME + 1))
        if self.stall_timer is None:
            self.watch_stall(self.fed - conn.queued_body_size())
