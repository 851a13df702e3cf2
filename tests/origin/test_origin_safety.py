"""The origin never serves outside its root, and bad requests do not hurt it.

Targets are sent verbatim over a socket: httpx would normalise ``..`` and
percent-escapes before they reach the server.
"""

from __future__ import annotations

import httpx
import pytest
from origin_testsite import RawGet  # type: ignore[import-not-found]

OUTSIDE = b"outside the root"

NOT_FOUND = [
    "/../etc/passwd",
    "/../../../../../../etc/passwd",
    "/about/../index.html",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E/outside/secret.txt",
    "/.%2e/outside/secret.txt",
    "/%2e/notes.txt",
    "//etc/passwd",
    "/.secret",
    "/%2esecret",
    "/.git/config",
    "/.git/",
    "/sub/.env",
    "/escape.txt",  # symlink to a file outside the root
    "/escape-dir/secret.txt",  # symlink to a directory outside the root
    "/escape-dir/",
    "/to-dotfile.txt",  # symlink inside the root, to a dotfile
    "/fifo.txt",  # not a regular file (and must not block)
]

BAD_REQUEST = [
    "/..%2f..%2fetc%2fpasswd",
    "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/escape-dir%2fsecret.txt",
    "/..\\..\\etc\\passwd",
    "/%5c..%5cetc%5cpasswd",
    "/notes.txt%00",
    "/notes.txt%00.png",
    "/%c0%ae%c0%ae/etc/passwd",  # overlong UTF-8 dots
    "/%zz",
    "/notes.txt%0d%0aSet-Cookie:%20x=1",
]


@pytest.mark.parametrize("target", NOT_FOUND)
def test_hidden_or_outside_is_404(raw_get: RawGet, target: str) -> None:
    r = raw_get(target)
    assert r.status == 404, target
    assert OUTSIDE not in r.body
    ok = raw_get("/notes.txt")
    assert ok.status == 200 and ok.body == b"hello, notes\n"


@pytest.mark.parametrize("target", BAD_REQUEST)
def test_malformed_is_400(raw_get: RawGet, target: str) -> None:
    r = raw_get(target)
    assert r.status == 400, target
    assert OUTSIDE not in r.body
    ok = raw_get("/notes.txt")
    assert ok.status == 200


@pytest.mark.parametrize("target", [b"/notes.txt\x00", b"/a b/c", b"/\xff\xfe"])
def test_raw_garbage_in_request_line(raw_get: RawGet, target: bytes) -> None:
    # The HTTP layer (h11) or the origin rejects these; either way a 4xx, and no crash.
    r = raw_get(target)
    assert 400 <= r.status < 500
    ok = raw_get("/notes.txt")
    assert ok.status == 200


def test_symlink_inside_root_is_served(client: httpx.Client) -> None:
    r = client.get("/inside-link.txt")
    assert r.status_code == 200
    assert r.content == b"hello, notes\n"


def test_head_of_hidden_is_404_without_body(raw_get: RawGet) -> None:
    r = raw_get("/.secret", "HEAD")
    assert r.status == 404
    assert r.body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_405(client: httpx.Client, method: str) -> None:
    for path in ("/notes.txt", "/does-not-exist"):
        r = client.request(method, path, content=b"x" if method in ("POST", "PUT") else None)
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD"
    assert client.get("/notes.txt").status_code == 200
