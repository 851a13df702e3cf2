"""Raw bytes into a real HTTP/1.1 front on loopback: the node answers well or closes, and keeps serving.

One edge (``tests/support/nodes.start_edge``, the cleartext front on httptools) in front of a
scripted origin, on a loop of its own (``tests/fuzz/support.py``), lives through every
example. Each example opens a connection, sends its bytes and reads what comes; once the node has been
silent for 0.1 s with the connection open (a keep-alive, or a request it waits to see the
rest of), the client half-closes and reads until the node closes. Then:

- what arrived parses as a sequence of well-formed HTTP/1.1 responses (status line, field
  lines, framing by Content-Length or chunked, nothing after the last one); a reset may cut
  the last one short, nothing else;
- the node closed within :data:`~tests.fuzz.support.IO_BOUND` seconds (no hang);
- no response is a 500 and nothing was logged at ERROR by the node: an input that reaches
  ``serve_guarded``'s or the front's "a bug answers 500" path is a bug;
- a clean ``GET /ok`` on a new connection still gets the cached 200.

Inputs: arbitrary bytes, and valid requests (one to three, pipelined; methods, targets,
versions, Host forms, framing, conditional, range, cache and coding fields, long numerals)
put through byte-level mutations (flips, cuts, insertions, duplicated spans, CRLF → LF).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.support import (
    ErrorRecords,
    NodeThread,
    fuzz_settings,
    h1_responses,
    read_then_half_close,
    read_until_closed,
    seeded,
    send_all,
)
from tests.support.nodes import Edge, start_edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = pytest.mark.timeout(180)

OK_BODY = b"fuzz ok\n" * 16
CACHEABLE = [("Cache-Control", "public, max-age=3600"), ("Content-Type", "text/plain")]


class H1Node:
    def __init__(self) -> None:
        self.thread = NodeThread()
        self.origin = ScriptedOrigin()
        self.errors = ErrorRecords()

        async def start() -> Edge:
            await self.origin.start()
            self.origin.routes["/ok"] = fixed(200, OK_BODY, CACHEABLE)
            self.origin.routes["/big"] = fixed(200, bytes(range(256)) * 512, CACHEABLE)
            return await start_edge(self.origin.url, read_timeout="2", connect_timeout="1")

        self.edge = self.thread.run(start())

    def stop(self) -> None:
        async def stop() -> None:
            self.edge.server.close()
            await self.edge.core.aclose()
            if self.origin.server is not None:
                self.origin.server.close()

        try:
            self.thread.run(stop(), 15)
        finally:
            self.thread.stop()


@pytest.fixture(scope="module")
def node() -> Iterator[H1Node]:
    import logging

    running = H1Node()
    logger = logging.getLogger("edge")
    logger.addHandler(running.errors)
    try:
        yield running
    finally:
        logger.removeHandler(running.errors)
        running.stop()


def exchange(port: int, data: bytes) -> tuple[bytes, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if not send_all(sock, data):
            return read_until_closed(sock)
        return read_then_half_close(sock)


def still_serves(node: H1Node) -> None:
    request = b"GET /ok HTTP/1.1\r\nHost: fuzz.test\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", node.edge.port), timeout=5) as sock:
        send_all(sock, request)
        data, how = read_until_closed(sock)
    responses = h1_responses(data, complete=True)
    assert [r[0] for r in responses] == [200], (how, data[:300])
    assert responses[0][2] == OK_BODY


def check(node: H1Node, data: bytes) -> None:
    node.errors.records.clear()
    node.thread.loop_errors.clear()
    received, how = exchange(node.edge.port, data)
    responses = h1_responses(received, complete=how == "eof")
    statuses = [status for status, _, _ in responses]
    assert 500 not in statuses, (statuses, received[:500])
    assert not node.errors.records, node.errors.text()
    assert not node.thread.loop_errors, node.thread.loop_errors
    still_serves(node)


# -- inputs ----------------------------------------------------------------------------------------

LONG = st.integers(19, 5000).map(lambda n: "9" * n)
NUMBER = st.one_of(
    st.integers(0, 2**64).map(str),
    LONG,
    st.sampled_from(["-1", "+5", "0x10", "1e3", " 7", "", "00000000000000000000001"]),
)
# Weighted towards requests the core serves (a valid method, target, version and Host),
# so the rules behind the front are reached; the mutation test takes care of the rest.
METHOD = st.sampled_from(
    ["GET"] * 8 + ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE", "BREW", "get", "CONNECT", "TRACE"]
)
TARGET = st.sampled_from(
    ["/ok"] * 6
    + ["/ok?x=1", "/big", "/big", "/missing", "*", "http://fuzz.test/ok", "https://fuzz.test/ok", "//ok"]
    + ["/%2e%2e/ok", "/ok#f", "fuzz.test:80", "/" + "a" * 9000]
)
ODD_TARGET = st.text(alphabet="/abc%?#=&.:@ \x00\x7f\u00e9", max_size=30)
VERSION = st.sampled_from(
    ["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/11", "http/1.1", ""]
)
HOST = st.sampled_from(
    ["fuzz.test", "FUZZ.test:80", "fuzz.test:8080", "[::1]", "a/b", "", "fuzz.test, other", "x@y", "é.test"]
)
VALID_FIELD = st.one_of(
    st.tuples(
        st.just("Range"),
        st.one_of(
            st.sampled_from(["bytes=0-0", "bytes=-5", "bytes=5-", "bytes=0-1,3-4", "bytes=9-1", "items=0-1"]),
            NUMBER.map(lambda n: f"bytes={n}-{n}"),
        ),
    ),
    st.tuples(
        st.just("If-Range"), st.sampled_from(['"x"', 'W/"x"', "Sun, 06 Nov 1994 08:49:37 GMT", "garbage"])
    ),
    st.tuples(st.just("If-None-Match"), st.sampled_from(['"x"', "*", 'W/"x", "y"', ""])),
    st.tuples(
        st.just("If-Modified-Since"),
        st.sampled_from(["Sun, 06 Nov 1994 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "yesterday"]),
    ),
    st.tuples(
        st.just("Cache-Control"),
        st.one_of(
            st.sampled_from(
                ["no-cache", "only-if-cached", "max-age=0", "no-store", "max-stale", "min-fresh=5"]
            ),
            NUMBER.map(lambda n: f"max-age={n}"),
            NUMBER.map(lambda n: f"max-stale={n}, min-fresh={n}"),
        ),
    ),
    st.tuples(st.just("Pragma"), st.just("no-cache")),
    st.tuples(
        st.just("Accept-Encoding"),
        st.sampled_from(["gzip", "br;q=0.5, *;q=0", "identity;q=0", "zstd;q=abc", ""]),
    ),
    st.tuples(
        st.just("Connection"),
        st.sampled_from(["close", "keep-alive", "upgrade", "Upgrade, HTTP2-Settings", "te, close"]),
    ),
    st.tuples(st.just("Upgrade"), st.sampled_from(["h2c", "websocket"])),
    st.tuples(st.just("Expect"), st.sampled_from(["100-continue", "nonsense"])),
    st.tuples(st.just("X-Forwarded-Proto"), st.sampled_from(["https", "gopher"])),
    st.tuples(st.just("Edge-Internal"), st.just("client=1.2.3.4; scheme=https; version=2")),
    st.tuples(st.just("CDN-Loop"), st.sampled_from(["edge", "x, y"])),
)
ODD_FIELD = st.one_of(
    st.tuples(st.just("Host"), HOST),
    st.tuples(st.just("Content-Length"), NUMBER),
    st.tuples(
        st.just("Transfer-Encoding"),
        st.sampled_from(["chunked", "gzip, chunked", "chunked, gzip", "identity", "Chunked", ""]),
    ),
    st.tuples(
        st.text(alphabet="abcXYZ-_ :()", min_size=0, max_size=8),
        st.text(alphabet="ab \t\x00\x7f\u00e9", max_size=10),
    ),
)
FIELD = st.one_of(VALID_FIELD, VALID_FIELD, VALID_FIELD, ODD_FIELD)


@st.composite
def request(draw: st.DrawFn) -> bytes:
    method, version = draw(METHOD), draw(VERSION)
    target = draw(ODD_TARGET) if draw(st.integers(0, 9)) == 9 else draw(TARGET)
    line = f"{method} {target} {version}".rstrip() if version else f"{method} {target}"
    fields = draw(st.lists(FIELD, max_size=6))
    if not draw(st.booleans()):  # a valid Host unless drawn otherwise: most requests reach the core
        fields.insert(0, ("Host", "fuzz.test"))
    body = b""
    if draw(st.booleans()):  # a body, framed right (the mutations and odd fields frame it wrong)
        body = draw(st.binary(max_size=64))
        if draw(st.booleans()):
            fields.append(("Transfer-Encoding", "chunked"))
            body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
        else:
            fields.append(("Content-Length", str(len(body))))
    head = line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    return head.encode("utf-8", "surrogateescape") + body


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("repeat"), st.integers(0, 10**6), st.integers(1, 40)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("lf"), st.just(0), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, where, arg in mutations:
        at = where % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[at % len(buf)] ^= int(arg)  # type: ignore[call-overload]
        elif kind == "cut":
            del buf[at : at + int(arg)]  # type: ignore[call-overload]
        elif kind == "insert":
            buf[at:at] = arg  # type: ignore[assignment]
        elif kind == "repeat":
            buf[at:at] = buf[at : at + int(arg)]  # type: ignore[call-overload]
        elif kind == "truncate":
            del buf[at:]
        elif kind == "lf":
            buf = bytearray(bytes(buf).replace(b"\r\n", b"\n"))
    return bytes(buf)


# -- tests -------------------------------------------------------------------------------------------------


def test_a_clean_get_is_served(node: H1Node) -> None:
    still_serves(node)
    still_serves(node)  # the second is a hit


@seeded
@fuzz_settings(100)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes(node: H1Node, data: bytes) -> None:
    check(node, data)


@seeded
@fuzz_settings(100)
@given(requests=st.lists(request(), min_size=1, max_size=3))
# Found by test_fuzz_parsers: int() refused the 5,000-digit delta and the core answered 500.
@example(
    requests=[b"GET /ok HTTP/1.1\r\nHost: fuzz.test\r\nCache-Control: max-age=" + b"9" * 5000 + b"\r\n\r\n"]
)
@example(
    requests=[
        b"GET /ok HTTP/1.1\r\nHost: fuzz.test\r\nCache-Control: min-fresh=" + b"0" * 5000 + b"1\r\n\r\n"
    ]
)
def test_valid_requests_with_odd_fields(node: H1Node, requests: list[bytes]) -> None:
    check(node, b"".join(requests))


@seeded
@fuzz_settings(150)
@given(
    requests=st.lists(request(), min_size=1, max_size=3), mutations=st.lists(MUTATION, min_size=1, max_size=4)
)
def test_mutated_requests(
    node: H1Node, requests: list[bytes], mutations: list[tuple[str, int, object]]
) -> None:
    check(node, mutate(b"".join(requests), mutations))
