"""Automatic HTTPS against a real ACME CA, offline: Debian's ``pebble`` (Let's Encrypt's test CA)
and ``pebble-challtestsrv`` as its DNS server (the test domain resolves to 127.0.0.1), both
started here on loopback. Pebble validates HTTP-01 on the edge's cleartext port (``httpPort``)
and issues certificates that live ``certificateValidityPeriod`` seconds, so renewal (at two
thirds of the lifetime) happens within the test. A real ``edge serve`` process each time.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from edge.wiring.devcert import ensure_dev_cert
from tests.support.nodes import free_port
from tests.wiring.test_reload import Node

pytestmark = pytest.mark.skipif(
    shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None,
    reason="pebble (Let's Encrypt's test ACME CA) is not installed: apt-get install -y pebble",
)

DOMAIN = "edge-acme.test"


@dataclass
class Pebble:
    directory: str
    ca_bundle: Path
    """Trust anchor of Pebble's own HTTPS (the directory and management ports)."""
    management: int
    dns_management: int

    def root(self) -> bytes:
        """The root that signs the certificates Pebble issues (PEM)."""
        trust = ssl.create_default_context(cafile=str(self.ca_bundle))
        return httpx.get(f"https://127.0.0.1:{self.management}/roots/0", verify=trust).content

    def resolve(self, host: str, address: str | None) -> None:
        """Make the DNS server answer ``host`` with ``address`` (None: the default, 127.0.0.1)."""
        url = f"http://127.0.0.1:{self.dns_management}"
        assert httpx.post(f"{url}/clear-a", json={"host": host + "."}).status_code == 200
        if address is not None:
            resp = httpx.post(f"{url}/add-a", json={"host": host + ".", "addresses": [address]})
            assert resp.status_code == 200


def _wait_https(url: str, ca: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    trust = ssl.create_default_context(cafile=str(ca))
    while time.monotonic() < deadline:
        assert proc.poll() is None, "pebble exited"
        try:
            httpx.get(url, verify=trust, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Callable[[int, int], Pebble]]:
    """Start Pebble validating HTTP-01 on a given port, certificates living a given number of s."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",  # validate at once
        "PEBBLE_AUTHZREUSE": "0",  # every order gets new challenges
        "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce answers
    }

    def start(http_port: int, validity: int) -> Pebble:
        tls = ensure_dev_cert(tmp_path / "pebble-tls")  # Pebble's own HTTPS: localhost, 127.0.0.1
        dns, dns_mgmt, acme, mgmt = free_port(), free_port(), free_port(), free_port()
        log = open(tmp_path / "challtestsrv.log", "wb")  # noqa: SIM115 - kept open for the process
        procs.append(
            subprocess.Popen(
                ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-management", f"127.0.0.1:{dns_mgmt}",
                 "-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
                stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{acme}",
                "managementListenAddress": f"127.0.0.1:{mgmt}",
                "certificate": str(tls.cert),
                "privateKey": str(tls.key),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": validity,
            }
        }
        path = tmp_path / "pebble.json"
        path.write_text(json.dumps(config))
        log = open(tmp_path / "pebble.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["pebble", "-config", str(path), "-dnsserver", f"127.0.0.1:{dns}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        procs.append(proc)
        _wait_https(f"https://127.0.0.1:{acme}/dir", tls.ca, proc)
        return Pebble(f"https://127.0.0.1:{acme}/dir", tls.ca, mgmt, dns_mgmt)

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def served(port: int, name: str = DOMAIN) -> x509.Certificate:
    """The leaf a new TLS connection to the edge gets for SNI ``name`` (not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def fetch(port: int, root: Path, path: str = "/app.js") -> httpx.Response:
    """GET over the edge's TLS port with SNI and Host = the test domain, trusting Pebble's root."""
    ctx = ssl.create_default_context(cafile=str(root))
    with httpx.Client(verify=ctx) as client:
        return client.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"Host": DOMAIN},
            extensions={"sni_hostname": DOMAIN},
        )


