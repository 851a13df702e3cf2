"""What to do with an upstream response when its head arrives: keep it, how, and for whom.

Sans-I/O: :func:`plan_admission` takes the request, the response head and ``now``
and returns a :class:`StorePlan`; the core then streams the body accordingly.
Everything decided before the first body byte lives here; what can only be known
from the body (an undeclared length passing ``max_object_size``) is the caller's.

Rules this module guarantees:

- the fields kept and relayed are the upstream's end-to-end fields: hop-by-hop
  fields, the ones Connection names, Content-Length, Age and X-Cache are dropped, Date is
  ensured (RFC 9110 §6.6.1) and this node's Via is added;
- a response is stored only when ``edge.cache.storability`` allows it; a 5xx that
  stale-if-error or grace lets the stale entry outlive is not stored over it;
- fields named by ``private="..."`` are never stored; ``Set-Cookie`` of a stored
  response reaches only the client whose request fetched it (``leader_fields``);
- a compressible response gets ``Vary: Accept-Encoding`` (compression is this
  node's, so the Vary is too) and is kept whole up to ``max_object_size``;
- any other 200 longer than ``slice_size`` with a declared length and no Vary is
  kept as slices (``edge.cache.slices``); anything else declared larger than
  ``max_object_size`` is relayed, not stored (``too-large``);
- a response with a transfer coding other than chunked (RFC 9112 §6.3: its body ends
  with the close) is relayed, never stored: a clean close is all that says the body is
  whole (an upstream that crashes or is cut by a middlebox closes cleanly too), and the
  bytes are in a coding this node does not undo, so they are not the representation
  another client would be given;
- a response not stored for a reason that holds for every client (``private``,
  ``no-store``, ``Set-Cookie``, ``Vary: *``, no freshness) makes the key
  hit-for-pass, so the next clients skip collapsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.cache import stale as stale_rules
from edge.cache.encoded import may_compress, with_vary_accept_encoding
from edge.cache.entry import Entry
from edge.cache.fieldpool import pooled_fields
from edge.cache.freshness import DefaultTtls, Policy
from edge.cache.key import secondary_key, vary_names
from edge.cache.reuse import request_directives
from edge.cache.storability import fields_to_strip, why_not_storable
from edge.cache.validation import merge_not_modified
from edge.http.dates import format_http_date, parse_http_date
from edge.http.fields import HOP_BY_HOP, Headers, connection_tokens, get_all, get_one
from edge.http.message import Request

__all__ = [
    "AdmissionRules",
    "RefreshPlan",
    "StorePlan",
    "plan_admission",
    "plan_refresh",
    "stored_fields",
]

NOT_STORED_FIELDS = HOP_BY_HOP | {b"content-length", b"age", b"x-cache"}
"""Fields never kept: framing and hop-by-hop ones, Age (recomputed on every send), and
X-Cache, which says only what this node did (Cache-Status carries every tier)."""

RESPONSE_DEPENDENT = frozenset({"private", "no-store", "set-cookie", "vary-star", "no-freshness"})
"""Reasons that hold for every client asking for the key, so the key becomes hit-for-pass."""


@dataclass(frozen=True, slots=True)
class AdmissionRules:
    """The operator's settings that admission depends on."""

    max_object_size: int
    """Largest response kept whole."""
    slice_size: int
    """Objects longer than this are kept as slices."""
    compress: bool
    """The node makes compressed variants (some coding is configured)."""
    compress_min_size: int
    stale_grace: float
    """Seconds past expiry a stale response may still be served while the upstream fails."""
    ttls: DefaultTtls


@dataclass(frozen=True, slots=True)
class StorePlan:
    """What happens to one upstream response, decided from its head alone."""

    policy: Policy
    fields: Headers
    """The fields every reader gets and the cache keeps (no Set-Cookie when stored)."""
    leader_fields: Headers
    """Fields only the client whose request started the fetch receives (its Set-Cookie)."""
    not_storable: str | None
    """Why the response is not stored, for Cache-Status ``detail``; None when it is."""
    vary: tuple[bytes, ...] | None
    """Lower-cased Vary names, () when it does not vary, None for ``Vary: *``."""
    secondary: bytes
    """The request's secondary key under ``vary`` (b"" when it does not vary)."""
    length: int | None
    """The declared body length, None when undeclared."""
    compressible: bool
    """Kept whole with room for compressed siblings."""
    sliced: bool
    """Kept as slices, not whole."""

    @property
    def hit_for_pass(self) -> bool:
        """Every client would get the same refusal: skip collapsing for the key a while."""
        return self.not_storable in RESPONSE_DEPENDENT


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """A stored response freshened by a 304 (RFC 9111 §4.3.4)."""

    fields: Headers
    policy: Policy
    not_storable: str | None
    """Why the freshened response may no longer be kept (the 304 withdrew permission)."""


