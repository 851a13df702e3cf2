"""ACME HTTP-01 challenges (RFC 8555 §8.3) answered by the node itself.

While an ACME order is being validated, the CA fetches
``http://DOMAIN/.well-known/acme-challenge/TOKEN`` from the cleartext listener and expects
the key authorization as the body. ``edge.wiring.acme`` puts the token here before it tells
the CA to validate and takes it out once the order is done.

Guarantees:
- the fresh-hit path never looks here: :meth:`EdgeCore.serve` (the slow path) consults the
  store first, and only while it is ``active`` (one truth test otherwise); a challenge
  token is new and random for every order, so no stored response answers it on a fast hit;
- only a token in the store is answered (200, ``text/plain``, never stored); any other
  path, under the prefix too, goes on to the cache as before;
- tokens are added and removed on the event loop (the ACME thread hands them over);
- with ``--workers N`` the first worker orders and also writes each token to a file in the
  node's private run directory; the other workers are ``shared`` on that directory (always
  active: a request under the prefix reads the token's file, any other costs one prefix test).
"""

from __future__ import annotations

import re
from pathlib import Path

from edge.core.sink import ResponseSink
from edge.http.dates import format_http_date
from edge.http.message import Request

__all__ = ["PREFIX", "Challenges"]

PREFIX = b"/.well-known/acme-challenge/"
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,128}")
"""A token is base64url (RFC 8555 §8.1): nothing else is looked up as a file name."""


class Challenges:
    """Tokens of the ACME orders under way and their key authorizations."""

    def __init__(self) -> None:
        self.tokens: dict[bytes, bytes] = {}
        """The full request target (``PREFIX`` + token) → key authorization."""
        self.shared: Path | None = None
        """The directory another worker writes its tokens into (one file per token)."""
        self.active = False
        """Whether :meth:`answer` can find anything: tokens held, or a shared directory."""
        self.answered = 0
        """Challenge requests answered (for tests and logs)."""

    def add(self, token: str, key_authorization: str) -> None:
        self.tokens[PREFIX + token.encode()] = key_authorization.encode()
        self.active = True

    def remove(self, token: str) -> None:
        self.tokens.pop(PREFIX + token.encode(), None)
        self.active = bool(self.tokens) or self.shared is not None

    def share(self, directory: Path) -> None:
        """Answer the tokens another worker of the node writes into ``directory`` too."""
        self.shared = directory
        self.active = True

    def _shared(self, target: bytes) -> bytes | None:
        if self.shared is None or not target.startswith(PREFIX):
            return None
        token = target[len(PREFIX) :]
        if not _TOKEN.fullmatch(token):
            return None
        try:
            return (self.shared / token.decode()).read_bytes()
        except OSError:
            return None

    async def answer(self, req: Request, sink: ResponseSink, now: float) -> bool:
        """Answer ``req`` when it asks for a token in the store; False leaves it to the cache."""
        body = self.tokens.get(req.target)
        if body is None:
            body = self._shared(req.target)
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