def start_edge(tmp_path: Path, site: int, http: int, tls: int, ca: Pebble, *more: str) -> Node:
    return Node(
        ["--upstream", f"http://127.0.0.1:{site}", "--listen", f"127.0.0.1:{http}",
         "--tls-listen", f"127.0.0.1:{tls}", "--admin-listen", "", "--access-log", "off",
         "--acme-domain", DOMAIN, "--acme-email", "ops@edge-acme.test",
         "--acme-directory", ca.directory, "--acme-ca-bundle", str(ca.ca_bundle), *more],
        http,
    )  # fmt: skip


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The edge's per-user state directory (``XDG_STATE_HOME``), under the test's tmp_path."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def test_acme_issues_a_certificate_served_on_the_tls_port(
    pebble: Callable[[int, int], Pebble], site: int, tmp_path: Path, state: Path
) -> None:
    http, tls = free_port(), free_port()
    ca = pebble(http, 3600)
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(ca.root())
    node = start_edge(tmp_path, site, http, tls, ca)
    try:
        before = served(tls)  # the node serves TLS before any certificate was issued
        node.said("ordering a certificate for edge-acme.test")
        issued = node.said("certificate for edge-acme.test issued")
        assert "serving it on new connections" in issued
        if f"serial {before.serial_number:x}" not in issued:  # (unless the order was that fast)
            assert "edge-cdn development CA" in before.issuer.rfc4514_string()  # the temporary one
        resp = fetch(tls, root)  # verified against Pebble's root, for the test domain's name
        assert resp.status_code == 200 and resp.content == b"console.log('x');\n" * 100
        leaf = served(tls)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [DOMAIN]
        assert f"serial {leaf.serial_number:x}" in issued
        files = list((state / "edge-cdn" / "acme").glob("127.0.0.1-*/**/*.pem"))
        assert {f.name for f in files} == {"account-key.pem", "cert.pem", "key.pem"}
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
        node.said("renewal from")
    finally:
        node.stop()
    # A restart serves the certificate in the state directory at once, with no new order.
    node = start_edge(tmp_path, site, http, tls, ca)
    try:
        assert served(tls).serial_number == leaf.serial_number
        assert "valid until" in node.said("certificate for edge-acme.test")
    finally:
        node.stop()


def test_acme_renews_before_expiry_and_new_connections_get_the_new_certificate(
    pebble: Callable[[int, int], Pebble], site: int, tmp_path: Path, state: Path
) -> None:
    http, tls = free_port(), free_port()
    ca = pebble(http, 9)  # renewal due 6 s after issuance
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(ca.root())
    node = start_edge(tmp_path, site, http, tls, ca)
    try:
        node.said("certificate for edge-acme.test issued")
        first = served(tls)
        open_conn = socket.create_connection(("127.0.0.1", tls), timeout=5)
        ctx = ssl.create_default_context(cafile=str(root))
        kept = ctx.wrap_socket(open_conn, server_hostname=DOMAIN)
        assert "renewal due" in node.said("ordering a certificate", timeout=30)
        node.said("certificate for edge-acme.test issued", timeout=30)
        second = served(tls)
        assert second.serial_number != first.serial_number
        assert second.not_valid_after_utc > first.not_valid_after_utc
        assert fetch(tls, root).status_code == 200
        # The connection opened before the renewal keeps the certificate it shook hands with.
        der = kept.getpeercert(binary_form=True)
        assert der is not None and x509.load_der_x509_certificate(der).serial_number == first.serial_number
        kept.close()
    finally:
        node.stop()


def test_acme_failed_challenge_keeps_the_old_certificate_and_says_why(
    pebble: Callable[[int, int], Pebble], site: int, tmp_path: Path, state: Path
) -> None:
    http, tls = free_port(), free_port()
    ca = pebble(http, 9)
    node = start_edge(tmp_path, site, http, tls, ca, "--acme-retry", "1")
    try:
        node.said("certificate for edge-acme.test issued")
        old = served(tls)
        # From now on the CA looks the domain up at an address where nothing listens.
        ca.resolve(DOMAIN, "127.0.0.2")
        failed = node.said("order for edge-acme.test failed", timeout=30)
        assert "validation failed: edge-acme.test: connection" in failed
        assert "still serving the previous certificate; next try in 1 s" in failed
        assert served(tls).serial_number == old.serial_number
        again = node.said("order for edge-acme.test failed", timeout=30)
        assert "next try in 2 s" in again  # the backoff doubles
        assert served(tls).serial_number == old.serial_number
        # The CA can reach the node again: the next try gets a new certificate.
        ca.resolve(DOMAIN, None)
        node.said("certificate for edge-acme.test issued", timeout=30)
        assert served(tls).serial_number != old.serial_number
    finally:
        node.stop()


