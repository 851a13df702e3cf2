"""Raw HTTP/2 frames into the HTTPS front (own h2 front, TLS with a dev certificate, ALPN h2).

The node has no cleartext HTTP/2 (h2c), so the frames go over TLS: the client side is a
``ssl.SSLObject`` on memory BIOs (``tests/fuzz/support.TLSPipe``), which lets it half-close
TCP and still read. One edge (``tests/support/nodes.start_secure_edge``, ``tls_front="own"``)
in front of a scripted origin lives through every example, on a loop of its own.

Each example connects, sends the client preface and its bytes, reads; once the node has
been silent for 0.1 s the client half-closes and reads until the node closes. Then:

- what arrived is a sequence of whole HTTP/2 frames of known types a server may send (no
  PUSH_PROMISE, none above 16,384 bytes), every field block decodes (HPACK, one decoder
  for the connection) and each stream's first block leads with a valid ``:status``; a
  reset may cut the last frame short, nothing else;
- the node closed within 5 s of the half-close (no hang);
- no response is a 500, nothing was logged at ERROR by the node, and the loop saw no
  exception from the node's protocols;
- a clean GET on a new connection still gets the cached 200.

Inputs: request sequences built with the ``h2`` library (validation off, so pseudo-fields,
names, values, Content-Length with long numerals, TE, connection-specific fields, bodies,
trailers, RST_STREAM, PING, WINDOW_UPDATE, SETTINGS and GOAWAY come out as drawn); the same
bytes after byte-level mutations; and raw frames of any type, flags, stream and payload.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edge.wiring.devcert import ensure_dev_cert
from tests.fuzz.support import (
    IDLE,
    IO_BOUND,
    ErrorRecords,
    Hang,
    NodeThread,
    TLSPipe,
    fuzz_settings,
    h2_frames,
    h2_responses,
    seeded,
    tls_context,
)
from tests.fuzz.test_fuzz_h1_front import MUTATION, mutate
from tests.support.nodes import SecureEdge, start_secure_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = pytest.mark.timeout(180)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
OK_BODY = b"fuzz h2 ok\n" * 8
CACHEABLE = [("Cache-Control", "public, max-age=3600"), ("Content-Type", "text/plain")]


class H2Node:
    def __init__(self, certs: Path) -> None:
        self.thread = NodeThread()
        self.origin = ScriptedOrigin()
        self.errors = ErrorRecords()
        cert = ensure_dev_cert(certs)
        self.ca = str(cert.ca)

        async def start() -> SecureEdge:
            await self.origin.start()
            self.origin.routes["/ok"] = fixed(200, OK_BODY, CACHEABLE)
            self.origin.routes["/big"] = fixed(200, bytes(range(256)) * 512, CACHEABLE)
            return await start_secure_edge(
                self.origin.url, cert, "qh3", read_timeout="2", connect_timeout="1", tls_front="own"
            )

        self.edge = self.thread.run(start())
        self.authority = b"localhost:%d" % self.edge.port

    def stop(self) -> None:
        async def stop() -> None:
            await self.edge.stop()
            if self.origin.server is not None:
                self.origin.server.close()

        try:
            self.thread.run(stop(), 20)
        finally:
            self.thread.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H2Node]:
    running = H2Node(tmp_path_factory.mktemp("fuzz-h2-certs"))
    logger = logging.getLogger("edge")
    logger.addHandler(running.errors)
    try:
        yield running
    finally:
        logger.removeHandler(running.errors)
        running.stop()


def client() -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    return h2.connection.H2Connection(config)


def exchange(node: H2Node, data: bytes) -> tuple[bytes, str]:
    """Connect, send ``data`` (which starts with the preface, or not), read, half-close, read."""
    pipe = TLSPipe(node.edge.port, tls_context(node.ca, ["h2"]))
    try:
        assert pipe.alpn == "h2"
        if not pipe.send(data):
            return pipe.read_until_closed()
        first, how = pipe.read_for(IDLE)
        if how != "open":
            return first, how
        pipe.half_close()
        rest, how = pipe.read_until_closed()
        return first + rest, how
    finally:
        pipe.close()


def still_serves(node: H2Node) -> None:
    """A clean GET /ok on a new connection: 200 and the body."""
    pipe = TLSPipe(node.edge.port, tls_context(node.ca, ["h2"]))
    try:
        conn = client()
        conn.initiate_connection()
        conn.send_headers(1, get(node, b"/ok"), end_stream=True)
        pipe.send(conn.data_to_send())
        status, body = None, b""
        end = time.monotonic() + IO_BOUND
        while time.monotonic() < end:
            data, how = pipe.read_some(end - time.monotonic())
            assert how == "open", f"the node closed the clean GET's connection ({how})"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    assert (status, body) == (b"200", OK_BODY)
                    return
            pipe.send(conn.data_to_send())
        raise Hang("the clean GET did not end")
    finally:
        pipe.close()


def check(node: H2Node, data: bytes) -> None:
    node.errors.records.clear()
    node.thread.loop_errors.clear()
    received, how = exchange(node, data)
    frames = h2_frames(received, complete=how in ("eof", "close_notify"))
    heads = h2_responses(frames)
    statuses = {stream: fields[0][1] for stream, fields in heads.items()}
    assert b"500" not in statuses.values(), (statuses, received[:300])
    assert not node.errors.records, node.errors.text()
    assert not node.thread.loop_errors, node.thread.loop_errors
    still_serves(node)


def get(node: H2Node, path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", node.authority), (b":path", path)]


# -- inputs --------------------------------------------------------------------------------------------

LONG = st.integers(19, 5000).map(lambda n: b"9" * n)
NUMBER = st.one_of(
    st.integers(0, 2**64).map(lambda n: b"%d" % n), LONG, st.sampled_from([b"-1", b"", b" 5", b"1,1"])
)
EXTRA_FIELD = st.one_of(
    st.tuples(st.just(b"content-length"), NUMBER),
    st.tuples(st.just(b"cache-control"), NUMBER.map(lambda n: b"max-age=" + n)),
    st.tuples(
        st.just(b"cache-control"),
        st.sampled_from([b"no-cache", b"only-if-cached", b"max-stale", b"no-store"]),
    ),
    st.tuples(st.just(b"range"), st.sampled_from([b"bytes=0-0", b"bytes=-5", b"bytes=0-1,3-4", b"bytes=x"])),
    st.tuples(st.just(b"range"), NUMBER.map(lambda n: b"bytes=" + n + b"-")),
    st.tuples(st.just(b"accept-encoding"), st.sampled_from([b"gzip", b"br", b"*;q=0", b""])),
    st.tuples(st.just(b"if-none-match"), st.sampled_from([b'"x"', b"*"])),
    st.tuples(st.just(b"te"), st.sampled_from([b"trailers", b"gzip"])),
    st.tuples(
        st.sampled_from([b"connection", b"keep-alive", b"upgrade", b"transfer-encoding"]), st.just(b"x")
    ),
    st.tuples(st.just(b"host"), st.sampled_from([b"localhost", b"other", b"a/b"])),
    st.tuples(
        st.sampled_from([b"X-Upper", b"", b"bad name", b":path", b":protocol", b"a\x00b"]),
        st.binary(max_size=8),
    ),
    st.tuples(st.just(b"x-v"), st.sampled_from([b" lead", b"trail ", b"a\r\nb", b"\x00", b"\xff\xfe"])),
)
METHOD = st.sampled_from(
    [b"GET"] * 6 + [b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PURGE", b"get", b""]
)
PATH = st.sampled_from(
    [b"/ok"] * 4 + [b"/big", b"/missing", b"*", b"", b"ok", b"https://x/ok", b"/" + b"a" * 9000, b"/\x00"]
)


@st.composite
def request_fields(draw: st.DrawFn, authority: bytes) -> list[tuple[bytes, bytes]]:
    fields = [
        (b":method", draw(METHOD)),
        (b":scheme", draw(st.sampled_from([b"https"] * 4 + [b"http", b"ftp", b""]))),
        (b":authority", authority),
        (b":path", draw(PATH)),
    ]
    if draw(st.booleans()):  # drop, repeat or reorder a pseudo-field
        i = draw(st.integers(0, 3))
        action = draw(st.sampled_from(["drop", "repeat", "last"]))
        if action == "drop":
            del fields[i]
        elif action == "repeat":
            fields.append(fields[i])
        else:
            fields.append(fields.pop(i))
    extras = draw(st.lists(EXTRA_FIELD, max_size=4))
    place = draw(st.integers(0, len(fields)))
    return fields[:place] + extras + fields[place:] if draw(st.booleans()) else fields + extras


ACTION = st.one_of(
    st.tuples(
        st.just("request"), st.booleans(), st.binary(max_size=40), st.booleans()
    ),  # end at headers, body, trailers
    st.tuples(st.just("ping"), st.binary(min_size=8, max_size=8), st.none(), st.none()),
    st.tuples(st.just("window"), st.integers(1, 2**31 - 1), st.sampled_from([0, 1, 3, 99]), st.none()),
    st.tuples(st.just("reset"), st.sampled_from([1, 3, 5, 7, 99]), st.integers(0, 15), st.none()),
    st.tuples(
        st.just("settings"),
        st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x99]),
        st.integers(0, 2**32 - 1),
        st.none(),
    ),
    st.tuples(st.just("goaway"), st.integers(0, 15), st.none(), st.none()),
)


@st.composite
def h2_session(draw: st.DrawFn, authority: bytes) -> bytes:
    """Preface, SETTINGS and what the drawn actions make the h2 client send."""
    conn = client()
    conn.initiate_connection()
    stream = 1
    for action, a, b, c in draw(st.lists(ACTION, min_size=1, max_size=5)):
        with contextlib.suppress(h2.exceptions.H2Error, ValueError, KeyError, AttributeError):
            if action == "request":
                fields = draw(request_fields(authority))
                conn.send_headers(stream, fields, end_stream=a and not b)
                if b:
                    conn.send_data(stream, b, end_stream=not c)
                    if c:
                        conn.send_headers(stream, [(b"x-trailer", b"1")], end_stream=True)
                stream += 2
            elif action == "ping":
                conn.ping(a)
            elif action == "window":
                conn.increment_flow_control_window(a, stream_id=b or None)
            elif action == "reset":
                conn.reset_stream(a, b)
            elif action == "settings":
                conn.update_settings({a: b})
            elif action == "goaway":
                conn.close_connection(a)
    return conn.data_to_send()


def frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


RAW_FRAME = st.builds(
    frame,
    kind=st.sampled_from(list(range(11))) | st.integers(0, 255),
    flags=st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0xFF]),
    stream=st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1, 2**32 - 1]),
    payload=st.binary(max_size=48),
    length=st.none() | st.integers(0, 2**24 - 1),
)
EMPTY_SETTINGS = frame(0x4, 0, 0, b"")


# -- tests -------------------------------------------------------------------------------------------------


def test_a_clean_get_is_served(node: H2Node) -> None:
    still_serves(node)
    still_serves(node)


@seeded
@fuzz_settings(60)
@given(data=st.data())
# A 5,000-digit Content-Length: h2 takes it for a connection error (GOAWAY); the node must
# close cleanly and keep serving (a 30-digit one gets 413 from the front's own rules).
@example(data=None)
def test_h2_sessions(node: H2Node, data: st.DataObject | None) -> None:
    if data is None:
        conn = client()
        conn.initiate_connection()
        conn.send_headers(1, [*get(node, b"/ok"), (b"content-length", b"9" * 5000)], end_stream=True)
        check(node, conn.data_to_send())
        return
    check(node, data.draw(h2_session(node.authority)))


@seeded
@fuzz_settings(60)
@given(data=st.data(), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_h2_sessions(
    node: H2Node, data: st.DataObject, mutations: list[tuple[str, int, object]]
) -> None:
    session = data.draw(h2_session(node.authority))
    check(node, session[: len(PREFACE)] + mutate(session[len(PREFACE) :], mutations))


@seeded
@fuzz_settings(60)
@given(
    frames=st.lists(RAW_FRAME, max_size=6),
    preface=st.sampled_from([PREFACE] * 5 + [b"PRI * HTTP/2.0\r\n\r\n", b""]),
)
def test_raw_frames(node: H2Node, frames: list[bytes], preface: bytes) -> None:
    check(node, preface + EMPTY_SETTINGS + b"".join(frames))
