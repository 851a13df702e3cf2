"""The batch receive path of the qh3 server: which datagrams reach which connection, in order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.fronts.qh3_io import batched_server_class

CID_LEN = 8


class Recorder:
    """A connection's protocol that records what the server hands it."""

    def __init__(self, name: str, log: list[tuple[str, str, list[bytes]]]) -> None:
        self.name = name
        self.log = log

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.log.append((self.name, "one", [data]))

    def datagrams_received(self, data: list[bytes], addr: Any) -> None:
        self.log.append((self.name, "many", list(data)))


class Base:
    """What the batch path needs of qh3's QuicServer: the CID length, the CID map, and the
    per-datagram path (which handles long headers and new connections)."""

    def __init__(self, protocols: dict[bytes, Recorder], log: list[tuple[str, str, list[bytes]]]) -> None:
        self._configuration = type("Conf", (), {"connection_id_length": CID_LEN})()
        self.reported: list[dict[str, Any]] = []
        self._loop = type("Loop", (), {"call_exception_handler": staticmethod(self.reported.append)})()
        self._protocols = protocols
        self.log = log

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.log.append(("server", "one", [data]))


def short(cid: bytes, payload: bytes) -> bytes:
    return bytes([0x40]) + cid + payload


def long_header(payload: bytes) -> bytes:
    return bytes([0xC0]) + payload


@pytest.fixture
def setup() -> tuple[Any, list[tuple[str, str, list[bytes]]]]:
    log: list[tuple[str, str, list[bytes]]] = []
    protocols = {b"A" * CID_LEN: Recorder("a", log), b"B" * CID_LEN: Recorder("b", log)}
    server = batched_server_class(Base)(protocols, log)
    return server, log


def test_runs_per_connection_keep_their_order(setup: tuple[Any, list[Any]]) -> None:
    server, log = setup
    a, b = b"A" * CID_LEN, b"B" * CID_LEN
    grams = [short(a, b"1"), short(a, b"2"), short(a, b"3"), short(b, b"4"), short(a, b"5"), short(a, b"6")]
    server.datagrams_received(grams, ("127.0.0.1", 1))
    assert log == [("a", "many", grams[0:3]), ("b", "one", [grams[3]]), ("a", "many", grams[4:6])]


def test_long_headers_take_the_per_datagram_path_in_place(setup: tuple[Any, list[Any]]) -> None:
    server, log = setup
    a = b"A" * CID_LEN
    hello = long_header(b"initial")
    grams = [short(a, b"1"), hello, short(a, b"2"), short(a, b"3"), b""]
    server.datagrams_received(grams, ("127.0.0.1", 1))
    assert log == [("a", "one", [grams[0]]), ("server", "one", [hello]), ("a", "many", grams[2:4])]


class Failing(Recorder):
    def datagrams_received(self, data: list[bytes], addr: Any) -> None:
        raise RuntimeError("connection broke")


def test_a_failing_connection_does_not_cost_the_others_their_packets() -> None:
    log: list[tuple[str, str, list[bytes]]] = []
    a, b = b"A" * CID_LEN, b"B" * CID_LEN
    server = batched_server_class(Base)({a: Failing("a", log), b: Recorder("b", log)}, log)
    grams = [short(a, b"1"), short(a, b"2"), short(b, b"3"), short(b, b"4")]
    server.datagrams_received(grams, ("127.0.0.1", 1))
    assert log == [("b", "many", grams[2:4])]
    assert [str(c["exception"]) for c in server.reported] == ["connection broke"]


def test_a_failing_handshake_packet_does_not_cost_the_rest_of_the_read() -> None:
    log: list[tuple[str, str, list[bytes]]] = []
    a = b"A" * CID_LEN

    class FailingBase(Base):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            raise ValueError("bad initial")

    server = batched_server_class(FailingBase)({a: Recorder("a", log)}, log)
    grams = [long_header(b"hello"), short(a, b"1"), short(a, b"2")]
    server.datagrams_received(grams, ("127.0.0.1", 1))
    assert log == [("a", "many", grams[1:3])]
    assert [str(c["exception"]) for c in server.reported] == ["bad initial"]


def test_unknown_connection_ids_are_dropped(setup: tuple[Any, list[Any]]) -> None:
    server, log = setup
    a, x = b"A" * CID_LEN, b"X" * CID_LEN
    grams = [short(x, b"1"), short(x, b"2"), short(a, b"3")]
    server.datagrams_received(grams, ("127.0.0.1", 1))
    assert log == [("a", "one", [grams[2]])]


@given(
    st.lists(
        st.one_of(st.sampled_from([0, 1, 2]), st.just("long")),
        max_size=40,
    )
)
def test_every_datagram_is_delivered_once(plan: list[int | str]) -> None:
    """Any mix of connections and long headers: nothing lost, nothing duplicated, order kept."""
    cids = [bytes([65 + i]) * CID_LEN for i in range(3)]
    log: list[tuple[str, str, list[bytes]]] = []
    protocols = {cid: Recorder(cid[:1].decode(), log) for cid in cids}
    server = batched_server_class(Base)(protocols, log)
    grams = [
        long_header(b"%d" % n) if who == "long" else short(cids[int(who)], b"%d" % n)
        for n, who in enumerate(plan)
    ]
    server.datagrams_received(grams, ("127.0.0.1", 1))
    assert [g for _, _, batch in log for g in batch] == grams
    for name, _, batch in log:
        if name != "server":
            assert all(g[1 : 1 + CID_LEN] == name.encode() * CID_LEN for g in batch)
