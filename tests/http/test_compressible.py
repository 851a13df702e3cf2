"""Tests for edge.http.compressible: which Content-Types the edge compresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.http.compressible import is_compressible

YES = [
    b"text/html",
    b"text/html; charset=utf-8",
    b"TEXT/CSS",
    b"  text/plain ;charset=us-ascii",
    b"text/javascript",
    b"text/csv",
    b"text/markdown",
    b"text/xml",
    b"application/javascript",
    b"application/x-javascript",
    b"application/ecmascript",
    b"application/json",
    b"application/ld+json",
    b"application/manifest+json",
    b"application/vnd.api+json",
    b"application/problem+json; charset=utf-8",
    b"application/x-ndjson",
    b"application/xml",
    b"application/rss+xml",
    b"application/atom+xml",
    b"application/xhtml+xml",
    b"image/svg+xml",
    b"application/wasm",
    b"application/yaml",
    b"font/ttf",
    b"font/otf",
    b"font/collection",
    b"application/vnd.ms-fontobject",
    b"application/x-font-ttf",
    b"application/font-sfnt",
    b"image/x-icon",
    b"image/vnd.microsoft.icon",
    b"image/bmp",
]

NO = [
    None,
    b"",
    b"text",
    b"/html",
    b"text/",
    b"garbage",
    b"text/event-stream",  # compression buffering would hold events back
    b"font/woff",
    b"font/woff2",
    b"application/font-woff",
    b"image/png",
    b"image/jpeg",
    b"image/gif",
    b"image/webp",
    b"image/avif",
    b"video/mp4",
    b"video/webm",
    b"audio/mpeg",
    b"audio/ogg",
    b"application/zip",
    b"application/gzip",
    b"application/x-gzip",
    b"application/x-bzip2",
    b"application/x-7z-compressed",
    b"application/zstd",
    b"application/pdf",
    b"application/octet-stream",
    b"application/epub+zip",
    b"multipart/byteranges; boundary=x",
    b"application/jsonx",  # not a +json suffix, not json
]


@pytest.mark.parametrize("content_type", YES)
def test_compressible(content_type: bytes) -> None:
    assert is_compressible(content_type)


@pytest.mark.parametrize("content_type", NO)
def test_not_compressible(content_type: bytes | None) -> None:
    assert not is_compressible(content_type)


@given(st.sampled_from(YES + NO[1:]), st.sampled_from([b"", b"; charset=utf-8", b";q=1", b" ; a=b; c=d"]))
def test_parameters_and_case_never_change_the_answer(content_type: bytes, params: bytes) -> None:
    assert (
        is_compressible(content_type + params)
        == is_compressible(content_type.upper())
        == is_compressible(content_type)
    )


@given(st.binary(max_size=100))
def test_never_raises(raw: bytes) -> None:
    assert is_compressible(raw) in (True, False)
