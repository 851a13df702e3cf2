"""Sans-I/O: when an upstream answer is a slice of the very object a SliceMeta describes."""

from __future__ import annotations

import pytest

from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.cache.slices import SliceMeta
from edge.http.fields import Headers

NOW = 1_700_000_000.0
LM = b"Sun, 29 Nov 2026 10:00:00 GMT"


def meta(*validators: tuple[bytes, bytes]) -> SliceMeta:
    fields: Headers = [(b"Cache-Control", b"max-age=60"), *validators]
    entry = Entry(b"http://h/x", 200, b"OK", fields, b"", freshness_policy(200, fields, NOW), NOW, 0.0)
    return SliceMeta(entry, 3000, 1000)


def answer(*fields: tuple[bytes, bytes], span: bytes = b"bytes 1000-1999/3000") -> Headers:
    return [(b"Content-Range", span), *fields]


@pytest.mark.parametrize(
    ("stored", "got", "accepted"),
    [
        ([(b"ETag", b'"a"')], [(b"ETag", b'"a"')], True),
        ([(b"ETag", b'"a"')], [(b"ETag", b'"b"')], False),
        ([(b"ETag", b'"a"')], [], False),
        ([(b"Last-Modified", LM)], [(b"Last-Modified", LM)], True),
        # issue 17: without an ETag the Last-Modified is the validator that must match
        ([(b"Last-Modified", LM)], [(b"Last-Modified", b"Mon, 30 Nov 2026 10:00:00 GMT")], False),
        ([(b"Last-Modified", LM)], [], False),
        ([], [(b"ETag", b'"z"')], True),  # nothing to compare: the span and length decide
    ],
)
def test_a_slice_is_accepted_only_with_the_object_s_validator(
    stored: Headers, got: Headers, accepted: bool
) -> None:
    assert meta(*stored).accepts(1, 206, answer(*got)) is accepted


def test_a_slice_of_another_span_or_length_or_status_is_refused() -> None:
    m = meta((b"ETag", b'"a"'))
    assert not m.accepts(1, 206, answer((b"ETag", b'"a"'), span=b"bytes 1000-1999/3001"))
    assert not m.accepts(1, 206, answer((b"ETag", b'"a"'), span=b"bytes 0-999/3000"))
    assert not m.accepts(1, 200, answer((b"ETag", b'"a"')))
