"""The HTTPS front's HPACK encoder: any field list decodes back intact, without ever
touching the peer's dynamic table, and the same fields give the same block."""

from __future__ import annotations

from hpack import Decoder, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.fronts.hpack_responses import ResponseEncoder

names = st.one_of(
    st.sampled_from([b":status", b"content-type", b"content-length", b"cache-control", b"etag", b"age",
                     b"vary", b"x-cache", b"set-cookie", b"date"]),
    st.binary(min_size=1, max_size=12),
)  # fmt: skip
values = st.one_of(st.sampled_from([b"200", b"404", b"gzip", b"", b"max-age=60"]), st.binary(max_size=40))
fields = st.lists(st.tuples(names, values), max_size=14)


@settings(max_examples=500)
@given(st.lists(fields, min_size=1, max_size=6))
def test_blocks_decode_to_their_fields_and_leave_the_dynamic_table_empty(
    blocks: list[list[tuple[bytes, bytes]]],
) -> None:
    encoder, decoder = ResponseEncoder(), Decoder()
    for block in blocks:
        encoded = encoder.encode(block)
        assert [tuple(f) for f in decoder.decode(encoded, raw=True)] == block
        assert encoder.encode(block) == encoded  # stateless: same fields, same bytes
        assert len(decoder.header_table.dynamic_entries) == 0


def test_a_table_size_change_is_signalled_once_at_the_start_of_the_next_block() -> None:
    encoder, decoder = ResponseEncoder(), Decoder()
    block = [(b":status", b"200"), (b"x-cache", b"HIT")]
    plain = encoder.encode(block)
    encoder.header_table_size = 0  # the peer sent SETTINGS_HEADER_TABLE_SIZE = 0
    first = encoder.encode(block)
    assert first == b"\x20" + plain  # dynamic table size update to 0 (RFC 7541 §6.3)
    assert encoder.encode(block) == plain
    assert [tuple(f) for f in decoder.decode(first, raw=True)] == block
    assert decoder.header_table.maxsize == 0


def test_never_indexed_fields_keep_their_mark() -> None:
    encoder, decoder = ResponseEncoder(), Decoder()
    block = [(b":status", b"200"), NeverIndexedHeaderTuple(b"set-cookie", b"id=1")]
    out = decoder.decode(encoder.encode(block), raw=True)
    assert isinstance(out[1], NeverIndexedHeaderTuple) and tuple(out[1]) == (b"set-cookie", b"id=1")


def test_only_hit_blocks_of_bounded_size_are_kept() -> None:
    """Misses and errors carry one-off fields (and may carry cookies): looked up, not kept."""
    from edge.fronts import hpack_responses

    hpack_responses._blocks.clear()
    encoder = ResponseEncoder()
    encoder.encode([(b":status", b"404"), (b"x-request", b"1")])
    assert hpack_responses._blocks == {}
    encoder.memoise = True
    hit = [(b":status", b"200"), (b"x-cache", b"HIT")]
    block = encoder.encode(hit)
    assert hpack_responses._blocks == {tuple(hit): block}
    encoder.encode([(b":status", b"200"), (b"x-big", b"v" * 4000)])
    assert len(hpack_responses._blocks) == 1  # over 2 KiB: encoded each time
