"""The origin over real HTTP: types, validators, conditionals, ranges, encodings, rules."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import hashlib
from collections.abc import Callable
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
    ServerThread,
    Site,
)

from origin.rules import DEFAULT_CACHE_CONTROL, FINGERPRINT_CACHE_CONTROL, HTML_CACHE_CONTROL

StartServer = Callable[..., ServerThread]
LAST_MODIFIED = email.utils.formatdate(SITE_MTIME, usegmt=True)


def get_raw(client: httpx.Client, path: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """GET without httpx decoding Content-Encoding: the bytes as sent."""
    with client.stream("GET", path, headers=headers) as response:
        body = b"".join(response.iter_raw())
    return response, body


# --- content types and basic headers ------------------------------------------


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/index.html", "text/html; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
        (f"/{FINGERPRINTED_JS}", "text/javascript; charset=utf-8"),
        ("/plain.js", "text/javascript; charset=utf-8"),
        ("/mod.mjs", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/logo.svg", "image/svg+xml; charset=utf-8"),
        ("/font.woff2", "font/woff2"),
        ("/font.woff", "font/woff"),
        ("/img.png", "image/png"),
        ("/photo.jpg", "image/jpeg"),
        ("/pic.webp", "image/webp"),
        ("/pic.avif", "image/avif"),
        ("/data.json", "application/json"),
        ("/mod.wasm", "application/wasm"),
        ("/notes.txt", "text/plain; charset=utf-8"),
        ("/video.mp4", "video/mp4"),
        ("/blob.bin", "application/octet-stream"),
        ("/archive.zip", "application/zip"),
        ("/noext", "application/octet-stream"),
        ("/downloads/report.pdf", "application/pdf"),
    ],
)
def test_content_type(client: httpx.Client, path: str, ctype: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == ctype


def test_full_response_headers(client: httpx.Client, site: Site) -> None:
    r = client.get("/notes.txt")
    body = (site.root / "notes.txt").read_bytes()
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["last-modified"] == LAST_MODIFIED
    assert r.headers["etag"] == f'"sha256-{hashlib.sha256(body).hexdigest()[:32]}"'
    assert "vary" not in r.headers  # no precompressed siblings
    assert "content-encoding" not in r.headers


def test_etag_is_strong_and_content_based(client: httpx.Client) -> None:
    a = client.get("/notes.txt").headers["etag"]
    b = client.get("/notes.txt").headers["etag"]
    c = client.get("/plain.js").headers["etag"]
    assert a == b != c
    assert not a.startswith("W/") and a.startswith('"') and a.endswith('"')


def test_etag_changes_when_file_changes(tmp_path: Path, start_server: StartServer) -> None:
    (tmp_path / "a.txt").write_bytes(b"one")
    server = start_server(tmp_path)
    with httpx.Client(base_url=server.url) as c:
        first = c.get("/a.txt").headers["etag"]
        (tmp_path / "a.txt").write_bytes(b"two!")
        second = c.get("/a.txt")
    assert second.content == b"two!"
    assert second.headers["etag"] != first


def test_directory_index(client: httpx.Client, site: Site) -> None:
    assert client.get("/").content == (site.root / "index.html").read_bytes()
    for path in ("/about/", "/about"):
        r = client.get(path)
        assert r.status_code == 200
        assert r.content == (site.root / "about/index.html").read_bytes()
        assert r.headers["cache-control"] == HTML_CACHE_CONTROL


def test_directory_without_index_is_404(client: httpx.Client) -> None:
    assert client.get("/emptydir/").status_code == 404
    assert client.get("/emptydir").status_code == 404


def test_missing_file_404(client: httpx.Client) -> None:
    r = client.get("/does/not/exist.js")
    assert r.status_code == 404
    assert r.headers["cache-control"] == "no-store"


def test_names_needing_escapes(client: httpx.Client) -> None:
    assert client.get("/sp%20ace.txt").content == b"space\n"
    assert client.get("/caf%C3%A9.txt").content == b"unicode name\n"


def test_empty_file(client: httpx.Client) -> None:
    r = client.get("/empty.txt")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "0"


def test_query_string_ignored(client: httpx.Client) -> None:
    assert client.get("/notes.txt?v=2").content == b"hello, notes\n"


def test_large_file_streams_intact(client: httpx.Client, site: Site) -> None:
    r = client.get("/big.bin")
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == BIG_SIZE
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(site.big).digest()


# --- HEAD -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/notes.txt", "/big.bin", f"/{FINGERPRINTED_JS}"])
def test_head_matches_get_headers(client: httpx.Client, path: str) -> None:
    g = client.get(path)
    h = client.head(path)
    assert h.status_code == 200
    assert h.content == b""
    for name in ("content-type", "content-length", "etag", "last-modified", "cache-control"):
        assert h.headers[name] == g.headers[name]


def test_head_of_range(client: httpx.Client) -> None:
    r = client.head("/big.bin", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 0-9/{BIG_SIZE}"
    assert r.headers["content-length"] == "10"
    assert r.content == b""


# --- conditional GET ---------------------------------------------------------


def test_if_none_match_304(client: httpx.Client) -> None:
    first = client.get("/style.css")
    etag = first.headers["etag"]
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        r = client.get("/style.css", headers={"If-None-Match": inm})
        assert r.status_code == 304, inm
        assert r.content == b""
        assert r.headers["etag"] == etag
        assert r.headers["cache-control"] == first.headers["cache-control"]
        assert r.headers["last-modified"] == LAST_MODIFIED


def test_if_none_match_mismatch_200(client: httpx.Client) -> None:
    r = client.get("/style.css", headers={"If-None-Match": '"sha256-other"'})
    assert r.status_code == 200
    assert r.content == b"body { color: red }\n"


def test_if_modified_since(client: httpx.Client) -> None:
    later = email.utils.formatdate(SITE_MTIME + 60, usegmt=True)
    earlier = email.utils.formatdate(SITE_MTIME - 60, usegmt=True)
    assert client.get("/notes.txt", headers={"If-Modified-Since": LAST_MODIFIED}).status_code == 304
    assert client.get("/notes.txt", headers={"If-Modified-Since": later}).status_code == 304
    assert client.get("/notes.txt", headers={"If-Modified-Since": earlier}).status_code == 200
    assert client.get("/notes.txt", headers={"If-Modified-Since": "garbage"}).status_code == 200


def test_if_none_match_takes_precedence_over_if_modified_since(client: httpx.Client) -> None:
    r = client.get(
        "/notes.txt",
        headers={"If-None-Match": '"sha256-other"', "If-Modified-Since": LAST_MODIFIED},
    )
    assert r.status_code == 200
    etag = r.headers["etag"]
    earlier = email.utils.formatdate(SITE_MTIME - 60, usegmt=True)
    r = client.get("/notes.txt", headers={"If-None-Match": etag, "If-Modified-Since": earlier})
    assert r.status_code == 304


def test_head_conditional(client: httpx.Client) -> None:
    etag = client.head("/notes.txt").headers["etag"]
    assert client.head("/notes.txt", headers={"If-None-Match": etag}).status_code == 304


# --- ranges -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, BIG_SIZE - 1),
        ("bytes=-500", BIG_SIZE - 500, BIG_SIZE - 1),
        ("bytes=300000-700000", 300000, 700000),  # spans streaming chunks
        (f"bytes=5-{BIG_SIZE * 2}", 5, BIG_SIZE - 1),
    ],
)
def test_range_206(client: httpx.Client, site: Site, spec: str, start: int, end: int) -> None:
    r = client.get("/big.bin", headers={"Range": spec})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{BIG_SIZE}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.content == site.big[start : end + 1]
    assert r.headers["etag"] == client.head("/big.bin").headers["etag"]


@pytest.mark.parametrize("spec", [f"bytes={BIG_SIZE}-", "bytes=-0", f"bytes={BIG_SIZE + 5}-9999999"])
def test_range_416(client: httpx.Client, spec: str) -> None:
    r = client.get("/big.bin", headers={"Range": spec})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{BIG_SIZE}"


def test_range_on_empty_file_416(client: httpx.Client) -> None:
    r = client.get("/empty.txt", headers={"Range": "bytes=0-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "items=0-5", "bytes=9-2", "bytes=x-"])
def test_multiple_or_invalid_ranges_get_full_200(client: httpx.Client, spec: str) -> None:
    r = client.get("/notes.txt", headers={"Range": spec})
    assert r.status_code == 200
    assert r.content == b"hello, notes\n"


def test_if_range(client: httpx.Client) -> None:
    etag = client.head("/notes.txt").headers["etag"]
    match = client.get("/notes.txt", headers={"Range": "bytes=0-4", "If-Range": etag})
    assert match.status_code == 206
    assert match.content == b"hello"
    for stale in ('"sha256-old"', f"W/{etag}", email.utils.formatdate(SITE_MTIME - 5, usegmt=True)):
        r = client.get("/notes.txt", headers={"Range": "bytes=0-4", "If-Range": stale})
        assert r.status_code == 200, stale
        assert r.content == b"hello, notes\n"
    by_date = client.get("/notes.txt", headers={"Range": "bytes=7-", "If-Range": LAST_MODIFIED})
    assert by_date.status_code == 206
    assert by_date.content == b"notes\n"


# --- precompressed siblings ------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br, zstd", "br"),
        ("gzip, zstd", "zstd"),
        ("gzip", "gzip"),
        ("br;q=0, zstd;q=0, gzip", "gzip"),
        ("gzip;q=1, br;q=0.3", "gzip"),
        ("*;q=0.5, br;q=0", "zstd"),
        ("identity", None),
        ("br;q=0, gzip;q=0, zstd;q=0", None),
    ],
)
def test_precompressed_negotiation(client: httpx.Client, accept: str, coding: str | None) -> None:
    r, body = get_raw(client, f"/{FINGERPRINTED_JS}", **{"Accept-Encoding": accept})
    assert r.status_code == 200
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == FINGERPRINT_CACHE_CONTROL
    assert r.headers["content-length"] == str(len(body))
    decode = {
        "br": brotli.decompress,
        "zstd": zstandard.ZstdDecompressor().decompress,
        "gzip": gzip.decompress,
        None: lambda b: b,
    }[coding]
    assert r.headers.get("content-encoding") == coding
    assert decode(body) == JS_BODY


def test_each_encoding_has_its_own_etag(client: httpx.Client) -> None:
    tags = set()
    for accept in ("identity", "br", "zstd", "gzip"):
        r, body = get_raw(client, f"/{FINGERPRINTED_JS}", **{"Accept-Encoding": accept})
        tags.add(r.headers["etag"])
        assert r.headers["etag"] == f'"sha256-{hashlib.sha256(body).hexdigest()[:32]}"'
    assert len(tags) == 4


def test_no_accept_encoding_gets_identity(origin: ServerThread) -> None:
    with httpx.Client(base_url=origin.url) as c:
        request = c.build_request("GET", f"/{FINGERPRINTED_JS}")
        del request.headers["accept-encoding"]
        r = c.send(request)
    assert "content-encoding" not in r.headers
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.content == JS_BODY


def test_vary_on_304_206_and_head(client: httpx.Client) -> None:
    path = f"/{FINGERPRINTED_JS}"
    r, _ = get_raw(client, path, **{"Accept-Encoding": "br"})
    etag = r.headers["etag"]
    not_modified = client.get(path, headers={"Accept-Encoding": "br", "If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.headers["vary"] == "Accept-Encoding"
    # The identity representation's ETag does not validate the br one (and vice versa).
    other = client.get(path, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert other.status_code == 200
    part, body = get_raw(client, path, **{"Accept-Encoding": "br", "Range": "bytes=0-9"})
    assert part.status_code == 206
    assert part.headers["content-encoding"] == "br"
    assert part.headers["vary"] == "Accept-Encoding"
    assert len(body) == 10
    assert client.head(path).headers["vary"] == "Accept-Encoding"


def test_only_gzip_sibling(client: httpx.Client) -> None:
    r, body = get_raw(client, "/only-gz.css", **{"Accept-Encoding": "br, zstd"})
    assert "content-encoding" not in r.headers
    assert r.headers["vary"] == "Accept-Encoding"
    r, body = get_raw(client, "/only-gz.css", **{"Accept-Encoding": "br, gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == b"p { margin: 0 }\n" * 50


# --- Cache-Control rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (f"/{FINGERPRINTED_JS}", FINGERPRINT_CACHE_CONTROL),
        ("/index.html", HTML_CACHE_CONTROL),
        ("/", HTML_CACHE_CONTROL),
        ("/plain.js", DEFAULT_CACHE_CONTROL),
        ("/font.woff2", DEFAULT_CACHE_CONTROL),
        ("/downloads/report.pdf", DEFAULT_CACHE_CONTROL),
    ],
)
def test_default_cache_control(client: httpx.Client, path: str, value: str) -> None:
    assert client.get(path).headers["cache-control"] == value


def test_custom_rules_from_toml(site: Site, start_server: StartServer, tmp_path: Path) -> None:
    from origin.rules import load_rules

    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        '[[rule]]\nglob = "downloads/*"\ncache_control = "public, max-age=3600"\n\n'
        '[[rule]]\nglob = "*.woff2"\ncache_control = "public, max-age=604800, immutable"\n\n'
        '[[rule]]\nglob = "index.html"\ncache_control = "public, max-age=60"\n'
    )
    server = start_server(site.root, load_rules(rules_file))
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/downloads/report.pdf").headers["cache-control"] == "public, max-age=3600"
        assert c.get("/font.woff2").headers["cache-control"] == "public, max-age=604800, immutable"
        assert c.get("/").headers["cache-control"] == "public, max-age=60"
        assert c.get("/about/").headers["cache-control"] == "public, max-age=60"
        assert c.get("/plain.js").headers["cache-control"] == DEFAULT_CACHE_CONTROL
        assert c.get(f"/{FINGERPRINTED_JS}").headers["cache-control"] == FINGERPRINT_CACHE_CONTROL


# --- concurrency ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrent_large_and_small_requests(origin: ServerThread, site: Site) -> None:
    async with httpx.AsyncClient(base_url=origin.url, headers={"Accept-Encoding": "identity"}) as c:
        results = await asyncio.gather(
            *(c.get("/big.bin") for _ in range(4)), *(c.get("/notes.txt") for _ in range(20))
        )
    assert all(r.status_code == 200 for r in results)
    assert all(r.content == site.big for r in results[:4])
    assert all(r.content == b"hello, notes\n" for r in results[4:])


def test_client_disconnect_mid_stream_does_not_hurt(origin: ServerThread) -> None:
    import socket

    for _ in range(3):
        with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as s:
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
    with httpx.Client(base_url=origin.url) as c:
        assert c.get("/notes.txt").content == b"hello, notes\n"


def test_create_app_rejects_unusable_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from origin import create_app

    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_app(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        create_app(tmp_path / "f")
    monkeypatch.setattr("os.access", lambda *_a, **_k: False)
    with pytest.raises(PermissionError, match="not readable"):
        create_app(tmp_path)
