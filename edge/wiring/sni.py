"""Several certificates on one TLS listener, chosen by the name the client asks for (SNI).

Each certificate is indexed by the DNS names of its subjectAltName: an exact name, or a
``*.`` wildcard covering one more label (``*.example.com`` covers ``a.example.com``, not
``example.com`` nor ``a.b.example.com``). An exact name wins over a wildcard; a name two
certificates share goes to the first given; a name none covers, and a client sending no
SNI (an IP address), get the first certificate, the default.

The TLS listener keeps one ``ssl.SSLContext`` (the default certificate's; the transports
are handed it once) and one more context per other certificate. During the handshake
OpenSSL's servername callback switches the connection to the chosen context
(``SSL_set_SSL_CTX``, as nginx and HAProxy do). Python's own ``SSLContext.sni_callback``
cannot be used: it finds the connection's Python object through the ``SSL``'s app data,
which aiofastnet's direct engine (the default TLS transport, its own ``SSL_new``) does not
set, and the interpreter crashes on it. So the callback is registered on the context's
``SSL_CTX`` through ctypes (libssl as the ``_ssl`` module links it), and it works the same
under aiofastnet's direct engine, its stdlib fallback and asyncio's transport. The
``SSL_CTX`` pointer is read from the ``SSLContext`` object the way aiofastnet reads it
(the field after the object header), checked against ``SSLContext.options`` first; where
that check or the libssl lookup fails, the listener serves its default certificate to
every name and says so once.

A reload (SIGHUP, a new ACME certificate) builds new contexts for the other certificates
and loads the default chain into the listener's context in place: new handshakes get the
new set, open connections keep what they shook hands with (OpenSSL counts the references).
"""

from __future__ import annotations

import ctypes
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

__all__ = ["NameTable", "TlsCertificates", "cert_names"]

log = logging.getLogger("edge.tls")


def cert_names(pem_chain: bytes) -> frozenset[str]:
    """The DNS names of the leaf's subjectAltName (lower case); empty when it has none."""
    leaf = x509.load_pem_x509_certificate(pem_chain)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName))


class NameTable:
    """Server name → index of the certificate that covers it (0, the default, for the rest)."""

    def __init__(self, names: Sequence[Iterable[str]]) -> None:
        self.exact: dict[str, int] = {}
        self.wild: dict[str, int] = {}
        for index, covered in enumerate(names):
            for name in covered:
                if name.startswith("*."):
                    self.wild.setdefault(name[2:], index)
                else:
                    self.exact.setdefault(name, index)

    def index(self, server_name: str | None) -> int:
        if not server_name:
            return 0
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is not None:
            return found
        _, dot, parent = name.partition(".")
        return self.wild.get(parent, 0) if dot else 0


@dataclass(frozen=True)
class Pair:
    """One certificate as the listeners load it."""

    cert: Path
    key: Path
    names: frozenset[str]


# -- libssl through ctypes ------------------------------------------------------------------

_SERVERNAME_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
SSL_CTRL_SET_TLSEXT_SERVERNAME_CB = 53
TLSEXT_NAMETYPE_HOST_NAME = 0
SSL_TLSEXT_ERR_OK = 0


class _LibSsl:
    def __init__(self) -> None:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # dlsym looks in its libssl too
        self.get_servername = lib.SSL_get_servername
        self.get_servername.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.get_servername.restype = ctypes.c_char_p
        self.set_ssl_ctx = lib.SSL_set_SSL_CTX
        self.set_ssl_ctx.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.set_ssl_ctx.restype = ctypes.c_void_p
        self.callback_ctrl = lib.SSL_CTX_callback_ctrl
        self.callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, _SERVERNAME_CB]
        self.callback_ctrl.restype = ctypes.c_long
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64

    def ctx_pointer(self, ctx: ssl.SSLContext) -> int:
        """The ``SSL_CTX*`` of ``ctx`` (CPython's PySSLContext: the object header, then it)."""
        pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not pointer or self.get_options(pointer) != ctx.options:
            raise RuntimeError("cannot find the SSL_CTX of an ssl.SSLContext in this Python")
        return pointer


