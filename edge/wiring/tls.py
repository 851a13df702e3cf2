"""Certificates and the HTTPS listener (ALPN h2, http/1.1): our own front or Hypercorn.

``tls_front`` picks what serves it: :mod:`edge.fronts.h2` (uvloop + ssl + h2,
hits answered synchronously) or Hypercorn serving the ASGI adapter.

Hypercorn runs inside the worker's own event loop (uvloop) on sockets the
worker bound itself, so a busy port fails before serving starts, exactly like
the cleartext front, and ``--workers`` shares the TLS port by SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config, ConfigError, parse_listen_list, path_list
from edge.core import EdgeCore
from edge.fronts.asgi import EdgeASGI
from edge.wiring.devcert import ensure_dev_cert, spki_hash
from edge.wiring.sni import Pair, cert_names

__all__ = [
    "Certificate",
    "bind_many",
    "check_loads",
    "resolve_certificate",
    "resolve_certificates",
    "serve_tls",
]


@dataclass(frozen=True)
class Certificate:
    """What the TLS and QUIC listeners load."""

    cert: Path
    key: Path
    spki: str
    """Base64 SHA-256 of the leaf's SubjectPublicKeyInfo (Chromium's SPKI list)."""
    dev: bool
    ca: Path | None = None
    names: frozenset[str] = frozenset()
    """The DNS names of its subjectAltName: the SNI names it is served to."""

    def pair(self) -> Pair:
        return Pair(self.cert, self.key, self.names)


def _from_files(cert: Path, key: Path) -> Certificate:
    try:
        pem = cert.read_bytes()
        key.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read certificate: {exc.filename}: {exc.strerror}") from None
    try:
        spki, names = spki_hash(pem), cert_names(pem)
    except ValueError:
        raise ConfigError(f"{cert} does not hold a PEM certificate") from None
    return Certificate(cert, key, spki, dev=False, names=names)


def resolve_certificates(config: Config) -> list[Certificate]:
    """The certificates to serve, the default first: each ``--cert/--key`` pair, else the dev
    certificate when asked for, else one ACME certificate per ``acme_domain`` group (a
    temporary one for a group until its first is issued), else none."""
    if config.cert:
        pairs = zip(path_list(config.cert), path_list(config.key), strict=True)  # validate() counted them
        return [_from_files(Path(c), Path(k)) for c, k in pairs]
    if config.dev_cert:
        dev = ensure_dev_cert()
        names = cert_names(dev.cert.read_bytes())
        return [Certificate(dev.cert, dev.key, dev.spki, dev=True, ca=dev.ca, names=names)]
    if config.acme_domain:
        from edge.wiring.acme import current_certificates

        found = []
        for chain, private, temporary, group in current_certificates(config):
            pem = chain.read_bytes()
            # The temporary certificate stands in for the group's names until its own is issued.
            found.append(Certificate(chain, private, spki_hash(pem), dev=temporary, names=frozenset(group)))
        return found
    return []


def resolve_certificate(config: Config) -> Certificate | None:
    """The default (first) certificate of :func:`resolve_certificates`, or None."""
    found = resolve_certificates(config)
    return found[0] if found else None


def check_loads(certs: list[Certificate]) -> None:
    """Raise ssl.SSLError / OSError unless every pair loads (chain and matching key)."""
    for cert in certs:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert.cert, cert.key)


def bind_many(listen: str, kind: socket.SocketKind, reuse_port: bool) -> list[socket.socket]:
    """Bind every ``HOST:PORT`` in a comma list; closes what it bound if one fails."""
    socks: list[socket.socket] = []
    try:
        for host, port in parse_listen_list(listen):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, kind)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(1024)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


async def serve_tls(
    core: EdgeCore,
    config: Config,
    cert: Certificate,
    socks: list[socket.socket],
    shutdown: asyncio.Event,
    ctx: ssl.SSLContext | None = None,
    draining: asyncio.Event | None = None,
) -> None:
    """Serve HTTP/2 and HTTP/1.1 over TLS on ``socks`` until ``shutdown`` is set.

    ``tls_front = "own"`` runs :mod:`edge.fronts.h2` (uvloop, ssl, h2) with ``ctx`` (made
    from ``cert`` when None; the caller keeps it to reload the certificate); "hypercorn"
    runs Hypercorn, which makes its own context (no reload: a restart takes a new chain).
    With ``draining`` set the own front stops accepting; Hypercorn stops at ``shutdown``.
    """
    if config.tls_front == "own":
        from edge.fronts.h2 import serve_own_tls, tls_context

        if ctx is None:
            ctx = tls_context(str(cert.cert), str(cert.key))
        await serve_own_tls(core, config, ctx, socks, shutdown, draining)
        return
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HypercornConfig

    hc = HypercornConfig()
    hc.bind = [f"fd://{sock.detach()}" for sock in socks]
    hc.certfile, hc.keyfile = str(cert.cert), str(cert.key)
    hc.alpn_protocols = ["h2", "http/1.1"]
    hc.include_date_header = False  # the core sends the stored Date
    hc.include_server_header = False
    hc.accesslog = None
    hc.errorlog = logging.getLogger("edge.tls")
    hc.keep_alive_timeout = 75.0
    hc.graceful_timeout = 1.0
    hc.h2_max_concurrent_streams = 128
    # Hypercorn closes a connection after 1000 requests by default; browsers and load tools
    # keep one HTTP/2 connection per origin, so that cap would cost a reconnect every 1000.
    hc.keep_alive_max_requests = 1_000_000
    await serve(EdgeASGI(core, config), hc, shutdown_trigger=shutdown.wait, mode="asgi")  # type: ignore[arg-type]
