"""edge.cache.purge without sockets: URL keys, variants, prefixes, tags, soft purges, both stores.

The purge functions act on a ``MemoryTier``; these tests hand them one over each store
implementation and check the store itself afterwards.
"""

from __future__ import annotations

import string
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.cache import purge as cache_purge
from edge.cache.entry import Entry, Variants
from edge.cache.freshness import freshness_policy
from edge.cache.memory import MemoryTier
from edge.cache.purge import PurgeError, url_keys
from edge.cache.store import PyLRU, Store, make_store

NOW = 1_700_000_000.0


def entry(key: bytes, tags: str = "", body: bytes = b"x" * 100) -> Entry:
    headers = [(b"Cache-Control", b"max-age=600")]
    if tags:
        headers.append((b"Surrogate-Key", tags.encode()))
    return Entry(key, 200, b"OK", headers, body, freshness_policy(200, headers, NOW), NOW, 0.0)


def put(store: Store, key: bytes, tags: str = "") -> Entry:
    e = entry(key, tags)
    store.put(key, e, e.charge)
    return e


def put_variants(store: Store, key: bytes, tags_by_variant: dict[bytes, str]) -> Variants:
    variants = Variants((b"accept-encoding",))
    for secondary, tags in tags_by_variant.items():
        variants.by_secondary[secondary] = entry(key, tags)
    store.put(key, variants, variants.charge)
    return variants


def purge_url(store: Store, url: str, *, soft: bool = False) -> int:
    return cache_purge.purge_url(MemoryTier(store), url, soft=soft)


def purge_prefix(store: Store, prefix: str, *, soft: bool = False) -> int:
    return cache_purge.purge_prefix(MemoryTier(store), prefix, soft=soft)


def purge_tag(store: Store, tag: str, *, soft: bool = False) -> int:
    return cache_purge.purge_tag(MemoryTier(store), tag, soft=soft)


def purge_all(store: Store, *, soft: bool = False) -> int:
    return cache_purge.purge_all(MemoryTier(store), soft=soft)


