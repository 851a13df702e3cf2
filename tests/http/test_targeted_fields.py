"""CDN-Cache-Control and Edge-Cache-Control as Structured Field Dictionaries (RFC 9213 §2.1).

A targeted field that does not parse as an RFC 8941 Dictionary, is empty, or gives a
directive this node knows a value of the wrong type is ignored whole: Cache-Control
then rules (issue 17).
"""

from __future__ import annotations

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cache.freshness import freshness_policy
from edge.http.cache_control import (
    TARGETED_DELTAS,
    TARGETED_FIELD_LISTS,
    TARGETED_FLAGS,
    Directives,
    parse_targeted,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("lines", "args"),
    [
        ([b"max-age=10"], {b"max-age": b"10"}),
        ([b"max-age=10, private"], {b"max-age": b"10", b"private": None}),
        ([b"max-age=10", b"no-store"], {b"max-age": b"10", b"no-store": None}),  # lines combine
        ([b'private="set-cookie, x-a"'], {b"private": b"set-cookie, x-a"}),
        ([b"max-age=10;foo=1"], {b"max-age": b"10"}),  # parameters are ignored
        ([b"max-age=10, max-age=20"], {b"max-age": b"20"}),  # RFC 8941: the last one wins
        ([b'ext="anything", s-maxage=0'], {b"ext": None, b"s-maxage": b"0"}),  # unknown: kept by name
        (
            [b"stale-while-revalidate=30, must-revalidate"],
            {b"stale-while-revalidate": b"30", b"must-revalidate": None},
        ),
    ],
)
def test_a_valid_targeted_field_gives_its_directives(
    lines: list[bytes], args: dict[bytes, bytes | None]
) -> None:
    directives = parse_targeted(lines)
    assert directives is not None and directives.args == args


@pytest.mark.parametrize(
    "line",
    [
        b'max-age="10"',  # a String, not an Integer
        b"max-age=a",  # a Token
        b"max-age=1.5",  # a Decimal
        b"max-age=-1",  # not delta-seconds
        b"max-age=?1",  # a Boolean
        b"max-age=10, no-store=?0",  # a flag that is not true: the whole field goes
        b"no-store=1",
        b"private=set-cookie",  # field names are a String, never a Token (RFC 9213 §2.1)
        b"no-cache=(a b)",  # an Inner List
        b"MAX-AGE=10",  # keys are lower-case: a parse error
        b"max-age=10,,",
        b"max-age=10 junk",
        b"max-age=99999999999999999",  # more than 15 digits
        b"",
        b"   ",
    ],
)
def test_a_field_that_fails_to_parse_or_has_a_wrong_type_is_ignored_whole(line: bytes) -> None:
    assert parse_targeted([line]) is None


def test_an_ignored_targeted_field_leaves_cache_control_in_charge() -> None:
    def policy(*fields: tuple[bytes, bytes]):  # type: ignore[no-untyped-def]
        return freshness_policy(200, list(fields), NOW)

    cc = (b"Cache-Control", b"max-age=600")
    assert (policy(cc, (b"CDN-Cache-Control", b"max-age=10")).lifetime, policy(cc).targeted) == (10, False)
    for bad in (b'max-age="10"', b"max-age=a", b"max-age=10, no-store=?0", b"Max-Age=10"):
        p = policy(cc, (b"CDN-Cache-Control", bad))
        assert (p.lifetime, p.targeted) == (600, False), bad
    # an invalid Edge-Cache-Control falls through to a valid CDN-Cache-Control
    p = policy(cc, (b"Edge-Cache-Control", b"max-age=a"), (b"CDN-Cache-Control", b"max-age=5"))
    assert (p.lifetime, p.targeted) == (5, True)
    # a no-store whose value is not true is no no-store at all: the field is ignored
    assert "no-store" not in [
        k.decode() for k in policy(cc, (b"CDN-Cache-Control", b"no-store=?0")).directives.args
    ]


# -- properties -------------------------------------------------------------------------------

deltas = st.integers(min_value=0, max_value=10**15 - 1)
field_names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), min_size=1, max_size=3).map(
    ", ".join
)
good_value = {
    **{name: deltas for name in TARGETED_DELTAS},
    **{name: st.just(True) for name in TARGETED_FLAGS},
    **{name: st.one_of(st.just(True), field_names) for name in TARGETED_FIELD_LISTS},
}
other_types = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1),
    st.decimals(min_value=-999, max_value=999, places=2, allow_nan=False, allow_infinity=False),
    st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True).map(http_sf.Token),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
    st.binary(max_size=6),
)


def wrong_for(name: str, value: object) -> bool:
    """Is ``value`` a type RFC 9213 §2.1 does not give directive ``name``?"""
    if name in TARGETED_DELTAS:
        return not (type(value) is int and value >= 0)
    if name in TARGETED_FLAGS:
        return value is not True
    return value is not True and type(value) is not str


good_members = st.dictionaries(
    st.sampled_from(sorted(good_value)), st.none(), min_size=1, max_size=6
).flatmap(lambda names: st.fixed_dictionaries({name: good_value[name] for name in names}))


@given(good_members)
@settings(deadline=None)  # a shared 2-core machine: no per-example timing
def test_well_typed_directives_round_trip_through_the_serialised_field(members: dict[str, object]) -> None:
    line = http_sf.ser({name: (value, {}) for name, value in members.items()}).encode()
    directives = parse_targeted([line])
    assert isinstance(directives, Directives)
    for name, value in members.items():
        arg = directives.args[name.encode()]
        if value is True:
            assert arg is None
        elif name in TARGETED_DELTAS:
            assert directives.delta(name.encode()) == min(int(value), 2147483648)  # type: ignore[call-overload]
        else:
            assert arg == str(value).encode()
    assert len(directives.args) == len(members)


@given(good_members, st.sampled_from(sorted(good_value)), other_types, st.booleans())
@settings(deadline=None)  # a shared 2-core machine: no per-example timing
def test_one_known_directive_with_a_wrong_type_ignores_the_whole_field(
    members: dict[str, object], name: str, value: object, first: bool
) -> None:
    if not wrong_for(name, value):
        value = "not-a-number"
        if not wrong_for(name, value):
            value = 1
    members = {k: v for k, v in members.items() if k != name}
    bad = {name: value}
    ordered = {**bad, **members} if first else {**members, **bad}
    line = http_sf.ser({k: (v, {}) for k, v in ordered.items()}).encode()
    assert parse_targeted([line]) is None


@given(st.binary(max_size=64))
@settings(deadline=None)  # a shared 2-core machine: no per-example timing
def test_any_bytes_are_parsed_or_ignored_never_raise(raw: bytes) -> None:
    directives = parse_targeted([raw])
    try:
        parsed = http_sf.parse(raw, tltype="dictionary")
    except ValueError:
        assert directives is None
        return
    if not parsed:
        assert directives is None
    elif directives is not None:
        assert set(directives.args) == {k.encode() for k in parsed}
