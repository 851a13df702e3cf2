"""Process-level wiring: the event loop, listeners, workers and shutdown.

Listeners of one node: cleartext HTTP/1.1 (the fast front), HTTPS over TCP
(HTTP/2 and HTTP/1.1 over TLS: our own front or Hypercorn, by ``tls_front``), HTTP/3 over UDP (our adapter on
the QUIC library), and the admin API. TLS and QUIC start only when a
certificate is configured (``--cert/--key`` or ``--dev-cert``).

With ``--workers N`` every process serves cleartext and TLS on shared ports
(SO_REUSEPORT), but QUIC runs in the first process only: with SO_REUSEPORT
the kernel spreads UDP datagrams by address hash, and a connection that
migrates or whose packets hash differently lands in a process that never saw
its Initial packet (pgjones/hypercorn#114). Connection-ID-aware steering
(an eBPF reuseport program) would lift this; until then one QUIC process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import uvloop

from edge.config import Config, ConfigError, parse_listen, parse_listen_list
from edge.core import EdgeCore
from edge.fronts.h1 import H1Protocol
from edge.fronts.h3 import QuicListener
from edge.wiring.tls import Certificate, bind_many


class StartupError(OSError):
    """A listener or certificate could not be set up; the message says which and why."""


class AdminBindError(StartupError):
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


@dataclass
class Secure:
    """The certificate and the bound TLS/QUIC sockets of one process."""

    cert: Certificate
    tls: list[socket.socket] = field(default_factory=list)
    quic: list[socket.socket] = field(default_factory=list)


async def start_secure(
    core: EdgeCore, config: Config, secure: Secure, stop: asyncio.Event
) -> tuple[asyncio.Task[None] | None, QuicListener | None]:
    """Start the TLS front (``tls_front``) on the TLS sockets and the HTTP/3 adapter on the UDP sockets."""
    from edge.fronts.h3 import start_quic
    from edge.wiring.tls import serve_tls

    tls = None
    if secure.tls:
        tls = asyncio.get_running_loop().create_task(serve_tls(core, config, secure.cert, secure.tls, stop))
    quic = None
    if secure.quic:
        quic = await start_quic(core, config, str(secure.cert.cert), str(secure.cert.key), secure.quic)
    return tls, quic


def secure_banner(config: Config, secure: Secure) -> str:
    """Where HTTPS and HTTP/3 listen, and how a browser trusts the certificate."""
    lines = []
    for host, port in parse_listen_list(config.tls_listen) if secure.tls else []:
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"https:  https://{shown}:{port}/ (HTTP/2, HTTP/1.1 over TLS; {config.tls_front} front)")
    for host, port in parse_listen_list(config.quic_listen) if secure.quic else []:
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"h3:     udp {shown}:{port} ({config.quic_backend}); Alt-Svc: {config.alt_svc}")
    kind = "dev certificate (local CA)" if secure.cert.dev else "certificate"
    lines.append(f"cert:   {kind} {secure.cert.cert}")
    lines.append(f"spki:   {secure.cert.spki}  (chromium --ignore-certificate-errors-spki-list=...)")
    return "\n".join(lines)


async def serve(
    config: Config,
    sock: socket.socket,
    ready: Callable[[], None] | None = None,
    admin_sock: socket.socket | None = None,
    secure: Secure | None = None,
) -> None:
    """Run one worker until SIGINT/SIGTERM; the admin API runs beside it when given a socket."""
    core = EdgeCore(config)
    server = await start_h1(core, config, sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tls: asyncio.Task[None] | None = None
    quic: QuicListener | None = None
    if secure is not None:
        tls, quic = await start_secure(core, config, secure, stop)
    admin: asyncio.Task[None] | None = None
    if admin_sock is not None:
        from edge.admin.server import serve_admin

        admin = loop.create_task(
            serve_admin(core, config.admin_listen, config.admin_token, stop, sock=admin_sock)
        )
    if ready is not None:
        ready()
        if secure is not None:
            print(secure_banner(config, secure), flush=True)
    await stop.wait()
    server.close()
    if quic is not None:
        quic.close()
    if tls is not None:
        await tls
    if admin is not None:
        await admin
    await core.aclose()


def _worker(config: Config, cert: Certificate | None) -> None:
    sock = bind_tcp(config.listen, reuse_port=True)
    secure = None
    if cert is not None and config.tls_listen:
        secure = Secure(cert, tls=bind_many(config.tls_listen, socket.SOCK_STREAM, reuse_port=True))
    uvloop.run(serve(config, sock, secure=secure))


def prepare_secure(config: Config) -> Certificate | None:
    """Resolve the certificate (if any listener needs one) and set Alt-Svc when HTTP/3 is on."""
    from edge.wiring.tls import resolve_certificate

    if not (config.tls_listen or config.quic_listen) or not (config.cert or config.dev_cert):
        return None
    try:
        cert = resolve_certificate(config)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    if cert is None:
        return None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert.cert, cert.key)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(f"certificate {cert.cert} / key {cert.key} unusable: {exc}") from None
    quic = parse_listen_list(config.quic_listen)
    if quic and not config.alt_svc:
        config.alt_svc = f'h3=":{quic[0][1]}"; ma=86400'
    return cert


def _bind_secure(config: Config, cert: Certificate, reuse: bool) -> Secure:
    secure = Secure(cert)
    try:
        secure.tls = bind_many(config.tls_listen, socket.SOCK_STREAM, reuse_port=reuse)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.tls_listen} (tls): {exc.strerror or exc}") from None
    try:
        secure.quic = bind_many(config.quic_listen, socket.SOCK_DGRAM, reuse_port=False)
    except OSError as exc:
        for sock in secure.tls:
            sock.close()
        raise StartupError(f"cannot listen on {config.quic_listen} (quic): {exc.strerror or exc}") from None
    return secure


def run(config: Config, ready: Callable[[], None] | None = None) -> None:
    """Bind first (so a busy port fails loudly), then serve with ``config.workers`` processes.

    The admin API runs in the first process only: each worker has its own
    store, so with ``--workers`` > 1 a purge reaches the first worker's cache.
    QUIC also runs in the first process only (see the module docstring).
    """
    reuse = config.workers > 1
    cert = prepare_secure(config)  # before the h1 front is built: it reads config.alt_svc
    sock = bind_tcp(config.listen, reuse_port=reuse)
    secure = None
    if cert is not None:
        try:
            secure = _bind_secure(config, cert, reuse)
        except StartupError:
            sock.close()
            raise
    admin_sock = None
    if config.admin_listen:
        from edge.admin.server import bind_admin

        try:
            admin_sock = bind_admin(config.admin_listen)
        except OSError as exc:
            sock.close()
            for s in (secure.tls + secure.quic) if secure else []:
                s.close()
            raise AdminBindError(
                f"cannot listen on {config.admin_listen} (admin): {exc.strerror or exc}"
            ) from None
    if config.workers == 1:
        uvloop.run(serve(config, sock, ready, admin_sock, secure))
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(config, cert), daemon=True) for _ in range(config.workers - 1)]
    for proc in procs:
        proc.start()
    try:
        uvloop.run(serve(config, sock, ready, admin_sock, secure))
    finally:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=5)
    sys.stdout.flush()
