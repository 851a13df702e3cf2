"""Process-level wiring: the event loop, listeners, workers and shutdown.

Listeners of one node: cleartext HTTP/1.1 (the fast front), HTTPS over TCP
(HTTP/2 and HTTP/1.1 over TLS: our own front or Hypercorn, by ``tls_front``), HTTP/3 over UDP (our adapter on
the QUIC library), and the admin API. TLS and QUIC start only when a
certificate is configured (``--cert/--key``, ``--dev-cert`` or ``--acme-domain``); with
several certificates each TLS and QUIC handshake gets the one its SNI name asks for
(``edge.wiring.sni``, ``edge.fronts.quic_sni``).

With ``--workers N`` every process serves cleartext, TLS and QUIC on shared ports
(SO_REUSEPORT) and the workers act as one cache (``edge.wiring.workers``): each listens
for its siblings on a private Unix socket, and the first one's admin API answers for
all of them. The kernel spreads UDP datagrams over the workers by a hash of the
client's address and port, so every packet of a QUIC connection reaches the worker
that saw its Initial while the client keeps its address; a client whose address
changes mid-connection (NAT rebinding, migration) lands on a worker that does not
know the connection and must reconnect (pgjones/hypercorn#114; steering by
connection ID would need an eBPF reuseport program).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import uvloop

from edge.config import Config, ConfigError, ConfigSource, parse_listen, parse_listen_list
from edge.core import EdgeCore
from edge.fronts.h1 import LIVE, H1Protocol
from edge.fronts.h3 import QuicListener
from edge.fronts.sibling import SiblingProtocol
from edge.wiring.accesslog import AccessLog
from edge.wiring.reload import Reloader, configure_logging
from edge.wiring.sni import TlsCertificates
from edge.wiring.tls import Certificate, bind_many
from edge.wiring.workers import WorkerPlace, make_run_dir


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
    core.begin()  # the disk tier's index rebuild, while the node serves
    return await loop.create_server(lambda: H1Protocol(core, config), sock=sock)


@dataclass
class Secure:
    """The certificates (the default first) and the bound TLS/QUIC sockets of one process."""

    certs: list[Certificate]
    tls: list[socket.socket] = field(default_factory=list)
    quic: list[socket.socket] = field(default_factory=list)

    @property
    def cert(self) -> Certificate:
        """The default certificate: a name no other covers gets it."""
        return self.certs[0]


async def start_secure(
    core: EdgeCore, config: Config, secure: Secure, stop: asyncio.Event, draining: asyncio.Event | None = None
) -> tuple[asyncio.Task[None] | None, QuicListener | None, TlsCertificates | None]:
    """Start the TLS front (``tls_front``) on the TLS sockets and the HTTP/3 adapter on the UDP
    sockets; also returns the own TLS front's certificates (its context and the others, by
    SNI; None with Hypercorn), for reloads. ``stop`` ends them; ``draining`` closes the TLS
    listeners first (a graceful shutdown)."""
    from edge.fronts.h2 import tls_context
    from edge.fronts.h3 import start_quic
    from edge.wiring.sni import NameTable
    from edge.wiring.tls import serve_tls

    tls = None
    certs = None
    if secure.tls:
        if config.tls_front == "own":
            certs = TlsCertificates(tls_context, [c.pair() for c in secure.certs])
        tls = asyncio.get_running_loop().create_task(
            serve_tls(core, config, secure.cert, secure.tls, stop, certs.context if certs else None, draining)
        )
    quic = None
    if secure.quic:
        pairs = [(str(c.cert), str(c.key)) for c in secure.certs]
        table = NameTable([c.names for c in secure.certs])
        quic = await start_quic(core, config, *pairs[0], secure.quic, table, pairs)
    return tls, quic, certs


def secure_banner(config: Config, secure: Secure) -> str:
    """Where HTTPS and HTTP/3 listen, and how a browser trusts the certificate."""
    lines = []
    for host, port in parse_listen_list(config.tls_listen) if secure.tls else []:
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"https:  https://{shown}:{port}/ (HTTP/2, HTTP/1.1 over TLS; {config.tls_front} front)")
    for host, port in parse_listen_list(config.quic_listen) if secure.quic else []:
        shown = f"[{host}]" if ":" in host else host
        lines.append(f"h3:     udp {shown}:{port} ({config.quic_backend}); Alt-Svc: {config.alt_svc}")
    for n, cert in enumerate(secure.certs):
        kind = "dev certificate (local CA)" if cert.dev else "certificate"
        if config.acme_domain:
            kind = "temporary certificate until ACME issues one:" if cert.dev else "ACME certificate"
        names = ", ".join(sorted(cert.names)) or "no DNS name"
        role = "" if len(secure.certs) == 1 else (" (default)" if n == 0 else "")
        lines.append(f"cert:   {kind} {cert.cert} for {names}{role}")
        lines.append(f"spki:   {cert.spki}  (chromium --ignore-certificate-errors-spki-list=...)")
    return "\n".join(lines)


def bind_unix(path: str) -> socket.socket:
    """A listening Unix stream socket at ``path`` (a stale file from an earlier run is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(
    config: Config,
    sock: socket.socket,
    ready: Callable[[], None] | None = None,
    admin_sock: socket.socket | None = None,
    secure: Secure | None = None,
    place: WorkerPlace | None = None,
    source: ConfigSource | None = None,
    others: Callable[[], None] | None = None,
) -> None:
    """Run one worker until SIGINT/SIGTERM; the admin API runs beside it when given a socket.

    ``place`` says where the worker sits in a node of several: it then serves its
    siblings on its cache socket and the admin API's fan-out on its control socket.
    SIGHUP re-reads ``source`` and applies it (``edge.wiring.reload``); ``others`` passes
    the signal on to the node's other workers.
    """
    from edge.admin.node import LocalNode
    from edge.admin.server import serve_admin

    configure_logging(config.log_level)
    core = EdgeCore(config, siblings=place.siblings() if place is not None else ())
    access = None
    if config.access_log != "off":
        access = AccessLog(config.access_log)
        core.requests.set_access(access, place.index if place is not None else None)
    server = await start_h1(core, config, sock)
    stop = asyncio.Event()
    """Set by SIGTERM/SIGINT: readiness turns 503 and the public listeners close."""
    done = asyncio.Event()
    """Set once in-flight responses finished (or ``shutdown_grace`` ran out): everything stops."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tls: asyncio.Task[None] | None = None
    quic: QuicListener | None = None
    tls_certs = None
    if secure is not None:
        tls, quic, tls_certs = await start_secure(core, config, secure, done, stop)
    reloader = Reloader(
        core, config, source, place.index if place is not None else None, tls_certs, quic, access, others
    )
    loop.add_signal_handler(signal.SIGHUP, reloader)
    tasks: list[asyncio.Task[None]] = []
    if secure is not None and config.acme_domain:
        from edge.wiring.acme import AcmeManager, AcmePaths, follow_certificate
        from edge.wiring.reload import install_certificates
        from edge.wiring.tls import resolve_certificates

        def install() -> None:
            """Every group's certificate as it is on disk now (or its temporary one)."""
            install_certificates(tls_certs, quic, resolve_certificates(config))

        shared = place.run_dir / "acme-challenges" if place is not None else None
        if place is None or place.index == 0:  # one order per node: the first worker's
            for paths in AcmePaths.all(config):  # each group ordered and renewed on its own
                tasks.append(loop.create_task(AcmeManager(config, core, install, shared, paths).run(stop)))
        else:
            assert shared is not None
            core.challenges.share(shared)
            tasks.append(loop.create_task(follow_certificate(config, install, stop, place.index)))
    inner: asyncio.Server | None = None
    listener = quic

    def fronts() -> dict[str, int]:
        return {
            "h3_connections": listener.stats.connections if listener is not None else 0,
            "access_log_dropped": access.dropped if access is not None else 0,
            "reloads": reloader.reloads,
        }

    local = LocalNode(core, place.index if place is not None else 0, fronts)
    if place is not None:
        from edge.wiring.workers import invalidate_on_siblings

        here = place

        def invalidated(keys: list[bytes]) -> None:
            task = loop.create_task(invalidate_on_siblings(here, keys))
            tasks_in_flight.add(task)
            task.add_done_callback(tasks_in_flight.discard)

        tasks_in_flight: set[asyncio.Task[None]] = set()
        core.forwarder.invalidated = invalidated
        cache_sock = bind_unix(place.cache_socket(place.index))
        inner = await loop.create_unix_server(lambda: SiblingProtocol(core, config), sock=cache_sock)
        control_sock = bind_unix(place.control_socket(place.index))
        tasks.append(loop.create_task(serve_admin(local, "", place.control_token, done, sock=control_sock)))
    if admin_sock is not None:
        from edge.wiring.workers import WorkerGroup

        node = WorkerGroup(local, place) if place is not None else local
        tasks.append(
            loop.create_task(
                serve_admin(
                    node,
                    config.admin_listen,
                    config.admin_token,
                    done,
                    sock=admin_sock,
                    peers=config.peer_admins(),
                    draining=stop,
                )
            )
        )
    if ready is not None:
        ready()
        if secure is not None:
            print(secure_banner(config, secure), flush=True)
    await stop.wait()
    if quic is not None:
        quic.stop_accepting()
    await drain(core, server, inner, config.shutdown_grace)
    done.set()
    if quic is not None:
        quic.close()
    if tls is not None:
        await tls
    for task in tasks:
        await task
    await core.aclose()
    if access is not None:
        access.close()


async def drain(core: EdgeCore, server: asyncio.Server, inner: asyncio.Server | None, grace: float) -> None:
    """Graceful shutdown: stop accepting HTTP/1.1, let in-flight responses finish (at most
    ``grace`` seconds in all), then close idle connections once their bytes are out.

    Readiness is already 503 (the admin API reads the stop event). TLS and QUIC keep their
    connections until this returns, then close them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    server.close()
    if inner is not None:
        inner.close()
    await core.drained(grace)
    while loop.time() < deadline:
        if all([proto.close_when_idle() for proto in list(LIVE)]) and not LIVE:
            return
        await asyncio.sleep(0.05)  # a connection finishing its last response: checked until the deadline


def _worker(
    config: Config, certs: list[Certificate] | None, place: WorkerPlace, source: ConfigSource | None
) -> None:
    """A spawned worker: bind the public ports beside the first worker's (SO_REUSEPORT) and serve."""
    _exit_with_parent()
    sock = bind_tcp(config.listen, reuse_port=True)
    secure = None
    if certs:
        secure = Secure(
            certs,
            tls=bind_many(config.tls_listen, socket.SOCK_STREAM, reuse_port=True),
            quic=bind_many(config.quic_listen, socket.SOCK_DGRAM, reuse_port=True),
        )
    uvloop.run(serve(config, sock, secure=secure, place=place, source=source))


def _exit_with_parent() -> None:
    """Linux: get SIGTERM when the first worker dies (even by SIGKILL), so no worker is left
    serving the port on its own. Elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def prepare_secure(config: Config) -> list[Certificate] | None:
    """Resolve the certificates (if any listener needs one; the default first) and set Alt-Svc
    when HTTP/3 is on."""
    from edge.wiring.tls import resolve_certificates

    if not (config.tls_listen or config.quic_listen) or not (
        config.cert or config.dev_cert or config.acme_domain
    ):
        return None
    try:
        certs = resolve_certificates(config)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    if not certs:
        return None
    for cert in certs:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert.cert, cert.key)
        except (ssl.SSLError, OSError) as exc:
            raise StartupError(f"certificate {cert.cert} / key {cert.key} unusable: {exc}") from None
    quic = parse_listen_list(config.quic_listen)
    if quic and not config.alt_svc:
        config.alt_svc = f'h3=":{quic[0][1]}"; ma=86400'
    return certs


def _bind_secure(config: Config, certs: list[Certificate], reuse: bool) -> Secure:
    secure = Secure(certs)
    try:
        secure.tls = bind_many(config.tls_listen, socket.SOCK_STREAM, reuse_port=reuse)
    except OSError as exc:
        raise StartupError(f"cannot listen on {config.tls_listen} (tls): {exc.strerror or exc}") from None
    try:
        secure.quic = bind_many(config.quic_listen, socket.SOCK_DGRAM, reuse_port=reuse)
    except OSError as exc:
        for sock in secure.tls:
            sock.close()
        raise StartupError(f"cannot listen on {config.quic_listen} (quic): {exc.strerror or exc}") from None
    return secure


def run(
    config: Config, ready: Callable[[], None] | None = None, source: ConfigSource | None = None
) -> None:
    """Bind first (so a busy port fails loudly), then serve with ``config.workers`` processes.

    The admin API listens in the first process and answers for every worker
    (``edge.wiring.workers``). The node's id (CDN-Loop) is made here when the config
    gives none, so every worker of the node carries the same one.
    """
    if not config.node_id:
        config.node_id = secrets.token_hex(8)
    with contextlib.suppress(ValueError):  # not the main thread: signals are the caller's
        # Until a worker's loop takes SIGHUP (a reload), the signal must not kill it. An
        # ignored signal stays ignored in the spawned workers too (execve keeps SIG_IGN).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reuse = config.workers > 1
    certs = prepare_secure(config)  # before the h1 front is built: it reads config.alt_svc
    if reuse:
        # SO_REUSEPORT would let this node share a port another node already serves:
        # a plain bind first fails if anything holds it.
        bind_tcp(config.listen, reuse_port=False).close()
    sock = bind_tcp(config.listen, reuse_port=reuse)
    secure = None
    if certs is not None:
        try:
            secure = _bind_secure(config, certs, reuse)
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
        uvloop.run(serve(config, sock, ready, admin_sock, secure, source=source))
        return
    run_dir = make_run_dir()
    token = secrets.token_urlsafe(24)
    places = [WorkerPlace(i, config.workers, run_dir, token) for i in range(config.workers)]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(config, certs, place, source), daemon=True) for place in places[1:]
    ]
    for proc in procs:
        proc.start()

    def others() -> None:
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGHUP)

    try:
        uvloop.run(serve(config, sock, ready, admin_sock, secure, places[0], source, others))
    finally:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=5)
        places[0].remove()
    sys.stdout.flush()
