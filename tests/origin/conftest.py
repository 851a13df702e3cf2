"""Fixtures for the origin tests: a test site on disk and real Hypercorn servers.

Servers run Hypercorn's asyncio worker in a background thread on a free
loopback port; tests talk to them with httpx or raw sockets (helpers in
``origin_testsite``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import httpx
import pytest
import zstandard
from origin_testsite import (  # type: ignore[import-not-found]
    BIG_SIZE,
    FINGERPRINTED_JS,
    JS_BODY,
    SITE_MTIME,
    RawGet,
    RawResponse,
    ServerThread,
    Site,
    raw_request,
)

from origin import create_app


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    base = tmp_path_factory.mktemp("origin-site")
    root = base / "root"
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside the root\n")

    files: dict[str, bytes] = {
        "index.html": b"<!doctype html><title>home</title>\n",
        "about/index.html": b"<!doctype html><title>about</title>\n",
        "emptydir/readme.md": b"# no index here\n",
        FINGERPRINTED_JS: JS_BODY,
        "plain.js": b"console.log('plain');\n",
        "mod.mjs": b"export const x = 1;\n",
        "style.css": b"body { color: red }\n",
        "logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n',
        "font.woff2": b"wOF2" + bytes(100),
        "font.woff": b"wOFF" + bytes(100),
        "img.png": b"\x89PNG\r\n\x1a\n" + bytes(50),
        "photo.jpg": b"\xff\xd8\xff" + bytes(50),
        "pic.webp": b"RIFF" + bytes(50),
        "pic.avif": bytes(50),
        "data.json": b'{"a": 1}\n',
        "mod.wasm": b"\x00asm\x01\x00\x00\x00",
        "notes.txt": b"hello, notes\n",
        "video.mp4": bytes(64),
        "blob.bin": bytes(range(256)),
        "archive.zip": b"PK\x05\x06" + bytes(18),
        "noext": b"no extension\n",
        "empty.txt": b"",
        "downloads/report.pdf": b"%PDF-1.4\n",
        "big.bin": b"",
        "sp ace.txt": b"space\n",
        "caf\u00e9.txt": b"unicode name\n",
        ".secret": b"dotfile\n",
        ".git/config": b"[core]\n",
        "sub/.env": b"TOKEN=1\n",
    }
    big = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(BIG_SIZE // 32 + 1))[:BIG_SIZE]
    files["big.bin"] = big
    for rel, data in files.items():
        _write(root / rel, data)
    _write(root / (FINGERPRINTED_JS + ".br"), brotli.compress(JS_BODY))
    _write(root / (FINGERPRINTED_JS + ".gz"), gzip.compress(JS_BODY, mtime=0))
    _write(root / (FINGERPRINTED_JS + ".zst"), zstandard.ZstdCompressor().compress(JS_BODY))
    # A file with only a gzip sibling.
    _write(root / "only-gz.css", b"p { margin: 0 }\n" * 50)
    _write(root / "only-gz.css.gz", gzip.compress(b"p { margin: 0 }\n" * 50, mtime=0))

    os.symlink(outside / "secret.txt", root / "escape.txt")
    os.symlink(outside, root / "escape-dir")
    os.symlink(root / "notes.txt", root / "inside-link.txt")
    os.symlink(root / ".secret", root / "to-dotfile.txt")
    os.mkfifo(root / "fifo.txt")

    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink() and p.is_file():
                os.utime(p, (SITE_MTIME, SITE_MTIME))
    return Site(root=root, outside=outside, big=big)


StartServer = Callable[..., ServerThread]


@pytest.fixture(scope="session")
def start_server() -> Iterator[StartServer]:
    """Start an origin on a root (with optional rules); stopped at session end."""
    servers: list[ServerThread] = []

    def start(root: Path, rules: list[tuple[str, str]] | None = None) -> ServerThread:
        server = ServerThread(create_app(root, rules)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def origin(site: Site, start_server: StartServer) -> ServerThread:
    """The origin serving the test site with default rules."""
    return start_server(site.root)


@pytest.fixture
def client(origin: ServerThread) -> Iterator[httpx.Client]:
    # No Accept-Encoding unless a test asks: httpx would otherwise send its own.
    with httpx.Client(base_url=origin.url, headers={"Accept-Encoding": "identity"}) as c:
        yield c


@pytest.fixture
def raw_get(origin: ServerThread) -> RawGet:
    """``raw_get(target, method="GET")``: one request with the target sent verbatim."""

    def get(target: str | bytes, method: str = "GET") -> RawResponse:
        t = target.encode("latin-1") if isinstance(target, str) else target
        line = method.encode() + b" " + t + b" HTTP/1.1\r\n"
        return raw_request(origin.port, line + b"Host: localhost\r\nConnection: close\r\n\r\n")

    return get
