"""Run the admin app under Hypercorn in the caller's event loop.

The admin API shares the node's loop (and so its ``EdgeCore``) rather than a
thread or process: the store is not thread-safe, and one loop means a purge
sees exactly what the next request will see.
"""

from __future__ import annotations

import asyncio
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from edge.admin.app import create_admin_app
from edge.admin.node import NodeOps
from edge.config import parse_listen
from edge.core import EdgeCore

__all__ = ["bind_admin", "serve_admin"]


def bind_admin(listen: str) -> socket.socket:
    """Bind the admin socket; raises OSError with the OS's reason (busy port, bad address)."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


async def serve_admin(
    node: NodeOps | EdgeCore,
    listen: str,
    token: str,
    shutdown: asyncio.Event,
    sock: socket.socket | None = None,
    peers: list[str] | None = None,
    draining: asyncio.Event | None = None,
) -> None:
    """Serve the admin API on ``listen`` until ``shutdown`` is set.

    /readyz turns 503 as soon as ``draining`` (or ``shutdown``) is set, so a load
    balancer stops sending traffic while connections drain; the API itself stops at
    ``shutdown``. Pass ``sock`` (from
    :func:`bind_admin`) to bind early and report a busy port before startup
    finishes; otherwise the address is bound here and OSError propagates.
    """
    if sock is None:
        sock = bind_admin(listen)
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 2.0
    leaving = draining or shutdown
    app = create_admin_app(node, token, ready=lambda: not leaving.is_set(), peers=peers)
    # Starlette's ASGI types are looser than Hypercorn's Framework union; the app is plain ASGI 3.
    await serve(app, config, shutdown_trigger=shutdown.wait, mode="asgi")  # type: ignore[arg-type]
