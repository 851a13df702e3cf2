"""The HTTPS front's request decoder gives hpack's own lists, block after block."""

from __future__ import annotations

from hpack import Decoder, Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.fronts.hpack_requests import RequestDecoder

_names = st.sampled_from([b":path", b":authority", b"accept", b"x-a", b"cookie", b"user-agent"])
_values = st.sampled_from([b"/", b"/a", b"/1k.bin", b"localhost", b"*/*", b"v" * 40, b""])
_field = st.tuples(_names, _values)
_indexing = st.sampled_from(["all", "none", "path"])


def _block(encoder: Encoder, fields: list[tuple[bytes, bytes]], indexing: str) -> bytes:
    from hpack import HeaderTuple, NeverIndexedHeaderTuple

    out: list[HeaderTuple] = []
    for name, value in fields:
        never = indexing == "none" or (indexing == "path" and name == b":path")
        out.append(NeverIndexedHeaderTuple(name, value) if never else HeaderTuple(name, value))
    return encoder.encode(out)


def _outcome(decoder: Decoder, block: bytes) -> object:
    """The list, or the error's type (hpack's encoder can emit a block naming an evicted entry
    after a table size change: both decoders must refuse it alike)."""
    try:
        return decoder.decode(block, raw=True)
    except Exception as exc:
        return type(exc)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(_field, min_size=1, max_size=6), _indexing, st.sampled_from([None, 0, 64, 4096])),
        min_size=1,
        max_size=12,
    ),
)
def test_same_lists_as_hpack(requests: list[tuple[list[tuple[bytes, bytes]], str, int | None]]) -> None:
    encoder = Encoder()
    plain, memo = Decoder(), RequestDecoder()
    for fields, indexing, table_size in requests:
        if table_size is not None:
            encoder.header_table_size = table_size
        block = _block(encoder, fields, indexing)
        for _ in range(2):  # the same bytes twice: the second may come from the memo
            assert _outcome(memo, block) == _outcome(plain, block)
        assert memo.header_table.dynamic_entries == plain.header_table.dynamic_entries


def test_repeated_block_is_memoised_until_the_table_changes() -> None:
    encoder = Encoder()
    decoder, plain = RequestDecoder(), Decoder()
    first = encoder.encode([(b":path", b"/a"), (b"accept", b"*/*")])
    for d in (decoder, plain):
        d.decode(first, raw=True)  # inserts both
    again = encoder.encode([(b":path", b"/a"), (b"accept", b"*/*")])
    assert again == b"\xbf\xbe"  # indexed only: the two dynamic entries
    assert decoder.decode(again, raw=True) == [(b":path", b"/a"), (b"accept", b"*/*")]
    assert again in decoder._memo
    assert decoder.decode(again, raw=True) == [(b":path", b"/a"), (b"accept", b"*/*")]
    new = encoder.encode([(b"x-new", b"1")])
    for d in (decoder, plain):
        d.decode(new, raw=True)  # an insertion: the same bytes now point elsewhere
    assert (
        decoder.decode(again, raw=True)
        == plain.decode(again, raw=True)
        != [(b":path", b"/a"), (b"accept", b"*/*")]
    )


def test_lower_header_list_limit_is_applied_to_a_memoised_block() -> None:
    import hpack
    import pytest

    encoder = Encoder()
    decoder = RequestDecoder()
    block = encoder.encode([(b"x-a", b"v" * 100)])
    decoder.decode(block, raw=True)
    again = encoder.encode([(b"x-a", b"v" * 100)])
    decoder.decode(again, raw=True)
    decoder.max_header_list_size = 50
    with pytest.raises(hpack.OversizedHeaderListError):
        decoder.decode(again, raw=True)