@pytest.fixture(params=["native", "python"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("EDGE_STORE", request.param)
    yield make_store(10 * 1024 * 1024)


@pytest.mark.parametrize(
    ("url", "keys"),
    [
        ("http://example.com/a.js?v=1", [b"http://example.com/a.js?v=1"]),
        ("HTTP://Example.COM:80/A.js", [b"http://example.com/A.js"]),
        ("https://example.com:443/a", [b"https://example.com/a"]),
        ("https://example.com:80/a", [b"https://example.com:80/a"]),
        ("http://example.com", [b"http://example.com/"]),
        ("http://example.com/a#frag", [b"http://example.com/a"]),
        ("http://example.com/a?", [b"http://example.com/a?"]),
        ("http://user:pw@example.com/a", [b"http://example.com/a"]),
        ("http://[::1]:8080/a", [b"http://[::1]:8080/a"]),
        ("http://example.com/caf\u00e9 x", [b"http://example.com/caf%C3%A9%20x"]),
        ("http://example.com/a%20b?x=%2F", [b"http://example.com/a%20b?x=%2F"]),
        ("example.com:443/a", [b"http://example.com:443/a", b"https://example.com/a"]),
        ("//example.com/a", [b"http://example.com/a", b"https://example.com/a"]),
    ],
)
def test_url_keys_match_the_cache_key(url: str, keys: list[bytes]) -> None:
    assert url_keys(url) == keys


@pytest.mark.parametrize("url", ["", "   ", "/a.js", "ftp://example.com/a", "http:///a"])
def test_url_keys_refuse_what_no_key_can_be(url: str) -> None:
    with pytest.raises(PurgeError):
        url_keys(url)


@given(
    host=st.text(string.ascii_letters + string.digits + ".-", min_size=1, max_size=20),
    port=st.sampled_from(["", ":80", ":443", ":8080"]),
    path=st.text(string.ascii_letters + string.digits + "/-._~%", max_size=20),
    scheme=st.sampled_from(["http", "https"]),
)
def test_url_keys_normalise_like_the_front(host: str, port: str, path: str, scheme: str) -> None:
    default = {"http": ":80", "https": ":443"}[scheme]
    expected_host = host.lower() + ("" if port == default else port)
    target = "/" + path
    assert url_keys(f"{scheme}://{host}{port}{target}") == [f"{scheme}://{expected_host}{target}".encode()]


def test_purge_url_removes_every_variant_and_only_that_url(store: Store) -> None:
    put_variants(store, b"http://example.com/a.js", {b"gzip": "", b"br": "", b"": ""})
    put(store, b"http://example.com/a.js?v=2")
    put(store, b"https://example.com/a.js")
    before = store.total_charge
    assert purge_url(store, "http://EXAMPLE.com:80/a.js") == 3
    assert b"http://example.com/a.js" not in store
    assert set(store) == {b"http://example.com/a.js?v=2", b"https://example.com/a.js"}
    assert store.total_charge < before
    assert purge_url(store, "http://example.com/a.js") == 0


def test_purge_url_without_scheme_takes_both(store: Store) -> None:
    put(store, b"http://example.com/a")
    put(store, b"https://example.com/a")
    assert purge_url(store, "example.com/a") == 2
    assert len(store) == 0


def test_purge_url_does_not_count_as_a_lookup(store: Store) -> None:
    put(store, b"http://example.com/a")
    purge_url(store, "http://example.com/a")
    purge_url(store, "http://example.com/b")
    assert store.hits == 0 and store.misses == 0


def test_soft_purge_url_keeps_entries_but_makes_them_stale(store: Store) -> None:
    variants = put_variants(store, b"http://example.com/a", {b"gzip": "", b"br": ""})
    charge = store.total_charge
    assert purge_url(store, "http://example.com/a", soft=True) == 2
    assert store.peek(b"http://example.com/a") is variants
    assert store.total_charge == charge
    assert not any(e.is_fresh(NOW) for e in variants.by_secondary.values())


def test_purge_prefix_matches_the_url_string_on_one_host(store: Store) -> None:
    for key in [
        b"http://example.com/assets/a.js",
        b"http://example.com/assets/b/c.css",
        b"http://example.com/assets-old/x",
        b"http://example.com/other",
        b"http://example.com.evil/assets/a.js",
        b"http://example.com:8080/assets/a.js",
        b"https://example.com/assets/a.js",
    ]:
        put(store, key)
    assert purge_prefix(store, "http://example.com/assets/") == 2
    assert purge_prefix(store, "example.com/assets") == 2  # assets-old over http, assets/ over https
    assert set(store) == {
        b"http://example.com/other",
        b"http://example.com.evil/assets/a.js",
        b"http://example.com:8080/assets/a.js",
    }
    assert purge_prefix(store, "http://example.com") == 1  # the whole host, not its look-alikes
    assert len(store) == 2


def test_soft_purge_prefix(store: Store) -> None:
    a = put(store, b"http://example.com/assets/a.js")
    b = put(store, b"http://example.com/b")
    assert purge_prefix(store, "http://example.com/assets/", soft=True) == 1
    assert len(store) == 2
    kept = store.peek(a.key)
    assert kept is not a and kept.body == a.body and not kept.is_fresh(NOW)
    assert a.is_fresh(NOW), "a stored entry never changes: the soft purge stored a stale copy"
    assert store.peek(b.key) is b and b.is_fresh(NOW)


def test_soft_purge_keeps_the_charge_and_the_siblings_stale(store: Store) -> None:
    a = entry(b"http://example.com/a.js")
    a.encodings = {}
    a.encodings[b"br"] = sibling = Entry(
        a.key, 200, b"OK", [*a.headers, (b"Content-Encoding", b"br")], b"z", a.policy, NOW, 0.0
    )
    a.encodings[b"gzip"] = a  # a coding that did not shrink the body: the entry itself
    store.put(a.key, a, a.charge)
    charge = store.total_charge
    assert purge_url(store, "http://example.com/a.js", soft=True) == 1
    kept = store.peek(a.key)
    assert store.total_charge == charge
    assert kept.encodings is not None and kept.encodings[b"gzip"] is kept
    assert not kept.is_fresh(NOW) and not kept.encodings[b"br"].is_fresh(NOW)
    assert sibling.is_fresh(NOW)


def test_purge_tag_from_surrogate_key_and_cache_tag(store: Store) -> None:
    put(store, b"http://example.com/1", "a b")
    cache_tag = Entry(
        b"http://example.com/2",
        200,
        b"OK",
        [(b"Cache-Control", b"max-age=60"), (b"Cache-Tag", b"x,b")],
        b"",
        freshness_policy(200, [(b"Cache-Control", b"max-age=60")], NOW),
        NOW,
        0.0,
    )
    store.put(cache_tag.key, cache_tag, cache_tag.charge)
    put(store, b"http://example.com/3", "ab")
    assert purge_tag(store, "b") == 2
    assert set(store) == {b"http://example.com/3"}
    assert purge_tag(store, "b") == 0


def test_purge_tag_takes_only_the_tagged_variants(store: Store) -> None:
    variants = put_variants(store, b"http://example.com/v", {b"gzip": "t", b"br": "u", b"": "t u"})
    charge = store.total_charge
    assert purge_tag(store, "t") == 2
    assert list(variants.by_secondary) == [b"br"]
    assert store.peek(b"http://example.com/v") is variants
    assert store.total_charge == variants.charge < charge
    assert purge_tag(store, "u") == 1
    assert len(store) == 0


def test_soft_purge_tag_marks_only_the_tagged_variants(store: Store) -> None:
    variants = put_variants(store, b"http://example.com/v", {b"gzip": "t", b"br": "u"})
    assert purge_tag(store, "t", soft=True) == 1
    assert not variants.by_secondary[b"gzip"].is_fresh(NOW)
    assert variants.by_secondary[b"br"].is_fresh(NOW)


@pytest.mark.parametrize("tag", ["", " ", "a b", "a,b", "\u2603"])
def test_purge_tag_refuses_what_no_header_can_list(store: Store, tag: str) -> None:
    with pytest.raises(PurgeError):
        purge_tag(store, tag)


def test_purge_all(store: Store) -> None:
    put(store, b"http://example.com/1")
    put_variants(store, b"http://example.com/2", {b"gzip": "", b"br": ""})
    assert purge_all(store, soft=True) == 3
    assert len(store) == 2
    assert purge_all(store) == 3
    assert len(store) == 0 and store.total_charge == 0


@given(
    paths=st.lists(st.text("ab/", max_size=4), max_size=12, unique=True),
    prefix=st.text("ab/", max_size=3),
)
def test_purge_prefix_agrees_with_a_model(paths: list[str], prefix: str) -> None:
    store = PyLRU(1 << 30)
    for path in paths:
        put(store, f"http://h/{path}".encode())
    purged = purge_prefix(store, f"http://h/{prefix}")
    kept = {f"http://h/{p}".encode() for p in paths if not p.startswith(prefix)}
    assert set(store) == kept
    assert purged == len(paths) - len(kept)
