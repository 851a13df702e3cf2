"""The admin API: purge, stats, health, readiness and Prometheus metrics.

It runs on its own port (loopback by default), never the public one, so a
client of the cache can never reach it through the cache.

Rules this module guarantees:

- ``/purge``, ``/stats`` and ``/metrics`` need ``Authorization: Bearer <token>``;
  the token is compared with :func:`hmac.compare_digest` so its content does
  not leak through timing. Missing or wrong → 401 with ``WWW-Authenticate:
  Bearer``. When the node has no token configured every protected route
  answers 403: an empty token must never mean "open".
- ``/healthz`` (the process answers) and ``/readyz`` (it should get traffic)
  need no token, so orchestrator probes do not carry secrets.
- a purge body that is not one of the documented JSON shapes is a 400 that
  says what is wrong, never a partial purge.
- purges run on the event loop, between requests: the store is not
  thread-safe, and the prefix/tag scans are O(n) (see ``edge.cache.purge``).
- the app talks to the node only through :class:`edge.admin.node.NodeOps` (purge and
  stats), so a node of several workers answers for all of them.
"""

from __future__ import annotations

import hmac
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from edge.admin.metrics import METRICS_CONTENT_TYPE, exposition
from edge.admin.node import LocalNode, NodeOps
from edge.admin.peers import purge_peers
from edge.cache.purge import PURGE_KINDS, PurgeError, PurgeKind, url_keys
from edge.core import EdgeCore

__all__ = ["MAX_PURGE_BODY", "METRICS_CONTENT_TYPE", "create_admin_app"]

MAX_PURGE_BODY = 64 * 1024
"""Largest purge request body accepted (413 beyond); one URL or tag fits easily."""


_REALM = 'Bearer realm="edge-admin"'


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _refusal(request: Request, token: bytes) -> Response | None:
    """None when the request carries the configured token, else the 401/403 to send."""
    if not token:
        return _error(
            403,
            "admin token not configured on this node (set admin_token or EDGE_ADMIN_TOKEN); "
            "protected routes are refused",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(401, "missing bearer token", {"WWW-Authenticate": _REALM})
    if not hmac.compare_digest(given.strip().encode(), token):
        return _error(401, "wrong bearer token", {"WWW-Authenticate": _REALM + ', error="invalid_token"'})
    return None


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_PURGE_BODY:
        raise _BadRequest(413, f"body larger than {MAX_PURGE_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PURGE_BODY:
            raise _BadRequest(413, f"body larger than {MAX_PURGE_BODY} bytes")
    return bytes(body)


def parse_purge(body: bytes) -> tuple[PurgeKind, str, bool, list[str]]:
    """``(kind, argument, soft, seen)`` from a purge body, or :class:`_BadRequest` saying why not.

    ``seen`` lists the ids of the nodes a passed-on purge has already reached
    (``edge.admin.peers``); a purge from an operator has none.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _BadRequest(400, 'body must be a JSON object such as {"url": "http://host/path"}')
    unknown = sorted(set(doc) - {*PURGE_KINDS, "soft", "seen"})
    if unknown:
        raise _BadRequest(400, f"unknown field(s) {', '.join(unknown)}; use url, prefix, tag or all")
    kinds = [k for k in PURGE_KINDS if k in doc]
    if len(kinds) != 1:
        raise _BadRequest(400, "give exactly one of url, prefix, tag or all")
    kind = kinds[0]
    soft = doc.get("soft", False)
    if not isinstance(soft, bool):
        raise _BadRequest(400, "soft must be true or false")
    seen = doc.get("seen", [])
    if not isinstance(seen, list) or not all(isinstance(s, str) for s in seen) or len(seen) > 64:
        raise _BadRequest(400, "seen must be a list of node ids")
    value = doc[kind]
    if kind == "all":
        if value is not True:
            raise _BadRequest(400, 'all must be true ({"all": true})')
        return kind, "", soft, seen
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(400, f"{kind} must be a non-empty string")
    return kind, value, soft, seen


def url_keys_checked(kind: PurgeKind, target: str) -> None:
    """Refuse (PurgeError) a URL or prefix no key could be, before peers are asked to purge it."""
    if kind in ("url", "prefix"):
        url_keys(target)


class _Counters:
    """What the admin API itself did, for /stats and /metrics."""

    def __init__(self) -> None:
        self.purge_requests: Counter[str] = Counter()
        self.purged_objects = 0


def create_admin_app(
    node: NodeOps | EdgeCore,
    token: str,
    ready: Callable[[], bool] | None = None,
    peers: list[str] | None = None,
) -> Starlette:
    """The admin ASGI app for ``node`` (a core stands for a node of one worker).

    ``ready`` says whether /readyz is 200 (default: always). ``peers`` are the admin
    APIs a purge is passed to before this node is purged (``edge.admin.peers``).
    """
    if isinstance(node, EdgeCore):
        node = LocalNode(node)
    ops: NodeOps = node
    secret = token.encode()
    is_ready = ready or (lambda: True)
    counters = _Counters()

    async def purge(request: Request) -> Response:
        refused = _refusal(request, secret)
        if refused is not None:
            return refused
        try:
            kind, arg, soft, seen = parse_purge(await _read_body(request))
            if ops.node_id in seen:
                return JSONResponse({"purged": 0, "soft": soft, "detail": "already purged on this path"})
            url_keys_checked(kind, arg)
            passed_on: list[dict[str, Any]] = []
            if peers:
                body = {kind: True if kind == "all" else arg, "soft": soft, "seen": [*seen, ops.node_id]}
                passed_on = await purge_peers(peers, body, token)
            answer = await ops.purge(kind, arg, soft)
        except _BadRequest as exc:
            return _error(exc.status, exc.reason)
        except PurgeError as exc:
            return _error(400, str(exc))
        counters.purge_requests[kind] += 1
        counters.purged_objects += answer["purged"]
        extra = {"peers": passed_on, "ok": all("error" not in p for p in passed_on)} if peers else {}
        return JSONResponse({**answer, "purged": answer["purged"], "soft": soft, **extra})

    async def stats(request: Request) -> Response:
        refused = _refusal(request, secret)
        if refused is not None:
            return refused
        return JSONResponse(await _stats(ops, counters))

    async def metrics(request: Request) -> Response:
        refused = _refusal(request, secret)
        if refused is not None:
            return refused
        body = exposition(await _stats(ops, counters), counters.purge_requests)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if is_ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready\n", status_code=503)

    return Starlette(
        routes=[
            Route("/purge", purge, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


async def _stats(node: NodeOps, counters: _Counters) -> dict[str, Any]:
    return {
        "name": node.name,
        **(await node.stats()),
        "purge_requests": dict(counters.purge_requests),
        "purged_objects": counters.purged_objects,
    }
