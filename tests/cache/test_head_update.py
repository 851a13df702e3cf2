"""Sans-I/O: a 200 to HEAD and the stored GET response (RFC 9111 §4.3.5, issue 17)."""

from __future__ import annotations

import pytest

from edge.cache.entry import Entry
from edge.cache.freshness import freshness_policy
from edge.cache.validation import head_describes
from edge.http.fields import Headers

NOW = 1_700_000_000.0
LM = b"Sun, 29 Nov 2026 10:00:00 GMT"
OTHER_LM = b"Mon, 30 Nov 2026 10:00:00 GMT"


def stored(*fields: tuple[bytes, bytes], body: bytes = b"x" * 10) -> Entry:
    hs: Headers = [(b"Cache-Control", b"max-age=60"), *fields]
    return Entry(b"http://h/x", 200, b"OK", hs, body, freshness_policy(200, hs, NOW), NOW, 0.0)


@pytest.mark.parametrize(
    ("entry_fields", "head", "length", "describes"),
    [
        ([(b"ETag", b'"a"')], [(b"ETag", b'"a"')], None, True),
        ([(b"ETag", b'"a"')], [(b"ETag", b'"a"')], 10, True),
        ([(b"ETag", b'"a"')], [(b"ETag", b'"a"')], 11, False),  # another length: another body
        ([(b"ETag", b'"a"')], [(b"ETag", b'"b"')], None, False),
        ([(b"ETag", b'W/"a"')], [(b"ETag", b'"a"')], None, False),
        ([], [(b"ETag", b'"a"')], None, False),
        ([(b"ETag", b'"a"')], [], None, False),  # no validator: describes nothing in particular
        ([(b"Last-Modified", LM)], [(b"Last-Modified", LM)], 10, True),
        ([(b"Last-Modified", LM)], [(b"Last-Modified", OTHER_LM)], None, False),
        ([(b"ETag", b'"a"'), (b"Last-Modified", LM)], [(b"ETag", b'"a"')], None, True),
        (
            [(b"ETag", b'"a"'), (b"Last-Modified", LM)],
            [(b"ETag", b'"a"'), (b"Last-Modified", OTHER_LM)],
            None,
            False,
        ),
        ([(b"ETag", b'"a"')], [(b"ETag", b'"a"'), (b"Content-Encoding", b"gzip")], None, False),
        (
            [(b"ETag", b'"a"'), (b"Content-Encoding", b"br")],
            [(b"ETag", b'"a"'), (b"Content-Encoding", b"br")],
            None,
            True,
        ),
    ],
)
def test_a_head_response_describes_the_stored_get_only_with_its_validators_and_length(
    entry_fields: Headers, head: Headers, length: int | None, describes: bool
) -> None:
    assert head_describes(stored(*entry_fields), head, length) is describes
