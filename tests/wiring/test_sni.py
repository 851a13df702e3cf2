"""Several certificates on one node, each served to the names it covers (SNI): HTTP/2 and
HTTP/1.1 over TLS on both TLS transports, HTTP/3 on both QUIC libraries, and a SIGHUP that
swaps one of them for new connections. Real servers on loopback, real clients that verify
the chain and the name against the test CA (so a wrong certificate fails the request).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from edge import config as edge_config
from edge.config import ConfigError
from edge.wiring.devcert import ensure_dev_cert
from edge.wiring.sni import NameTable
from tests.support.certs import Leaf, TestCA, served_serial
from tests.support.h3client import h3_client
from tests.support.nodes import free_port, start_secure_edge
from tests.wiring.test_reload import Node
from tests.wiring.test_shutdown import wait_port

BODY = b"console.log('x');\n" * 100


def _certs(ca: TestCA) -> dict[str, Leaf]:
    return {
        "a": ca.issue("a", ["a.test", "www.a.test"]),  # the default: first given
        "b": ca.issue("b", ["b.test"], kind="rsa"),  # another key type than the default's
        "c": ca.issue("c", ["*.c.test"]),
        "x": ca.issue("x", ["x.c.test"]),  # an exact name wins over the wildcard
    }


def _files(leaves: dict[str, Leaf]) -> tuple[str, str]:
    """The ``cert`` and ``key`` settings: comma lists, as ``--cert``/``--key`` repeated give."""
    return ",".join(str(leaf.cert) for leaf in leaves.values()), ",".join(
        str(leaf.key) for leaf in leaves.values()
    )


EXPECTED = [  # (SNI name, certificate): exact, wildcard (one label), exact over wildcard
    ("a.test", "a"), ("www.a.test", "a"), ("b.test", "b"), ("B.Test", "b"),
    ("one.c.test", "c"), ("x.c.test", "x"),
]  # fmt: skip
UNCOVERED = ["nope.test", "c.test", "a.b.c.test", None]  # the default; None: no SNI at all


@pytest.mark.asyncio
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("transport", "backend"), [("aiofastnet", "qh3"), ("asyncio", "aioquic")])
async def test_each_name_gets_its_certificate_on_h2_h1_and_h3(
    site: int, tmp_path: Path, transport: str, backend: str
) -> None:
    ca = TestCA(tmp_path / "ca")
    leaves = _certs(ca)
    node = await start_secure_edge(
        f"http://127.0.0.1:{site}", ensure_dev_cert(tmp_path / "dev"), backend,
        cert_files=_files(leaves), tls_transport=transport,
    )  # fmt: skip
    trust = ssl.create_default_context(cafile=str(ca.pem))
    try:
        for http2 in (True, False):
            for name, _ in EXPECTED:  # a client per name: a pool would reuse the first handshake
                async with httpx.AsyncClient(http2=http2, verify=trust, timeout=10) as client:
                    resp = await client.get(
                        f"https://127.0.0.1:{node.port}/app.js",
                        headers={"Host": name.lower()},
                        extensions={"sni_hostname": name},
                    )  # verified: the chain and this name, so only the right certificate passes
                    assert resp.status_code == 200 and resp.content == BODY
                    assert resp.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        for name, which in EXPECTED:
            assert await asyncio.to_thread(served_serial, node.port, name) == leaves[which].serial, name
        for uncovered in UNCOVERED:
            assert await asyncio.to_thread(served_serial, node.port, uncovered) == leaves["a"].serial, (
                uncovered
            )
        for name, which in EXPECTED:
            async with h3_client("127.0.0.1", node.port, str(ca.pem), name.lower()) as h3:
                got = await h3.request("/app.js", authority=name.lower())
                assert got.status == 200 and bytes(got.body) == BODY
                assert h3.peer_serial() == leaves[which].serial, name
        for name in ("nope.test", "c.test"):
            async with h3_client("127.0.0.1", node.port, None, name) as h3:
                assert (await h3.request("/app.js", authority=name)).status == 200
                assert h3.peer_serial() == leaves["a"].serial, name
    finally:
        await node.stop()


def test_sighup_swaps_one_of_several_certificates_for_new_connections(site: int, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    a, b_old, b_new = ca.issue("a", ["a.test"]), ca.issue("b1", ["b.test"]), ca.issue("b2", ["b.test"])
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(b_old.cert, live / "b.pem")
    shutil.copy(b_old.key, live / "b.key")
    port, tls = free_port(), free_port()
    node = Node(
        ["--upstream", f"http://127.0.0.1:{site}", "--listen", f"127.0.0.1:{port}",
         "--admin-listen", "", "--access-log", "off", "--tls-listen", f"127.0.0.1:{tls}",
         "--cert", str(a.cert), "--key", str(a.key), "--cert", str(live / "b.pem"), "--key", str(live / "b.key")],
        port,
    )  # fmt: skip
    try:
        wait_port(tls, node.proc)
        assert served_serial(tls, "b.test") == b_old.serial
        trust = ssl.create_default_context(cafile=str(ca.pem))
        kept = trust.wrap_socket(
            socket.create_connection(("127.0.0.1", tls), timeout=5), server_hostname="b.test"
        )

        shutil.copy(b_new.cert, live / "b.pem")  # certbot renews b.test in place
        shutil.copy(b_new.key, live / "b.key")
        node.hup()
        node.said("reloaded")
        assert served_serial(tls, "b.test") == b_new.serial
        assert served_serial(tls, "a.test") == served_serial(tls, "other.test") == a.serial

        async def over_h3() -> int:
            async with h3_client("127.0.0.1", tls, str(ca.pem), "b.test") as h3:
                assert (await h3.request("/app.js", authority="b.test")).status == 200
                return h3.peer_serial()

        assert asyncio.run(over_h3()) == b_new.serial
        der = kept.getpeercert(binary_form=True)  # the open connection keeps its handshake's
        assert der is not None and ssl.DER_cert_to_PEM_cert(der) == b_old.cert.read_text()
        kept.close()

        (live / "b.key").write_text("not a key")  # a broken renewal of one keeps the whole set
        node.hup()
        assert "still serving the previous one" in node.said("certificate not reloaded")
        assert served_serial(tls, "b.test") == b_new.serial
    finally:
        node.stop()


def test_certificate_flags_pair_up_and_acme_groups_split() -> None:
    up = {"upstream": "http://127.0.0.1:1"}
    config = edge_config.load(None, {}, {**up, "cert": ["a.pem", "b.pem"], "key": ["a.key", "b.key"]})
    assert config.cert == "a.pem,b.pem" and config.key == "a.key,b.key"
    with pytest.raises(ConfigError, match="2 --cert for 1 --key"):
        edge_config.load(None, {}, {**up, "cert": ["a.pem", "b.pem"], "key": ["a.key"]})
    assert edge_config.acme_groups("A.test, www.a.test;b.test") == [("a.test", "www.a.test"), ("b.test",)]
    flags = {**up, "acme_domain": ["a.test,www.a.test", "b.test"]}
    assert edge_config.load(None, {}, flags).acme_domain == "a.test,www.a.test;b.test"
    with pytest.raises(ConfigError, match="in two groups"):
        edge_config.acme_groups("a.test;b.test,a.test")
    table = NameTable([["a.test"], ["*.c.test", "b.test"], ["x.c.test"]])
    assert [table.index(n) for n in ("A.TEST.", "y.c.test", "x.c.test", "c.test", "z.y.c.test", None)] == [
        0, 1, 2, 0, 0, 0,
    ]  # fmt: skip
