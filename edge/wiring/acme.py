"""Automatic HTTPS: the node's certificates from an ACME CA (RFC 8555), renewed before expiry.

``edge serve --acme-domain example.com,www.example.com --acme-domain example.org
--acme-email ops@example.com`` orders one certificate per group of names (``--acme-domain``
given once per group; ``;`` between groups in one value), each naming its group's domains
(subjectAltName), proves control of each name with HTTP-01 answered on the cleartext
listener (``edge.core.challenges``), and loads every group's current certificate into the
running TLS and QUIC listeners (``edge.wiring.reload.install_certificates``, the SIGHUP
path), where each handshake gets the one its SNI name asks for (``edge.wiring.sni``; the
first group's for any other name), with no restart. Each group is ordered, renewed and
retried on its own (one :class:`AcmeManager` task per group), under one account. The ACME
protocol is the ``acme`` library's (certbot project); its blocking calls run in daemon
threads, never on the event loop.

State (per CA: a directory named after the directory URL's host and a hash of the URL):

    $XDG_STATE_HOME/edge-cdn/acme/HOST-HASH/account-key.pem     the account's key
    $XDG_STATE_HOME/edge-cdn/acme/HOST-HASH/FIRST-NAME/cert.pem  the chain, leaf first
    $XDG_STATE_HOME/edge-cdn/acme/HOST-HASH/FIRST-NAME/key.pem   its key (EC P-256)
    $XDG_STATE_HOME/edge-cdn/acme/bootstrap/                     the temporary certificate

(``~/.local/state`` without ``XDG_STATE_HOME``); directories 0700, files 0600, written
atomically under a lock.

Guarantees:
- the node starts before any certificate exists: TLS and QUIC serve a temporary one from a
  local CA (``edge.wiring.devcert``) to a group's names until its first order completes; a
  certificate already in the state directory that names every domain of its group and has
  not expired is served at once;
- one group's failed order changes nothing that serves: the other groups' certificates,
  and its own previous one (or the temporary one), stay;
- renewal starts at two thirds of the certificate's lifetime; a failed order is logged on
  stderr with the CA's reason and retried after ``acme_retry`` seconds, doubling up to an
  hour, while the certificate in hand (or the temporary one) keeps serving;
- a new certificate replaces the old one only once it is on disk and loads;
- with ``--workers N`` the first worker orders (one order per node, not per worker) and
  writes each token into the node's private run directory, where the other workers answer
  it too (``Challenges.share``); they look at the certificate files every
  ``FOLLOW_EVERY`` seconds and load new ones the same way (``follow_certificate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from edge.config import Config, acme_groups
from edge.core import EdgeCore
from edge.wiring.devcert import default_cert_dir, ensure_dev_cert

__all__ = ["AcmeManager", "AcmePaths", "current_certificates", "follow_certificate", "order_certificate"]

RENEW_AT = 2 / 3
"""Renewal starts at this fraction of a certificate's lifetime (Let's Encrypt's advice)."""
MAX_RETRY = 3600.0
"""Longest wait between failed orders."""
ORDER_TIMEOUT = 90.0
"""Seconds an order may take to validate and be issued before it counts as failed."""
LONGEST_SLEEP = 3600.0
"""The renewal loop wakes at least this often to look at the certificate again."""
FOLLOW_EVERY = 2.0
"""Seconds between two looks at the certificate file by the workers that do not order."""

T = TypeVar("T")


def _say(message: str) -> None:
    print(f"edge: acme: {message}", file=sys.stderr, flush=True)


def acme_root() -> Path:
    """``$XDG_STATE_HOME/edge-cdn/acme`` (beside the dev CA's ``certs``)."""
    return default_cert_dir().parent / "acme"


@dataclass(frozen=True)
class AcmePaths:
    """Where one CA's account and one certificate (the configured names) live."""

    names: tuple[str, ...]
    ca: Path
    """The CA's directory: the account key, one folder per certificate."""

    @classmethod
    def all(cls, config: Config) -> list[AcmePaths]:
        """One per group of ``acme_domain``, in order (the first is the default certificate)."""
        url = config.acme_directory
        host = urlsplit(url).hostname or "ca"
        digest = hashlib.sha256(url.encode()).hexdigest()[:8]
        return [cls(names, acme_root() / f"{host}-{digest}") for names in acme_groups(config.acme_domain)]

    @property
    def account_key(self) -> Path:
        return self.ca / "account-key.pem"

    @property
    def cert(self) -> Path:
        return self.ca / self.names[0] / "cert.pem"

    @property
    def key(self) -> Path:
        return self.ca / self.names[0] / "key.pem"


@dataclass(frozen=True)
class Issued:
    """What the node needs to know of a certificate it holds."""

    names: frozenset[str]
    not_before: float
    not_after: float
    serial: int

    @property
    def renew_at(self) -> float:
        return self.not_before + RENEW_AT * (self.not_after - self.not_before)

    def serves(self, names: tuple[str, ...], now: float) -> bool:
        """Names every configured domain and has not expired."""
        return set(names) <= self.names and now < self.not_after


