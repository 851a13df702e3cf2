"""Sans-I/O tests of admission: what happens to an upstream response when its head arrives.

``plan_admission`` and ``plan_refresh`` take the request, the head and ``now``; no socket,
no clock. The end-to-end behaviour (collapsing, hit-for-pass, slices) is covered in
tests/core over real connections; here every branch of the decision is pinned down.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.cache.admission import AdmissionRules, plan_admission, plan_refresh, stored_fields
from edge.cache.entry import Entry
from edge.cache.freshness import DefaultTtls, freshness_policy
from edge.http.dates import format_http_date
from edge.http.fields import Headers, get_all, get_one
from edge.http.message import Request, fields_of

NOW = 1_700_000_000.0
DATE = format_http_date(NOW)
VIA = b"1.1 edge"
MiB = 1 << 20

RULES = AdmissionRules(
    max_object_size=64 * MiB,
    slice_size=MiB,
    compress=True,
    compress_min_size=1024,
    stale_grace=0.0,
    ttls=DefaultTtls([]),
)


def req(method: bytes = b"GET", target: bytes = b"/x", **headers: str) -> Request:
    hs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request(method, target, hs, fields_of(hs), host=b"h")


def head(*fields: tuple[str, str]) -> Headers:
    return [(b"Date", DATE), *((k.encode(), v.encode()) for k, v in fields)]


def plan(
    fields: Headers,
    status: int = 200,
    length: int | None = 100,
    request: Request | None = None,
    stale: Entry | None = None,
    rules: AdmissionRules = RULES,
    transfer_coded: bool = False,
):  # type: ignore[no-untyped-def]
    return plan_admission(request or req(), status, fields, NOW, length, stale, NOW, rules, transfer_coded)


def test_a_fresh_response_is_stored_as_it_came() -> None:
    fields = head(("Cache-Control", "max-age=60"), ("Content-Type", "image/png"))
    p = plan(fields)
    assert p.not_storable is None and not p.hit_for_pass
    assert p.fields == fields and p.leader_fields == []
    assert p.policy.lifetime == 60
    assert (p.vary, p.secondary, p.compressible, p.sliced) == ((), b"", False, False)


@pytest.mark.parametrize(
    ("fields", "why", "hit_for_pass"),
    [
        (head(("Cache-Control", "no-store")), "no-store", True),
        (head(("Cache-Control", "private, max-age=60")), "private", True),
        (head(("Cache-Control", "max-age=60"), ("Set-Cookie", "a=1")), "set-cookie", True),
        (head(("Cache-Control", "max-age=60"), ("Vary", "*")), "vary-star", True),
        (head(), "no-freshness", True),
    ],
)
def test_refusals_that_hold_for_every_client_make_the_key_pass(
    fields: Headers, why: str, hit_for_pass: bool
) -> None:
    p = plan(fields, status=302 if why == "no-freshness" else 200)
    assert p.not_storable == why
    assert p.hit_for_pass is hit_for_pass
    assert p.leader_fields == [], "a response not kept goes to its client with its fields untouched"
    assert p.fields == fields


def test_a_request_no_store_is_refused_for_that_client_only() -> None:
    p = plan(head(("Cache-Control", "max-age=60")), request=req(Cache_Control="no-store"))
    assert p.not_storable == "request-no-store" and not p.hit_for_pass


def test_a_stored_set_cookie_reaches_only_the_client_that_fetched_it() -> None:
    fields = head(("Cache-Control", "public, max-age=60"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"))
    p = plan(fields)
    assert p.not_storable is None
    assert p.leader_fields == [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
    assert get_all(p.fields, b"set-cookie") == []


def test_fields_named_by_private_are_never_kept() -> None:
    p = plan(head(("Cache-Control", 'max-age=60, private="X-Secret"'), ("X-Secret", "s"), ("X-Other", "o")))
    assert p.not_storable is None
    assert get_one(p.fields, b"x-secret") is None and get_one(p.fields, b"x-other") == b"o"


def test_a_5xx_does_not_replace_a_stale_entry_that_may_outlive_it() -> None:
    stored = head(("Cache-Control", "max-age=10, stale-if-error=600"))
    stale = Entry(b"k", 200, b"OK", stored, b"old", freshness_policy(200, stored, NOW - 100), NOW - 100, 0.0)
    fields = head(("Cache-Control", "max-age=60"))
    assert plan(fields, status=503, stale=stale).not_storable == "stale-if-error"
    assert not plan(fields, status=503, stale=stale).hit_for_pass
    assert plan(fields, status=503).not_storable is None, "without a stale entry a cacheable 503 is kept"


def test_a_compressible_response_varies_on_accept_encoding_and_stays_whole() -> None:
    fields = head(("Cache-Control", "max-age=60"), ("Content-Type", "text/css"))
    p = plan(fields, length=5 * MiB)
    assert p.compressible and not p.sliced and p.not_storable is None
    assert get_one(p.fields, b"vary") == b"Accept-Encoding"
    assert p.vary == (), "the node's own Vary does not make variants"
    small = plan(fields, length=100)
    assert not small.compressible and get_one(small.fields, b"vary") is None
    off = plan(fields, length=5 * MiB, rules=AdmissionRules(64 * MiB, MiB, False, 1024, 0.0, DefaultTtls([])))
    assert not off.compressible and off.sliced


def test_large_objects_are_sliced_and_too_large_ones_relayed() -> None:
    binary = head(("Cache-Control", "max-age=60"), ("Content-Type", "video/mp4"))
    assert plan(binary, length=MiB + 1).sliced
    assert not plan(binary, length=MiB).sliced
    huge = plan(binary, length=100 * MiB)
    assert huge.sliced and huge.not_storable is None, "slices have no object size limit"
    assert plan(binary, length=None).not_storable is None, "an undeclared length is judged by the body"
    varied = plan([*binary, (b"Vary", b"Accept-Language")], length=100 * MiB)
    assert not varied.sliced and varied.not_storable == "too-large"
    not_200 = plan(binary, status=203, length=100 * MiB)
    assert not not_200.sliced and not_200.not_storable == "too-large"
    css = plan(head(("Cache-Control", "max-age=60"), ("Content-Type", "text/css")), length=100 * MiB)
    assert css.sliced and css.not_storable is None, "too large to keep whole: sliced, served identity"


def test_vary_names_give_the_secondary_key() -> None:
    fields = head(("Cache-Control", "max-age=60"), ("Vary", "Accept-Language, accept-language"))
    p = plan(fields, request=req(Accept_Language="fr"))
    assert p.vary == (b"accept-language",)
    assert p.secondary == b"fr"
    assert plan(head(("Cache-Control", "max-age=60"), ("Vary", "*"))).vary is None


def test_the_operators_default_ttl_applies_only_without_explicit_freshness() -> None:
    rules = AdmissionRules(64 * MiB, MiB, True, 1024, 0.0, DefaultTtls([("/static/*", 300.0), ("*", 5.0)]))
    lm = format_http_date(NOW - 1000).decode()
    assert (
        plan(
            head(("Last-Modified", lm)), request=req(target=b"/static/a.js?v=1"), rules=rules
        ).policy.lifetime
        == 300
    )
    assert plan(head(("Last-Modified", lm)), request=req(target=b"/other"), rules=rules).policy.lifetime == 5
    explicit = plan(head(("Cache-Control", "max-age=60")), request=req(target=b"/static/a"), rules=rules)
    assert explicit.policy.lifetime == 60


def test_stored_fields_drop_hop_by_hop_and_framing_and_add_date_and_via() -> None:
    upstream = [
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"10"),
        (b"Age", b"30"),
        (b"ETag", b'"e"'),
    ]
    fields, date = stored_fields(upstream, NOW, VIA)
    assert fields == [(b"ETag", b'"e"'), (b"Date", DATE), (b"Via", VIA)]
    assert date == NOW
    kept, date = stored_fields([(b"Date", format_http_date(NOW - 60))], NOW, VIA)
    assert date == NOW - 60 and kept == [(b"Date", format_http_date(NOW - 60)), (b"Via", VIA)]
    bad, date = stored_fields([(b"Date", b"yesterday")], NOW, VIA)
    assert date == NOW and bad == [(b"Date", b"yesterday"), (b"Via", VIA)], (
        "an odd Date is relayed, not fixed"
    )


def test_a_304_freshens_the_stored_fields_or_withdraws_permission() -> None:
    stored = head(("Cache-Control", "max-age=10"), ("ETag", '"e"'), ("Content-Type", "text/css"))
    stale = Entry(b"k", 200, b"OK", stored, b"body", freshness_policy(200, stored, NOW - 100), NOW - 100, 0.0)
    fresh = plan_refresh(
        req(), stale, [(b"Cache-Control", b"max-age=600"), (b"ETag", b'"e"')], NOW, RULES.ttls
    )
    assert fresh.not_storable is None and fresh.policy.lifetime == 600
    assert get_one(fresh.fields, b"content-type") == b"text/css"
    withdrawn = plan_refresh(req(), stale, [(b"Cache-Control", b"no-store")], NOW, RULES.ttls)
    assert withdrawn.not_storable == "no-store"
    stale.encodings = {}
    kept_vary = plan_refresh(req(), stale, [(b"Vary", b"Origin")], NOW, RULES.ttls)
    assert {v.lower() for v in get_all(kept_vary.fields, b"vary")} == {b"origin", b"accept-encoding"}


FIELD = st.sampled_from(
    [
        ("Cache-Control", "max-age=60"),
        ("Cache-Control", "public"),
        ("Cache-Control", "private"),
        ("Cache-Control", 'private="X-Secret"'),
        ("Cache-Control", "no-store"),
        ("Set-Cookie", "a=1"),
        ("X-Secret", "s"),
        ("Vary", "Accept-Language"),
        ("Vary", "*"),
        ("Content-Type", "text/css"),
        ("Content-Type", "video/mp4"),
        ("Last-Modified", format_http_date(NOW - 1000).decode()),
    ]
)


@given(
    fields=st.lists(FIELD, max_size=6),
    status=st.sampled_from([200, 203, 301, 404, 500, 503]),
    length=st.one_of(st.none(), st.integers(0, 200 * MiB)),
)
def test_what_is_kept_never_leaks_what_must_not(
    fields: list[tuple[str, str]], status: int, length: int | None
) -> None:
    p = plan(head(*fields), status=status, length=length)
    if p.not_storable is None or p.sliced:
        assert get_all(p.fields, b"set-cookie") == [], "a kept response never carries a cookie"
        if any(v == 'private="X-Secret"' for _, v in fields):
            assert get_one(p.fields, b"x-secret") is None
    if p.sliced:
        assert status == 200 and length is not None and length > RULES.slice_size and not p.vary
    if p.not_storable is None and not p.sliced and length is not None:
        assert length <= RULES.max_object_size
    if p.compressible:
        assert p.not_storable is None and b"accept-encoding" in {
            v.lower() for v in get_all(p.fields, b"vary")
        }
    assert p.hit_for_pass == (
        p.not_storable in {"private", "no-store", "set-cookie", "vary-star", "no-freshness"}
    )


def test_a_transfer_coded_response_is_relayed_not_stored() -> None:
    """RFC 9112 §6.3: a coding other than chunked ends with the close; never kept (issue 17)."""
    fields = head(("Cache-Control", "public, max-age=60"), ("ETag", '"a"'))
    assert plan(fields, length=None).not_storable is None
    p = plan(fields, length=None, transfer_coded=True)
    assert p.not_storable == "transfer-coded"
    assert not p.hit_for_pass and not p.sliced and not p.compressible
