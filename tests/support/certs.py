"""A throwaway CA issuing server certificates for any names, for the SNI tests."""

from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.wiring.devcert import _make_ca


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    serial: int


class TestCA:
    """A CA in ``directory`` (``ca.pem``) and the leaves it signs."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.now = datetime.datetime.now(datetime.UTC)
        self.ca, self.ca_key = _make_ca(self.now)
        self.pem = directory / "ca.pem"
        self.pem.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, names: list[str], kind: str = "ec") -> Leaf:
        """``stem``.pem / ``stem``.key for DNS ``names`` (an RSA key with ``kind="rsa"``)."""
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        key = (
            rsa.generate_private_key(65537, 2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(hours=1))
            .not_valid_after(self.now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        leaf = Leaf(self.directory / f"{stem}.pem", self.directory / f"{stem}.key", cert.serial_number)
        leaf.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        leaf.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return leaf


def served_serial(port: int, name: str | None, host: str = "127.0.0.1") -> int:
    """The serial of the leaf a new TLS connection gets when asking for ``name`` (not verified;
    None: no SNI at all)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