_libssl: _LibSsl | None = None
_libssl_error: str = ""


def _load_libssl() -> _LibSsl | None:
    global _libssl, _libssl_error
    if _libssl is None and not _libssl_error:
        try:
            _libssl = _LibSsl()
        except (OSError, AttributeError, ImportError) as exc:
            _libssl_error = str(exc)
    return _libssl


class TlsCertificates:
    """The TLS listener's context and the certificates it switches to by SNI."""

    def __init__(self, make_context: Callable[[str, str], ssl.SSLContext], pairs: Sequence[Pair]) -> None:
        """``make_context(cert, key)``: a server context like the listener's (ALPN, versions)."""
        self.make_context = make_context
        self.context = make_context(str(pairs[0].cert), str(pairs[0].key))
        """The listener's context: the default certificate's."""
        self._state: tuple[NameTable, list[int], list[ssl.SSLContext]] = (NameTable([]), [0], [])
        self._retired: list[Any] = []
        self._callback: Any = None
        self.unavailable = ""
        """Why certificates past the first are not chosen by SNI here (empty: they are)."""
        self.chosen = 0
        """Handshakes switched to a certificate other than the default."""
        self.install(pairs, first_loaded=True)

    def install(self, pairs: Sequence[Pair], first_loaded: bool = False) -> None:
        """Serve ``pairs`` to new handshakes (the first is the default). Every pair must load
        (the caller checked); a failure here leaves what served before."""
        others = [self.make_context(str(p.cert), str(p.key)) for p in pairs[1:]]
        pointers = [0]
        if others and self._hook():
            lib = _libssl
            assert lib is not None
            pointers += [lib.ctx_pointer(ctx) for ctx in others]
        if not first_loaded:
            self.context.load_cert_chain(str(pairs[0].cert), str(pairs[0].key))
        self._retired = [self._state, *self._retired][:4]  # contexts a handshake may still hold
        self._state = (NameTable([p.names for p in pairs]), pointers, others)

    def select(self, server_name: str | None) -> int:
        """The index of the certificate a client asking for ``server_name`` gets."""
        table, pointers, _ = self._state
        index = table.index(server_name)
        return index if index < len(pointers) else 0

    def _hook(self) -> bool:
        """Register the servername callback on the listener's context (once)."""
        if self._callback is not None:
            return True
        if self.unavailable:
            return False
        lib = _load_libssl()
        try:
            if lib is None:
                raise RuntimeError(f"libssl not found: {_libssl_error}")
            pointer = lib.ctx_pointer(self.context)
        except RuntimeError as exc:
            self.unavailable = str(exc)
            log.warning("several certificates, but every TLS client gets the first: %s", exc)
            return False

        def servername(ssl_ptr: int | None, _alert: int | None, _arg: int | None) -> int:
            try:
                raw = lib.get_servername(ssl_ptr, TLSEXT_NAMETYPE_HOST_NAME)
                if raw:
                    table, pointers, _ = self._state
                    index = table.index(raw.decode("ascii", "replace"))
                    if 0 < index < len(pointers):
                        lib.set_ssl_ctx(ssl_ptr, pointers[index])
                        self.chosen += 1
            except Exception:  # a callback must not raise into OpenSSL: the default serves
                log.exception("choosing a certificate by SNI failed")
            return SSL_TLSEXT_ERR_OK

        self._callback = _SERVERNAME_CB(servername)
        # OpenSSL holds only the callback's address: it must live as long as the context the
        # listener serves with, whoever else keeps this object.
        self.context._edge_certificates = self  # type: ignore[attr-defined]
        lib.callback_ctrl(pointer, SSL_CTRL_SET_TLSEXT_SERVERNAME_CB, self._callback)
        return True
