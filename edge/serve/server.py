"""Process-level wiring: the event loop, listeners, workers and shutdown."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable

import uvloop

from edge.config import Config, parse_listen
from edge.core import EdgeCore
from edge.serve.h1 import H1Protocol


class AdminBindError(OSError):
    """The admin port could not be bound; the message names it."""


def bind_tcp(listen: str, reuse_port: bool) -> socket.socket:
    """Bind the public TCP socket; raises OSError with the OS's reason."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def start_h1(core: EdgeCore, config: Config, sock: socket.socket) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: H1Protocol(core, config), sock=sock)


async def serve(
    config: Config,
    sock: socket.socket,
    ready: Callable[[], None] | None = None,
    admin_sock: socket.socket | None = None,
) -> None:
    """Run one worker until SIGINT/SIGTERM; the admin API runs beside it when given a socket."""
    core = EdgeCore(config)
    server = await start_h1(core, config, sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    admin: asyncio.Task[None] | None = None
    if admin_sock is not None:
        from edge.admin.server import serve_admin

        admin = loop.create_task(
            serve_admin(core, config.admin_listen, config.admin_token, stop, sock=admin_sock)
        )
    if ready is not None:
        ready()
    await stop.wait()
    server.close()
    if admin is not None:
        await admin
    await core.aclose()


def _worker(config: Config) -> None:
    sock = bind_tcp(config.listen, reuse_port=True)
    uvloop.run(serve(config, sock))


def run(config: Config, ready: Callable[[], None] | None = None) -> None:
    """Bind first (so a busy port fails loudly), then serve with ``config.workers`` processes.

    The admin API runs in the first process only: each worker has its own
    store, so with ``--workers`` > 1 a purge reaches the first worker's cache.
    """
    reuse = config.workers > 1
    sock = bind_tcp(config.listen, reuse_port=reuse)
    admin_sock = None
    if config.admin_listen:
        from edge.admin.server import bind_admin

        try:
            admin_sock = bind_admin(config.admin_listen)
        except OSError as exc:
            sock.close()
            raise AdminBindError(
                f"cannot listen on {config.admin_listen} (admin): {exc.strerror or exc}"
            ) from None
    if config.workers == 1:
        uvloop.run(serve(config, sock, ready, admin_sock))
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(config,), daemon=True) for _ in range(config.workers - 1)]
    for proc in procs:
        proc.start()
    try:
        uvloop.run(serve(config, sock, ready, admin_sock))
    finally:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=5)
    sys.stdout.flush()
