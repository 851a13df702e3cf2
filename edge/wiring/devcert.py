"""Development certificates the way mkcert makes them: a local CA and a leaf it signs.

Why a CA and not one self-signed certificate: several QUIC/TLS stacks (and
Chromium's certificate verifier) refuse a self-signed certificate that is
both CA and leaf, while a leaf signed by a local CA is accepted once the CA
or the leaf's public key is trusted. Browsers are told to trust the leaf by
its SPKI hash (``--ignore-certificate-errors-spki-list``), so nothing is
installed system-wide.

Guarantees:
- files live in a per-user state directory (``$XDG_STATE_HOME/edge-cdn/certs``
  or ``~/.local/state/edge-cdn/certs``), never in the repository;
- private keys are written mode 0600, every file atomically, under a lock,
  so concurrent first runs never pair one run's certificate with another's key;
- an existing CA is reused; the leaf is reissued when missing, expiring
  within a week, or not covering ``localhost``, ``127.0.0.1`` and ``::1``.
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DevCert", "default_cert_dir", "ensure_dev_cert", "spki_hash"]

DNS_NAMES = ("localhost",)
IP_NAMES = ("127.0.0.1", "::1")
LEAF_DAYS = 365
"""Below the 398-day limit browsers put on leaf certificates."""
CA_DAYS = 10 * 365
RENEW_BEFORE = datetime.timedelta(days=7)


@dataclass(frozen=True)
class DevCert:
    """Paths of a development certificate and its trust anchor."""

    cert: Path
    """PEM: the leaf followed by the CA (the chain a server sends)."""
    key: Path
    """PEM: the leaf's private key (PKCS#8)."""
    ca: Path
    """PEM: the local CA certificate, for clients that verify (``verify=ca``)."""
    spki: str
    """Base64 SHA-256 of the leaf's SubjectPublicKeyInfo, for Chromium's SPKI list."""


def default_cert_dir() -> Path:
    """``$XDG_STATE_HOME/edge-cdn/certs`` or ``~/.local/state/edge-cdn/certs``."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "edge-cdn" / "certs"


def spki_hash(cert_pem: bytes) -> str:
    """Base64 SHA-256 of the first certificate's SubjectPublicKeyInfo (what Chromium pins)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-cdn development CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"edge-cdn dev CA {os.getuid()}@{os.uname().nodename}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IP_NAMES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _leaf_ok(path: Path, ca: x509.Certificate, now: datetime.datetime) -> bool:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return False
    leaf = certs[0]
    if leaf.issuer != ca.subject or leaf.not_valid_after_utc - RENEW_BEFORE < now:
        return False
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(DNS_NAMES) <= set(san.get_values_for_type(x509.DNSName)) and set(IP_NAMES) <= ips


def ensure_dev_cert(directory: Path | None = None) -> DevCert:
    """Create (or reuse) the local CA and a leaf for localhost, 127.0.0.1 and ::1."""
    directory = directory or default_cert_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    now = datetime.datetime.now(datetime.UTC)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ca: x509.Certificate | None = None
        ca_key: ec.EllipticCurvePrivateKey | None = None
        try:
            ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
            ca_key = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
            if ca.not_valid_after_utc - RENEW_BEFORE < now:
                ca = None
        except (OSError, ValueError):
            ca = None
        if ca is None or ca_key is None:
            ca, ca_key = _make_ca(now)
            _write(ca_key_path, _key_pem(ca_key), private=True)
            _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), private=False)
        if not (key_path.exists() and _leaf_ok(cert_path, ca, now)):
            leaf, leaf_key = _make_leaf(ca, ca_key, now)
            _write(key_path, _key_pem(leaf_key), private=True)
            pem = serialization.Encoding.PEM
            chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
            _write(cert_path, chain, private=False)
    return DevCert(cert_path, key_path, ca_path, spki_hash(cert_path.read_bytes()))