def stored_fields(upstream: Headers, response_time: float, via: bytes) -> tuple[Headers, float]:
    """The end-to-end fields to keep and relay, and the response's Date (ensured)."""
    named = connection_tokens(upstream)
    fields = [(k, v) for k, v in upstream if (lk := k.lower()) not in NOT_STORED_FIELDS and lk not in named]
    date_raw = get_one(fields, b"date")
    date = parse_http_date(date_raw) if date_raw is not None else None
    if date is None:
        # RFC 9110 §6.6.1: a recipient with a clock adds Date when it caches or forwards.
        date = response_time
        if date_raw is None:
            fields.append((b"Date", format_http_date(response_time)))
    fields.append((b"Via", via))
    return pooled_fields(fields), date


def plan_admission(
    req: Request,
    status: int,
    fields: Headers,
    date: float,
    length: int | None,
    stale: Entry | None,
    now: float,
    rules: AdmissionRules,
    transfer_coded: bool = False,
) -> StorePlan:
    """Decide, from the head of a (non-304) upstream response to ``req``, what to keep.

    ``fields`` come from :func:`stored_fields`; ``stale`` is the stored response
    being revalidated, if any; ``now`` is when the response arrived. ``transfer_coded``:
    the upstream applied a transfer coding other than chunked (its body ends with the close).
    """
    policy = rules.ttls.policy(status, fields, date, req.target)
    why = why_not_storable(req, status, fields, policy)
    if why is None and transfer_coded:
        why = "transfer-coded"
    if (
        why is None
        and status >= 500
        and stale is not None
        and stale_rules.if_error(stale, request_directives(req), now, rules.stale_grace)
    ):
        why = "stale-if-error"  # keep serving the stored response rather than replace it
    vary = vary_names(get_all(fields, b"vary"))
    compressible = (
        why is None
        and rules.compress
        and may_compress(status, fields, policy.directives, length, rules.compress_min_size)
    )
    if compressible:
        # The Vary is ours to add (the upstream did not vary); it does not make this a variant.
        fields = with_vary_accept_encoding(fields)
    sliced = (
        why is None
        and status == 200
        and not vary
        and length is not None
        and length > rules.slice_size
        and not (compressible and length <= rules.max_object_size)
    )
    if not sliced and why is None and length is not None and length > rules.max_object_size:
        why = "too-large"
    strip = fields_to_strip(policy)
    if strip:
        fields = [(k, v) for k, v in fields if k.lower() not in strip]
    leader: Headers = []
    if why is None or sliced:
        # A cookie belongs to the client whose request set it: never stored, never shared.
        leader = [(k, v) for k, v in fields if k.lower() == b"set-cookie"]
        if leader:
            fields = [(k, v) for k, v in fields if k.lower() != b"set-cookie"]
    return StorePlan(
        policy=policy,
        fields=fields,
        leader_fields=leader,
        not_storable=why,
        vary=vary,
        secondary=secondary_key(req, vary) if vary else b"",
        length=length,
        compressible=compressible,
        sliced=sliced,
    )


def plan_refresh(
    req: Request, stale: Entry, fields_304: Headers, date: float, ttls: DefaultTtls
) -> RefreshPlan:
    """The stored response's fields and freshness after a 304 whose validators matched."""
    merged = merge_not_modified(stale.headers, fields_304)
    if stale.encodings is not None:
        merged = with_vary_accept_encoding(merged)  # a 304's own Vary must not drop ours
    policy = ttls.policy(stale.status, merged, date, req.target)
    return RefreshPlan(merged, policy, why_not_storable(req, stale.status, merged, policy))
