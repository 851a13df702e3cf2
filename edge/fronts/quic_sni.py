"""HTTP/3: several certificates on one QUIC listener, chosen by the ClientHello's server name.

Neither QUIC library has a server-side SNI hook. Both run the TLS 1.3 handshake in Python
(qh3: ``qh3.tls.Context``, its cryptography in Rust; aioquic: ``aioquic.tls.Context``); a
connection copies the certificate, chain and key from its ``QuicConfiguration`` into its
TLS context when that context is made (at the first Initial), and reads them first in
``Context._server_handle_hello``, after the ClientHello is parsed. So, per connection,
this wraps that method on the connection's own TLS context (made by qh3's
``QuicConnection._create_tls`` / aioquic's ``QuicConnection._initialize``, wrapped on the
instance): it parses the ClientHello once more with the library's ``pull_client_hello``,
rewinds the buffer, sets the chosen certificate on the context, then lets the library go
on (signature algorithms follow the chosen key). These are private names: :func:`support`
checks that they exist at start, and where one is missing the listener serves its default
certificate to every name and says so (``QuicCertificates.unavailable``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QuicCertificates", "choose_by_sni", "support"]

log = logging.getLogger("edge.h3")


def support(backend: str) -> tuple[Any, str]:
    """The backend's ``pull_client_hello`` and "" when the hook points exist, else None and why."""
    tls = importlib.import_module(f"{backend}.tls")
    connection = importlib.import_module(f"{backend}.quic.connection").QuicConnection
    maker = "_create_tls" if backend == "qh3" else "_initialize"
    missing = [
        name
        for name, where in (
            ("tls.pull_client_hello", tls),
            ("tls.Context._server_handle_hello", getattr(tls, "Context", None)),
            (f"QuicConnection.{maker}", connection),
        )
        if not hasattr(where, name.rsplit(".", 1)[-1])
    ]
    if missing:
        return None, f"{backend} has no {', '.join(missing)}"
    return tls.pull_client_hello, ""


@dataclass
class QuicCertificates:
    """The certificates of one QUIC listener past its default one (index 0), by name."""

    backend: str
    table: Any = None
    """``index(server_name) -> int`` (``edge.wiring.sni.NameTable``); None: one certificate."""
    loaded: list[Any] = field(default_factory=list)
    """(certificate, chain, private key) in the library's types, per index; None at 0."""
    unavailable: str = ""
    chosen: int = 0
    """Handshakes given a certificate other than the default."""
    pull_client_hello: Any = None

    def __post_init__(self) -> None:
        self.pull_client_hello, self.unavailable = support(self.backend)

    def set(self, configuration_class: Any, table: Any, pairs: Sequence[tuple[str, str]]) -> None:
        """Load ``pairs`` (cert, key) past the first; raises what the library raises."""
        loaded: list[Any] = [None]
        for cert, key in pairs[1:]:
            qc = configuration_class(is_client=False)
            qc.load_cert_chain(cert, key)
            loaded.append((qc.certificate, qc.certificate_chain, qc.private_key))
        if len(loaded) > 1 and self.unavailable:
            log.warning("several certificates, but every HTTP/3 client gets the first: %s", self.unavailable)
        self.table, self.loaded = (table, loaded) if len(loaded) > 1 else (None, [])

    def wanted(self) -> bool:
        return self.table is not None and not self.unavailable


def choose_by_sni(quic: Any, certs: QuicCertificates) -> None:
    """Make the connection ``quic`` (not yet started) take its certificate from ``certs``."""

    def hook(tls: Any) -> None:
        original = tls._server_handle_hello

        def server_handle_hello(input_buf: Any, *rest: Any) -> Any:
            table, loaded = certs.table, certs.loaded
            if table is not None:
                start = input_buf.tell()
                try:
                    name = certs.pull_client_hello(input_buf).server_name
                except Exception:  # the library's own parse below answers a bad ClientHello
                    name = None
                input_buf.seek(start)
                index = table.index(name)
                if 0 < index < len(loaded):
                    tls.certificate, tls.certificate_chain, tls.certificate_private_key = loaded[index]
                    certs.chosen += 1
            return original(input_buf, *rest)

        tls._server_handle_hello = server_handle_hello

    if certs.backend == "qh3":
        create = quic._create_tls

        def create_tls(*args: Any, **kwargs: Any) -> Any:
            bridge = create(*args, **kwargs)
            hook(bridge.tls)
            return bridge

        quic._create_tls = create_tls
    else:
        initialize = quic._initialize

        def initialize_tls(*args: Any, **kwargs: Any) -> None:
            initialize(*args, **kwargs)
            hook(quic.tls)

        quic._initialize = initialize_tls
