"""Weighted rendezvous hashing (``edge/upstream/rendezvous.py``): the guarantees of its docstring.

- deterministic: the same key and members give the same order, whatever order the
  members come in, and the same order as pinned here (so every node and every version
  of the tier agrees);
- removing a member moves only the keys whose first choice it was, each to its former
  second choice; adding one moves keys only to it;
- first-choice shares follow the weights (1, 1, 2 over 20,000 keys: 0.25, 0.25, 0.5);
- one member gets everything, none gives an empty list;
- ties are ordered by id, ``u`` is never 0 or 1 (checked with forced digests), and a
  weight that is not finite and > 0 is refused.

The statistical tests draw their keys from a seeded generator and the hash is fixed, so
they give the same counts on every run; their tolerance (about five standard deviations)
also holds for any other seed, so changing it cannot make them flaky either.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge.upstream import rendezvous
from edge.upstream.rendezvous import rank


@dataclass(frozen=True)
class Up:
    id: bytes
    weight: float = 1.0


def firsts(keys: Sequence[bytes], members: Sequence[Up]) -> list[bytes]:
    return [rank(key, members)[0].id for key in keys]


keys_st = st.binary(max_size=80)
weights_st = st.one_of(st.integers(1, 10).map(float), st.floats(0.01, 100.0))
members_st = st.lists(
    st.builds(Up, st.binary(min_size=1, max_size=24), weights_st), unique_by=lambda m: m.id, max_size=8
)
SETTINGS = settings(max_examples=300, deadline=None)


# -- determinism ------------------------------------------------------------------------------


@SETTINGS
@given(key=keys_st, members=members_st, data=st.data())
def test_the_order_depends_on_the_key_and_members_only(
    key: bytes, members: list[Up], data: st.DataObject
) -> None:
    given_order = list(members)
    ranked = rank(key, members)
    assert members == given_order, "rank changed its argument"
    assert sorted(ranked, key=lambda m: m.id) == sorted(members, key=lambda m: m.id)
    assert rank(key, members) == ranked
    shuffled = data.draw(st.permutations(members))
    assert rank(key, shuffled) == ranked
    assert rank(key, tuple(shuffled)) == ranked


SHIELDS = [
    Up(b"http://shield-a.internal:8000", 1.0),
    Up(b"http://shield-b.internal:8000", 1.0),
    Up(b"http://shield-c.internal:8000", 2.0),
]


def test_the_order_is_the_same_in_every_process_and_version() -> None:
    # Pinned: a change of hash, of how (key, id) is fed to it or of the score remaps every
    # key of a tier whose nodes run different versions. Change these only on purpose.
    keys = [b"https://static.example.com/assets/%d.js" % i for i in range(24)]
    assert "".join(letter(rank(key, SHIELDS)[0]) for key in keys) == "cabbcaccacbaaccabccbcccc"
    assert "".join(letter(m) for m in rank(keys[0], SHIELDS)) == "cab"


def letter(member: Up) -> str:
    return "abc"[SHIELDS.index(member)]


# -- removing and adding members --------------------------------------------------------------


@SETTINGS
@given(keys=st.lists(keys_st, min_size=1, max_size=20), members=members_st, data=st.data())
def test_removing_a_member_moves_only_its_keys_to_their_second_choice(
    keys: list[bytes], members: list[Up], data: st.DataObject
) -> None:
    assume(members)
    gone = data.draw(st.sampled_from(members))
    rest = [m for m in members if m is not gone]
    for key in keys:
        before, after = rank(key, members), rank(key, rest)
        if before[0] is gone:
            assert after[:1] == before[1:2], (
                "a key of the removed member went elsewhere than its second choice"
            )
        else:
            assert after[0] is before[0], "a key moved although its first choice stayed"
        assert after == [m for m in before if m is not gone]


@SETTINGS
@given(
    keys=st.lists(keys_st, min_size=1, max_size=20),
    members=members_st,
    new=st.builds(Up, st.binary(min_size=1, max_size=24), weights_st),
)
def test_adding_a_member_moves_keys_only_to_it(keys: list[bytes], members: list[Up], new: Up) -> None:
    assume(all(m.id != new.id for m in members))
    grown = [*members, new]
    for key in keys:
        before, after = rank(key, members), rank(key, grown)
        assert after[0] is new or after[0] is before[0]
        assert [m for m in after if m is not new] == before


def test_removing_a_third_of_the_members_moves_about_a_third_of_the_keys() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(32) for _ in range(6000)]
    six = [Up(b"http://10.0.0.%d:8000" % i) for i in range(6)]
    before, after = firsts(keys, six), firsts(keys, six[:4])
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    assert moved == sum(b in (six[4].id, six[5].id) for b in before)
    assert abs(moved / len(keys) - 2 / 6) < 0.03


# -- shares -----------------------------------------------------------------------------------


def shares(keys: Sequence[bytes], members: Sequence[Up]) -> list[float]:
    counts = Counter(firsts(keys, members))
    return [counts[m.id] / len(keys) for m in members]


@pytest.mark.parametrize("source", ["random", "urls"])
def test_first_choices_follow_the_weights(source: str) -> None:
    # 20,000 keys: the standard deviation of a share is at most 0.0036, so 0.018 is five of them.
    rng = random.Random(20_240_601)
    if source == "random":
        keys = [rng.randbytes(rng.randint(1, 80)) for _ in range(20_000)]
    else:  # structured keys, where a poor hash shows its bias
        keys = [b"https://static.example.com/assets/img/%05d.png" % i for i in range(20_000)]
    got = shares(keys, SHIELDS)
    for share, expected in zip(got, (0.25, 0.25, 0.5), strict=True):
        assert abs(share - expected) < 0.018, got


def test_shares_follow_the_weights_whatever_member_has_them() -> None:
    rng = random.Random(99)
    keys = [rng.randbytes(24) for _ in range(20_000)]
    members = [Up(b"x", 3.0), Up(b"y", 1.0), Up(b"z", 0.5), Up(b"w", 0.5)]
    for share, expected in zip(shares(keys, members), (0.6, 0.2, 0.1, 0.1), strict=True):
        assert abs(share - expected) < 0.018


# -- edges ------------------------------------------------------------------------------------


@SETTINGS
@given(key=keys_st, member=st.builds(Up, st.binary(min_size=1, max_size=24), weights_st))
def test_a_single_member_gets_every_key(key: bytes, member: Up) -> None:
    assert rank(key, [member]) == [member]


@given(key=keys_st)
def test_no_members_give_an_empty_list(key: bytes) -> None:
    assert rank(key, []) == []
    assert rank(key, ()) == []


class ForcedDigest:
    """Stands in for BLAKE2b: every member gets the same 8-byte digest."""

    def __init__(self, digest: bytes) -> None:
        self.value = digest

    def __call__(self, data: bytes = b"", *, digest_size: int = 64) -> ForcedDigest:
        return self

    def update(self, data: bytes) -> None:
        pass

    def copy(self) -> ForcedDigest:
        return self

    def digest(self) -> bytes:
        return self.value


@pytest.mark.parametrize("digest", [b"\x00" * 8, b"\xff" * 8, b"\x80" + b"\x00" * 7])
def test_equal_scores_are_ordered_by_id_and_u_is_never_0_or_1(
    monkeypatch: pytest.MonkeyPatch, digest: bytes
) -> None:
    # All zeros and all ones are the digests that would give u = 0 and u = 1 (log = -inf, 0).
    monkeypatch.setattr(rendezvous, "blake2b", ForcedDigest(digest))
    members = [Up(b"c"), Up(b"a"), Up(b"b")]
    assert [m.id for m in rank(b"k", members)] == [b"a", b"b", b"c"]
    heavy = Up(b"z", 2.0)
    assert rank(b"k", [*members, heavy])[0] is heavy, "equal u: the heavier member wins"


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_a_weight_that_is_not_finite_and_positive_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        rank(b"k", [Up(b"a"), Up(b"b", weight)])
