"""Cache-Status members (RFC 9211) as values: one spelling, always valid Structured Fields.

The oracle is ``http_sf``, an RFC 8941 parser: whatever member the node builds parses
back to the same name and parameters.
"""

from __future__ import annotations

import http_sf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.cache.status import FWD_REASONS, CacheStatus, cache_name


def test_parameters_come_in_one_order() -> None:
    assert bytes(CacheStatus(b"edge", hit=True, ttl=5)) == b"edge; hit; ttl=5"
    assert bytes(CacheStatus(b"edge", hit=True, ttl=-3, detail=b"stale-while-revalidate")) == (
        b"edge; hit; ttl=-3; detail=stale-while-revalidate"
    )
    member = CacheStatus(b"edge", fwd=b"uri-miss", fwd_status=200, stored=True, collapsed=True)
    assert bytes(member) == b"edge; fwd=uri-miss; fwd-status=200; stored; collapsed"
    assert bytes(CacheStatus(b"edge", fwd=b"miss", detail=b"only-if-cached")) == (
        b"edge; fwd=miss; detail=only-if-cached"
    )


def test_a_name_that_is_not_a_token_is_quoted() -> None:
    assert cache_name("edge-eu.1") == b"edge-eu.1"
    assert cache_name("9edge") == b'"9edge"'
    assert cache_name('my "edge"') == b'"my \\"edge\\""'
    with pytest.raises(ValueError):
        cache_name("caf\u00e9")


def test_a_member_is_a_hit_or_goes_forward_never_both() -> None:
    with pytest.raises(ValueError):
        CacheStatus(b"edge", hit=True, fwd=b"stale")
    with pytest.raises(ValueError):
        CacheStatus(b"edge", fwd=b"nonsense")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CacheStatus(b"edge", fwd=b"miss", detail=b"not a token")


NAMES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
TOKENS = st.from_regex(r"\A[a-z][a-z0-9\-]{0,20}\Z").map(str.encode)


@given(
    name=NAMES,
    hit=st.booleans(),
    fwd=st.sampled_from(sorted(FWD_REASONS)),
    fwd_status=st.one_of(st.none(), st.integers(100, 599)),
    ttl=st.one_of(st.none(), st.integers(-(10**6), 10**6)),
    stored=st.booleans(),
    detail=st.one_of(st.none(), TOKENS),
    collapsed=st.booleans(),
)
def test_every_member_parses_back_as_structured_fields(
    name: str,
    hit: bool,
    fwd: bytes,
    fwd_status: int | None,
    ttl: int | None,
    stored: bool,
    detail: bytes | None,
    collapsed: bool,
) -> None:
    member = CacheStatus(
        cache_name(name),
        hit=hit,
        fwd=None if hit else fwd,  # type: ignore[arg-type]
        fwd_status=fwd_status,
        ttl=ttl,
        stored=stored,
        detail=detail,
        collapsed=collapsed,
    )
    # Another cache's member before ours, as a field combined from two tiers would read.
    [(other, _), (parsed_name, params)] = http_sf.parse(b"shield; hit, " + bytes(member), tltype="list")
    assert str(other) == "shield"
    assert str(parsed_name) == name
    expected: dict[str, object] = {}
    if hit:
        expected["hit"] = True
    else:
        expected["fwd"] = fwd.decode()
    if fwd_status is not None:
        expected["fwd-status"] = fwd_status
    if ttl is not None:
        expected["ttl"] = ttl
    if stored:
        expected["stored"] = True
    if detail is not None:
        expected["detail"] = detail.decode()
    if collapsed:
        expected["collapsed"] = True
    assert {k: v if isinstance(v, bool | int) else str(v) for k, v in params.items()} == expected
