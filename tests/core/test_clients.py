"""Per-client budgets against a model: the connection cap and the token bucket."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.core.clients import ClientLimits, RateLimit


def test_the_connection_cap_refuses_the_next_and_a_close_frees_a_place() -> None:
    limits = ClientLimits(max_connections=2)
    assert limits.opened("a") and limits.opened("a")
    assert not limits.opened("a")
    assert limits.opened("b")  # another address has its own places
    limits.closed("a")
    assert limits.opened("a")
    limits.closed("a")
    limits.closed("a")
    limits.closed("b")
    assert limits.connections == {}  # an address with nothing open holds no entry
    assert limits.refused_connections == 1


def test_no_cap_when_zero() -> None:
    limits = ClientLimits(max_connections=0)
    assert all(limits.opened("a") for _ in range(10_000))


def test_a_burst_then_one_request_per_token() -> None:
    rate = RateLimit(rate=2.0, burst=4)
    assert [rate.retry_after("a", 100.0) for _ in range(5)] == [0, 0, 0, 0, 1]
    assert rate.retry_after("a", 100.4) == 1  # 0.8 of a token
    assert rate.retry_after("a", 100.5) == 0  # a whole one by now
    assert rate.retry_after("b", 100.5) == 0  # other addresses are not charged
    slow = RateLimit(rate=0.1, burst=1)
    assert slow.retry_after("a", 0.0) == 0
    assert slow.retry_after("a", 0.0) == 10  # Retry-After: the seconds to the next token


@given(
    rate=st.floats(0.5, 50.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200),
)
def test_admitted_requests_never_exceed_the_bucket(rate: float, burst: int, gaps: list[float]) -> None:
    limit = RateLimit(rate, burst)
    now = 0.0
    admitted = 0
    for gap in gaps:
        now += gap
        if limit.retry_after("a", now) == 0:
            admitted += 1
        # Over any run from the start, a bucket admits its burst plus what it refilled.
        assert admitted <= burst + rate * now + 1e-6


def test_trusted_proxies_are_never_refused() -> None:
    from edge.http.peers import TrustedProxies

    limits = ClientLimits(max_connections=1, rate=0.001, burst=1, exempt=TrustedProxies.of("10.0.0.0/8"))
    assert limits.opened("10.1.2.3") and limits.opened("10.1.2.3") and limits.opened("10.1.2.3")
    assert limits.opened("192.0.2.1") and not limits.opened("192.0.2.1")
    assert [limits.retry_after("10.1.2.3", 0.0) for _ in range(3)] == [0, 0, 0]
    assert limits.retry_after("192.0.2.1", 0.0) == 0 and limits.retry_after("192.0.2.1", 0.0) > 0
    for _ in range(3):
        limits.closed("10.1.2.3")
    assert "10.1.2.3" not in limits.connections  # nothing left over, nothing negative
