"""The front a worker serves its sibling workers on: HTTP/1.1 over a private Unix socket.

A node's workers share one cache the way tiers do: the worker that owns a key (by
rendezvous over the workers) fetches it for the node, and the others ask it over this
socket. It is the HTTP/1.1 front with three differences:

- the client, the scheme and the HTTP version come from ``Edge-Internal``
  (``edge.http.internal``), which only a sibling can send here: the socket lives in a
  directory only the node's user can open; a request without a valid one gets 400;
- every request takes the full path (no memoised hit heads for siblings);
- the answer leaves without the fields this node adds for its clients: its own
  Cache-Status member, X-Cache and its Via (the asking worker adds them once for the
  node), so a client never sees one node twice.
"""

from __future__ import annotations

from edge.config import Config
from edge.core import EdgeCore
from edge.fronts.h1 import H1Protocol, H1Sink
from edge.fronts.request import Refusal, RequestRules
from edge.http.fields import Headers
from edge.http.internal import INTERNAL_FIELD, parse_internal
from edge.http.message import Request

__all__ = ["SiblingProtocol"]


class SiblingSink(H1Sink):
    """An HTTP/1.1 sink that leaves out the node's own fields.

    It always frames as HTTP/1.1 (Content-Length or chunked), whatever version the client
    behind the asking worker speaks: a body of unknown length must never be delimited by
    closing the socket, or a cut-off body would read as complete on the other side.
    """

    __slots__ = ()

    proto: SiblingProtocol

    def __init__(self, proto: H1Protocol, req: Request, keep_alive: bool) -> None:
        super().__init__(proto, req, keep_alive)
        self.wire = "1.1"

    def start(self, status: int, reason: bytes, headers: Headers, length: int | None) -> None:
        super().start(status, reason, self.proto.without_own_fields(headers), length)


class SiblingProtocol(H1Protocol):
    """One connection from a sibling worker."""

    sink_class = SiblingSink

    def __init__(self, core: EdgeCore, config: Config) -> None:
        super().__init__(core, config)
        self.clients = None  # a sibling worker: the client was counted where it connected
        self.tunnels = False  # a WebSocket never goes through a sibling worker
        self.requests = None  # counted and logged by the worker the client asked
        self.extra_fields = b""  # no Alt-Svc: the asking worker speaks to the client
        self.replays = None  # every request takes the full path here
        self.rules = {scheme: RequestRules(config, scheme) for scheme in (b"http", b"https")}
        self.finish = self._finish_internal
        own = core.cache_name
        self.own_status = (own, own + b";")
        self.own_via = core.via

    def _try_hit(self, req: Request, keep_alive: bool) -> bool:
        return False

    def _finish_internal(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        fields: dict[bytes, bytes],
        host: bytes | None,
        client: str,
        http_version: str,
        host_from: str = "Host field",
    ) -> Request:
        internal = fields.pop(INTERNAL_FIELD, None)
        said = parse_internal(internal) if internal is not None else None
        if said is None and method == b"OPTIONS" and target == b"*":
            said = ("", b"http", http_version)  # a health probe (OPTIONS * Max-Forwards: 0): answered here
        if said is None:
            raise Refusal(400, "a sibling request needs a valid Edge-Internal field")
        client, scheme, http_version = said
        headers = [(k, v) for k, v in headers if k.lower() != INTERNAL_FIELD]
        return self.rules[scheme].finish(
            method, target, headers, fields, host, client, http_version, host_from
        )

    def without_own_fields(self, headers: Headers) -> Headers:
        """``headers`` less this node's Cache-Status member, X-Cache and Via."""
        out: Headers = []
        for name, value in headers:
            lname = name.lower()
            if lname == b"x-cache":
                continue
            if lname == b"cache-status" and (
                value == self.own_status[0] or value.startswith(self.own_status[1])
            ):
                continue
            if lname == b"via" and value == self.own_via:
                continue
            out.append((name, value))
        return out
