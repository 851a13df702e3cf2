"""SIGHUP: read the configuration again and apply what a running worker can change in place.

What a reload applies (``edge.config.RELOADABLE``): upstream and shields with their
health settings and timeouts, the Host sent upstream, the default TTL rules, the log
level, and the certificate files, every one of them (own TLS front and HTTP/3, each
chosen by SNI as at start: ``edge.wiring.sni``); it also reopens a file
access log (logrotate). No listener is closed and no connection dropped: requests
already sent upstream finish on the upstream they chose, open TLS and QUIC connections
keep the certificate they shook hands with, and new ones get the new one.

Guarantees:
- a configuration that does not load (bad TOML, a bad value) or a certificate that does
  not load changes nothing of what it concerns: the node keeps serving with what it had
  (every certificate: one bad pair of several keeps the whole previous set), and says why
  on stderr;
- a changed setting a running node cannot apply (listeners, workers, cache size, ...) is
  named on stderr as waiting for a restart, never half-applied;
- each worker of a node reloads itself: the first worker passes SIGHUP to the others.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.config import RELOADABLE, Config, ConfigError, ConfigSource, settings
from edge.core import EdgeCore
from edge.wiring.accesslog import AccessLog
from edge.wiring.sni import NameTable, TlsCertificates
from edge.wiring.tls import Certificate

__all__ = ["Reloader", "configure_logging", "install_certificates"]

FILLED_AT_START = frozenset({"node_id", "alt_svc"})
"""Settings the node fills in when it starts (a re-read file leaves them empty)."""

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure_logging(level: str) -> None:
    """The node's own log (``edge.*``) at ``level`` on stderr; called at start and on reload."""
    logger = logging.getLogger("edge")
    logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        logger.addHandler(handler)


def _say(message: str) -> None:
    """One line on stderr in one write: the workers of a node share it, and a line written
    in pieces (print writes the text and the newline apart) can interleave with another's."""
    sys.stderr.flush()
    os.write(2, f"edge: {message}\n".encode())


def install_certificates(tls: TlsCertificates | None, quic: Any, certs: list[Certificate]) -> None:
    """Load certificates (the default first) into the running TLS listener and QUIC listener
    (``QuicListener``): new handshakes get the one their SNI name asks for, open connections
    keep theirs. The caller has checked that every pair loads (``check_loads``)."""
    if tls is not None:
        tls.install([c.pair() for c in certs])
    if quic is not None:
        pairs = [(str(c.cert), str(c.key)) for c in certs]
        quic.load_certificates(NameTable([c.names for c in certs]), pairs)


@dataclass
class Reloader:
    """One worker's reloadable parts and the configuration it runs with."""

    core: EdgeCore
    config: Config
    source: ConfigSource | None
    worker: int | None = None
    tls: TlsCertificates | None = None
    """The own TLS front's context and the other certificates it chooses by SNI."""
    quic: Any = None
    """The worker's QuicListener, when HTTP/3 runs."""
    access: AccessLog | None = None
    others: Callable[[], None] | None = None
    """Passes the signal on to the node's other workers (set in the first worker)."""
    reloads: int = field(default=0)

    def __call__(self) -> None:
        """The SIGHUP handler."""
        if self.others is not None:
            self.others()
        self.reload()

    def reload(self) -> bool:
        """Re-read and apply; False when nothing could be re-read."""
        who = f"worker {self.worker}" if self.worker is not None else f"pid {os.getpid()}"
        if self.access is not None:
            self.access.reopen()
        if self.source is None:
            _say(f"reload ({who}): no configuration file or flags to re-read; access log reopened")
            return False
        try:
            new = self.source.load()
        except ConfigError as exc:
            _say(f"reload ({who}) refused, still serving the previous configuration: {exc}")
            return False
        changed = [
            f.name
            for f in settings()
            if f.name not in FILLED_AT_START and getattr(new, f.name) != getattr(self.config, f.name)
        ]
        waiting = [name for name in changed if name not in RELOADABLE]
        if waiting:
            _say(f"reload ({who}): {', '.join(waiting)} changed; applied at the next restart")
        if {"cert", "key"} & set(changed) or self.tls is not None or self.quic is not None:
            self._reload_certificate(new, who)
        self.core.reload(new)
        configure_logging(new.log_level)
        for name in RELOADABLE:
            setattr(self.config, name, getattr(new, name))
        self.reloads += 1
        applied = [name for name in changed if name in RELOADABLE]
        _say(f"reloaded ({who}): {', '.join(applied) if applied else 'nothing changed'}")
        return True

    def _reload_certificate(self, new: Config, who: str) -> None:
        """Load the (re-read) certificate files into the running listeners, if all of them load."""
        if self.tls is None and self.quic is None:
            return
        from edge.wiring.tls import check_loads, resolve_certificates

        try:
            certs = resolve_certificates(new)
            if not certs:
                return
            check_loads(certs)
            install_certificates(self.tls, self.quic, certs)
        except (ConfigError, ssl.SSLError, OSError, ValueError) as exc:
            _say(f"reload ({who}): certificate not reloaded, still serving the previous one: {exc}")