def test_acme_with_two_workers_orders_once_and_every_worker_serves_the_certificate(
    pebble: Callable[[int, int], Pebble], site: int, tmp_path: Path, state: Path
) -> None:
    """The first worker orders; the CA's validation requests reach either worker (SO_REUSEPORT
    spreads connections by source port) and both answer the token; both load the certificate."""
    http, tls = free_port(), free_port()
    ca = pebble(http, 3600)
    node = start_edge(tmp_path, site, http, tls, ca, "--workers", "2")
    try:
        issued = node.said("certificate for edge-acme.test issued", timeout=40)
        serial = issued.split("serial ")[1].split(",")[0]
        node.said("worker 1: serving the new certificate", timeout=20)
        for _ in range(20):  # new connections from new source ports land on both workers
            assert f"{served(tls).serial_number:x}" == serial
    finally:
        node.stop()
    assert "ordering a certificate" not in "\n".join(list(node.lines.queue))  # one order only


OTHER = "other-acme.test"


def said_all(node: Node, fragments: list[str], timeout: float = 40.0) -> dict[str, str]:
    """The first stderr line holding each fragment, in whatever order they come."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(fragments):
        left = deadline - time.monotonic()
        assert left > 0, (
            f"the node did not say {set(fragments) - set(found)} within {timeout:g} s: {node.seen[-20:]}"
        )
        try:
            line = node.lines.get(timeout=left)
        except queue.Empty:
            continue
        for fragment in fragments:
            if fragment in line and fragment not in found:
                found[fragment] = line
    return found


def sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))


def test_acme_groups_each_get_their_own_certificate_and_one_failing_keeps_the_rest(
    pebble: Callable[[int, int], Pebble], site: int, tmp_path: Path, state: Path
) -> None:
    """Two --acme-domain groups: two orders, two certificates, each served to its own names (SNI),
    the first group's to any other name; when one group's renewal fails (the CA cannot reach
    the node for its name), the other renews and the failing one keeps its old certificate."""
    http, tls = free_port(), free_port()
    ca = pebble(http, 15)  # renewal due 10 s after issuance
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(ca.root())
    first, second = f"certificate for {DOMAIN}, www.{DOMAIN} issued", f"certificate for {OTHER} issued"
    node = Node(
        ["--upstream", f"http://127.0.0.1:{site}", "--listen", f"127.0.0.1:{http}",
         "--tls-listen", f"127.0.0.1:{tls}", "--admin-listen", "", "--access-log", "off",
         "--acme-domain", f"{DOMAIN},www.{DOMAIN}", "--acme-domain", OTHER, "--acme-retry", "1",
         "--acme-directory", ca.directory, "--acme-ca-bundle", str(ca.ca_bundle)],
        http,
    )  # fmt: skip
    try:
        said_all(node, [first, second])
        a, b = served(tls, f"www.{DOMAIN}"), served(tls, OTHER)
        assert sans(a) == [DOMAIN, f"www.{DOMAIN}"] and sans(b) == [OTHER]
        assert (
            served(tls, DOMAIN).serial_number == served(tls, "unknown.test").serial_number == a.serial_number
        )
        assert fetch(tls, root).status_code == 200  # verified for DOMAIN against Pebble's root
        ctx = ssl.create_default_context(cafile=str(root))
        with httpx.Client(verify=ctx) as client:  # and for OTHER, its own certificate
            resp = client.get(
                f"https://127.0.0.1:{tls}/app.js", headers={"Host": OTHER}, extensions={"sni_hostname": OTHER}
            )
        assert resp.status_code == 200
        files = {
            p.relative_to(state).parts[-2:]
            for p in (state / "edge-cdn" / "acme").glob("127.0.0.1-*/*/cert.pem")
        }
        assert files == {(DOMAIN, "cert.pem"), (OTHER, "cert.pem")}  # one folder per group

        ca.resolve(OTHER, "127.0.0.2")  # from now on the CA cannot reach the node for OTHER
        said = said_all(node, [f"order for {OTHER} failed", first], timeout=30)
        assert "still serving the previous certificate" in said[f"order for {OTHER} failed"]
        renewed = served(tls, DOMAIN)
        assert renewed.serial_number != a.serial_number and sans(renewed) == [DOMAIN, f"www.{DOMAIN}"]
        assert served(tls, OTHER).serial_number == b.serial_number  # its own old one, not the other's
        ca.resolve(OTHER, None)
        node.said(second, timeout=30)  # its own retry, on its own schedule
        assert served(tls, OTHER).serial_number not in (b.serial_number, renewed.serial_number)
    finally:
        node.stop()