def read_issued(path: Path) -> Issued | None:
    """The leaf of a PEM chain, or None when there is none (or it does not parse)."""
    try:
        leaf = x509.load_pem_x509_certificate(path.read_bytes())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    return Issued(
        frozenset(name.lower() for name in san.get_values_for_type(x509.DNSName)),
        leaf.not_valid_before_utc.timestamp(),
        leaf.not_valid_after_utc.timestamp(),
        leaf.serial_number,
    )


def current_certificates(config: Config) -> list[tuple[Path, Path, bool, tuple[str, ...]]]:
    """Per group, the chain and key to serve now to its names (fourth item): the ACME
    certificate when one names every domain of the group and has not expired, else the
    temporary one (third item True)."""
    found = []
    for paths in AcmePaths.all(config):
        issued = read_issued(paths.cert)
        if issued is not None and paths.key.exists() and issued.serves(paths.names, time.time()):
            found.append((paths.cert, paths.key, False, paths.names))
        else:
            boot = ensure_dev_cert(acme_root() / "bootstrap")
            found.append((boot.cert, boot.key, True, paths.names))
    return found


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


@contextlib.contextmanager
def _locked(ca: Path) -> Iterator[None]:
    """The CA directory's lock (``.lock``, 0600): one writer of its files at a time."""
    fd = os.open(ca / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, mode 0600."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class AcmeError(Exception):
    """An order did not produce a certificate; the message is the CA's reason where known."""


def _account_key(path: Path) -> rsa.RSAPrivateKey:
    """The account's key, made (RSA 2048) and kept on first use."""
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
        if isinstance(loaded, rsa.RSAPrivateKey):
            return loaded
    except (OSError, ValueError):
        pass
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(path, _pem_key(key))
    return key


def _failure(exc: BaseException) -> str:
    """The CA's own words for a failed order."""
    from acme import errors, messages

    if isinstance(exc, errors.ValidationError):
        reasons = []
        for authzr in exc.failed_authzrs:
            name = authzr.body.identifier.value
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    reasons.append(f"{name}: {challb.error.typ.rsplit(':', 1)[-1]}: {challb.error.detail}")
        return "validation failed: " + ("; ".join(reasons) or "no reason given")
    if isinstance(exc, messages.Error):
        return f"{exc.typ.rsplit(':', 1)[-1]}: {exc.detail}"
    if isinstance(exc, errors.TimeoutError):
        return f"not validated within {ORDER_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}"


def order_certificate(
    config: Config,
    paths: AcmePaths,
    publish: Callable[[str, str], None],
    withdraw: Callable[[str], None],
) -> Issued:
    """One ACME order for ``paths.names`` (blocking: run it in a thread).

    Registers the account (or finds it again by its key), orders, answers each name's HTTP-01
    challenge through ``publish`` (token, key authorization) and ``withdraw``, finalizes
    with a new EC P-256 key and writes key and chain to ``paths``. Raises AcmeError.
    """
    import josepy as jose
    from acme import challenges as acme_challenges
    from acme import client, crypto_util, errors, messages

    _private_dir(paths.ca.parent)
    _private_dir(paths.ca)
    _private_dir(paths.cert.parent)
    with _locked(paths.ca):
        account_key = _account_key(paths.account_key)
    verify: Any = config.acme_ca_bundle or True  # requests takes a CA bundle path as `verify`
    jwk = jose.JWKRSA(key=account_key)  # type: ignore[attr-defined]
    net = client.ClientNetwork(jwk, user_agent="edge-cdn", verify_ssl=verify)
    tokens: list[str] = []
    try:
        directory = client.ClientV2.get_directory(config.acme_directory, net)
        acme = client.ClientV2(directory, net)
        contact = messages.NewRegistration.from_data(
            email=config.acme_email or None, terms_of_service_agreed=True
        )
        try:
            acme.new_account(contact)
        except errors.ConflictError as known:  # this key's account exists: use it
            acme.query_registration(
                messages.RegistrationResource(uri=known.location, body=messages.Registration())
            )
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = _pem_key(key)
        order = acme.new_order(crypto_util.make_csr(key_pem, list(paths.names)))
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # the CA still holds a valid authorization for this name
            challb = next(
                (c for c in authzr.body.challenges if isinstance(c.chall, acme_challenges.HTTP01)), None
            )
            if challb is None:
                raise AcmeError(f"the CA offers no http-01 challenge for {authzr.body.identifier.value}")
            response, validation = challb.response_and_validation(net.key)
            token = challb.chall.encode("token")
            publish(token, validation)
            tokens.append(token)
            acme.answer_challenge(challb, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        order = acme.poll_and_finalize(order, deadline)
    except AcmeError:
        raise
    except Exception as exc:  # the library's errors, the CA's problem documents, the network's
        raise AcmeError(_failure(exc)) from exc
    finally:
        for token in tokens:
            withdraw(token)
    chain = order.fullchain_pem.encode()
    with _locked(paths.ca):
        _write_private(paths.key, key_pem)
        _write_private(paths.cert, chain)
    issued = read_issued(paths.cert)
    if issued is None:
        raise AcmeError(f"the CA's chain in {paths.cert} does not parse")
    return issued


def _in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` in a daemon thread (a shutdown never waits for an order under way)."""
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: the node is gone
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="edge-acme", daemon=True).start()
    return done


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AcmeManager:
    """One group's certificate: ordered when missing, renewed when due, hot-swapped."""

    def __init__(
        self,
        config: Config,
        core: EdgeCore,
        install: Callable[[], None],
        shared: Path | None = None,
        paths: AcmePaths | None = None,
    ) -> None:
        """``install()`` loads every group's current certificate into the running TLS and QUIC
        listeners; ``shared``: the directory the node's other workers read challenge tokens
        from; ``paths``: the group's (the first group's when None)."""
        self.config = config
        self.core = core
        self.install = install
        self.shared = shared
        self.paths = paths if paths is not None else AcmePaths.all(config)[0]
        self.issued = 0
        """Certificates this node obtained since it started."""
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: order when no usable certificate is held or renewal is due."""
        loop = asyncio.get_running_loop()
        names = ", ".join(self.paths.names)
        retry = self.config.acme_retry
        told: int | None = None
        while not stop.is_set():
            now = time.time()
            held = read_issued(self.paths.cert)
            if held is not None and held.serves(self.paths.names, now) and now < held.renew_at:
                if told != held.serial:
                    _say(
                        f"certificate for {names} valid until {_utc(held.not_after)}; "
                        f"renewal from {_utc(held.renew_at)}"
                    )
                    told = held.serial
                if await _wait(stop, min(held.renew_at - now, LONGEST_SLEEP)):
                    return
                continue
            why = "renewal due" if held is not None and held.serves(self.paths.names, now) else "none held"
            _say(f"ordering a certificate for {names} from {self.config.acme_directory} ({why})")
            started = time.monotonic()
            try:
                issued = await _until(stop, _in_thread(loop, lambda: self._order(loop)))
            except Exception as exc:  # an AcmeError, or the disk, a lock, the loop: retried alike
                self.failures += 1
                serving = "the previous certificate" if held is not None else "the temporary certificate"
                _say(f"order for {names} failed: {exc}; still serving {serving}; next try in {retry:g} s")
                if await _wait(stop, retry):
                    return
                retry = min(retry * 2, MAX_RETRY)
                continue
            if issued is None:  # stopped while the order was under way
                return
            retry = self.config.acme_retry
            while True:  # the certificate is on disk: loading it is retried, not the order
                try:
                    self.install()
                    break
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    self.failures += 1
                    _say(f"certificate for {names} obtained but not loaded: {exc}; next load in {retry:g} s")
                    if await _wait(stop, retry):
                        return
                    retry = min(retry * 2, MAX_RETRY)
            retry = self.config.acme_retry
            self.issued += 1
            _say(
                f"certificate for {names} issued in {time.monotonic() - started:.1f} s "
                f"(serial {issued.serial:x}, valid until {_utc(issued.not_after)}); "
                f"serving it on new connections"
            )

    def _order(self, loop: asyncio.AbstractEventLoop) -> Issued:
        """In the ACME thread: one order, tokens handed to the core on its loop."""
        challenges = self.core.challenges

        def on_loop(fn: Callable[[], None]) -> None:
            done: Future[None] = Future()

            def call() -> None:
                try:
                    fn()
                finally:
                    done.set_result(None)

            loop.call_soon_threadsafe(call)
            done.result(timeout=10)

        shared = self.shared

        def publish(token: str, key_authorization: str) -> None:
            if shared is not None:
                _private_dir(shared)
                _write_private(shared / token, key_authorization.encode())
            on_loop(lambda: challenges.add(token, key_authorization))

        def withdraw(token: str) -> None:
            on_loop(lambda: challenges.remove(token))
            if shared is not None:
                with contextlib.suppress(OSError):
                    (shared / token).unlink()

        return order_certificate(self.config, self.paths, publish, withdraw)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


async def follow_certificate(
    config: Config, install: Callable[[], None], stop: asyncio.Event, worker: int
) -> None:
    """A worker that does not order: load each new certificate the first worker writes."""
    groups = AcmePaths.all(config)
    seen = [_stamp(paths.cert) for paths in groups]  # what this worker started with
    while not await _wait(stop, FOLLOW_EVERY):
        stamps = [_stamp(paths.cert) for paths in groups]
        new = [
            (n, issued)
            for n, paths in enumerate(groups)
            if stamps[n] is not None and stamps[n] != seen[n]
            and (issued := read_issued(paths.cert)) is not None and issued.serves(paths.names, time.time())
        ]  # fmt: skip
        if not new:
            continue
        try:
            install()
        except (OSError, ValueError):  # caught between the key's write and the chain's: next look
            continue
        for n, issued in new:
            seen[n] = stamps[n]
            _say(
                f"worker {worker}: serving the new certificate for {', '.join(groups[n].names)} "
                f"(serial {issued.serial:x}) on new connections"
            )


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; True when stopped."""
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def _until(stop: asyncio.Event, work: asyncio.Future[T]) -> T | None:
    """The result of ``work``, or None once ``stop`` is set first."""
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if work.done():
        return work.result()
    return None
