"""ACME HTTP-01 tokens answered by the core (``edge.core.challenges``), sans-I/O."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.core.challenges import PREFIX, Challenges
from edge.http.fields import Headers
from edge.http.message import Request


class Sink:
    def __init__(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.body = b""

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        self.status, self.headers = status, headers

    async def write(self, data: bytes | memoryview) -> None:
        self.body += bytes(data)

    def end(self) -> None:
        pass


def ask(store: Challenges, target: bytes, method: bytes = b"GET") -> Sink | None:
    req = Request(method, target, [], {}, b"http", b"example.com", "127.0.0.1", "1.1")
    sink = Sink()
    return sink if asyncio.run(store.answer(req, sink, 0.0)) else None  # type: ignore[arg-type]


def test_inactive_until_a_token_is_added_and_again_once_removed() -> None:
    store = Challenges()
    assert not store.active
    store.add("tok_1-A", "tok_1-A.thumb")
    assert store.active
    sink = ask(store, PREFIX + b"tok_1-A")
    assert sink is not None and sink.status == 200 and sink.body == b"tok_1-A.thumb"
    assert (b"Cache-Control", b"no-store") in sink.headers
    head = ask(store, PREFIX + b"tok_1-A", b"HEAD")
    assert head is not None and head.body == b""
    assert ask(store, PREFIX + b"other") is None  # left to the cache
    assert ask(store, PREFIX + b"tok_1-A", b"POST") is None
    store.remove("tok_1-A")
    assert not store.active and ask(store, PREFIX + b"tok_1-A") is None


def test_a_shared_directory_answers_the_tokens_another_worker_wrote(tmp_path: Path) -> None:
    store = Challenges()
    store.share(tmp_path)
    assert store.active
    (tmp_path / "tok2").write_bytes(b"tok2.thumb")
    (tmp_path / "secret").write_bytes(b"not a token")
    sink = ask(store, PREFIX + b"tok2")
    assert sink is not None and sink.body == b"tok2.thumb"
    assert ask(store, PREFIX + b"missing") is None
    assert ask(store, PREFIX + b"../secret") is None  # only base64url names are read
    assert ask(store, PREFIX + b"tok2?x=1") is None
    assert ask(store, b"/tok2") is None
