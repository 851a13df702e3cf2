"""ACME HTTP-01 challenges (RFC 8555 §8.3) answered by the node itself.

While an ACME order is being validated, the CA fetches
``http://DOMAIN/.well-known/acme-challenge/TOKEN`` from the cleartext listener and expects
the key authorization as the body. ``edge.wiring.acme`` puts the token here before it tells
the CA to validate and takes it out once the order is done.

Guarantees:
- the fresh-hit path never looks here: :meth:`EdgeCore.serve` (the slow path) consults the
  store first, and only while it holds a token (one truth test otherwise); a challenge
  token is new and random for every order, so no stored response answers it on a fast hit;
- only a token in the store is answered (200, ``text/plain``, never stored); any other
  path, under the prefix too, goes on to the cache as before;
- tokens are added and removed on the event loop (the ACME thread hands them over).
"""

from __future__ import annotations

from edge.core.sink import ResponseSink
from edge.http.dates import format_http_date
from edge.http.message import Request

__all__ = ["PREFIX", "Challenges"]

PREFIX = b"/.well-known/acme-challenge/"


class Challenges:
    """Tokens of the ACME orders under way and their key authorizations."""

    def __init__(self) -> None:
        self.tokens: dict[bytes, bytes] = {}
        """The full request target (``PREFIX`` + token) → key authorization."""
        self.answered = 0
        """Challenge requests answered (for tests and logs)."""

    def add(self, token: str, key_authorization: str) -> None:
        self.tokens[PREFIX + token.encode()] = key_authorization.encode()

    def remove(self, token: str) -> None:
        self.tokens.pop(PREFIX + token.encode(), None)

    async def answer(self, req: Request, sink: ResponseSink, now: float) -> bool:
        """Answer ``req`` when it asks for a token in the store; False leaves it to the cache."""
        body = self.tokens.get(req.target)
        if body is None or req.method not in (b"GET", b"HEAD"):
            return False
        headers = [
            (b"Content-Type", b"text/plain"),
            (b"Cache-Control", b"no-store"),
            (b"Date", format_http_date(now)),
        ]
        sink.start(200, b"OK", headers, len(body))
        if req.method == b"GET":
            await sink.write(body)
        sink.end()
        self.answered += 1
        return True
