"""The circuit breaker of one upstream (``edge/upstream/health.py``), driven with explicit times.

- table-driven transitions: events at given ``now`` values and the state, probe schedule
  and ``since`` they leave;
- the backoff sequence between failed probes (1, 2, 4, 8, 16, 30, 30 with the defaults),
  measured from each probe's result, and its reset when the circuit closes;
- one probe at a time: ``probe_due`` is False while one is in flight, and a second
  ``probe_started`` claims nothing;
- only a probe closes the circuit: a success on real traffic while down is ignored, a
  failure while down leaves the schedule alone;
- the counters for metrics;
- a Hypothesis state machine against a small model of its own (the delay in closed form,
  ``probe_min * 2**failed_probes`` capped): random failed / succeeded / probe events at
  random increasing times; the circuit is down exactly when the model says so, probes are
  never due while up or in flight, and the backoff never exceeds ``probe_max``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from edge.upstream.health import Health


def run(events: str, health: Health | None = None) -> Health:
    """Apply ``events``, each ``what@now``: failed, succeeded (real traffic), probe (started),
    probe-ok and probe-failed (its result)."""
    health = health or Health()
    for event in events.split():
        what, _, at = event.partition("@")
        now = float(at)
        if what == "failed":
            health.failed(now)
        elif what == "succeeded":
            health.succeeded(now)
        elif what == "probe":
            assert health.probe_started(now), f"no probe due at {now}: {health!r}"
        elif what in ("probe-ok", "probe-failed"):
            health.probe_result(what == "probe-ok", now)
        else:
            raise AssertionError(event)
    return health


OPEN = "failed@10 failed@11 failed@12"
"""Three consecutive failures: down at 12, first probe due at 13."""


Expected = tuple[str, float | None, float | None, int]
"""state, next_probe_at, since, consecutive_failures."""


@dataclass(frozen=True)
class Case:
    name: str
    events: str
    expected: Expected


CASES = [
    Case("new: up, nothing scheduled", "", ("up", None, None, 0)),
    Case("two failures stay up", "failed@10 failed@11", ("up", None, None, 2)),
    Case("the third consecutive failure opens", OPEN, ("down", 13.0, 12.0, 3)),
    Case(
        "a success resets the count",
        "failed@10 failed@11 succeeded@11.5 failed@12 failed@13",
        ("up", None, None, 2),
    ),
    Case("a success after opening does not close", OPEN + " succeeded@12.5", ("down", 13.0, 12.0, 3)),
    Case(
        "a failure while down keeps the schedule", OPEN + " failed@12.9 failed@13.5", ("down", 13.0, 12.0, 3)
    ),
    Case("a probe in flight: nothing scheduled", OPEN + " probe@13", ("down", None, 12.0, 3)),
    Case("a probe may start late", OPEN + " probe@20 probe-failed@20.5", ("down", 22.5, 12.0, 3)),
    Case("a good probe closes", OPEN + " probe@13 probe-ok@13.25", ("up", None, 13.25, 0)),
    Case(
        "a bad probe backs off from its result", OPEN + " probe@13 probe-failed@14", ("down", 16.0, 12.0, 3)
    ),
    Case(
        "real traffic during a probe changes nothing",
        OPEN + " probe@13 succeeded@13.1 failed@13.2 probe-failed@14",
        ("down", 16.0, 12.0, 3),
    ),
    Case(
        "after closing, one failure does not reopen",
        OPEN + " probe@13 probe-ok@13.5 failed@14",
        ("up", None, 13.5, 1),
    ),
    Case(
        "after closing, the threshold reopens with probe_min again",
        OPEN + " probe@13 probe-failed@13 probe@15 probe-ok@15 failed@20 failed@21 failed@22",
        ("down", 23.0, 22.0, 3),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_transitions(case: Case) -> None:
    health = run(case.events)
    assert (health.state, health.next_probe_at, health.since, health.consecutive_failures) == case.expected
    assert health.up is (case.expected[0] == "up")


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_fail_threshold_consecutive_failures_open_the_circuit(threshold: int) -> None:
    health = Health(fail_threshold=threshold)
    for i in range(threshold - 1):
        health.failed(float(i))
        assert health.up
    health.failed(100.0)
    assert not health.up and health.since == 100.0 and health.next_probe_at == 101.0


def test_since_is_the_now_given_at_creation_until_the_state_changes() -> None:
    health = Health(now=5.0)
    run("failed@10 failed@11", health)
    assert health.since == 5.0
    run("failed@12", health)
    assert health.since == 12.0


# -- probes -----------------------------------------------------------------------------------


def test_probe_due_only_while_down_from_its_time() -> None:
    health = Health()
    assert not health.probe_due(0.0) and not health.probe_due(1e9), "up: never due"
    run(OPEN, health)
    assert not health.probe_due(12.0)
    assert not health.probe_due(12.999)
    assert health.probe_due(13.0)
    assert health.probe_due(500.0)


def test_one_probe_at_a_time() -> None:
    health = run(OPEN)
    assert health.probe_started(13.0)
    assert health.probe_in_flight
    for now in (13.0, 14.0, 100.0, 1e6):
        assert not health.probe_due(now), "a probe is in flight"
        assert not health.probe_started(now), "a second probe claimed the slot"
    assert health.probes_total == 1
    health.probe_result(False, 14.0)
    assert not health.probe_in_flight and health.probe_due(16.0)


def test_a_probe_that_is_not_due_is_not_started() -> None:
    health = Health()
    assert not health.probe_started(0.0), "up: no probe"
    run(OPEN, health)
    assert not health.probe_started(12.5), "too early"
    assert health.probes_total == 0 and health.next_probe_at == 13.0 and not health.probe_in_flight


def test_a_result_without_a_probe_in_flight_changes_nothing() -> None:
    health = Health()
    health.probe_result(False, 1.0)
    assert health.up and health.next_probe_at is None
    run(OPEN, health)
    health.probe_result(True, 12.5)
    assert not health.up and health.next_probe_at == 13.0 and health.backoff == 1.0
    health.probe_result(False, 12.6)
    assert health.next_probe_at == 13.0 and health.backoff == 1.0


@pytest.mark.parametrize(
    ("probe_min", "probe_max", "delays"),
    [
        (1.0, 30.0, [1, 2, 4, 8, 16, 30, 30, 30]),
        (0.5, 4.0, [0.5, 1, 2, 4, 4]),
        (3.0, 3.0, [3, 3, 3]),
        (2.0, 5.0, [2, 4, 5, 5]),
    ],
)
def test_backoff_doubles_from_probe_min_up_to_probe_max(
    probe_min: float, probe_max: float, delays: list[float]
) -> None:
    health = Health(1, probe_min, probe_max)
    health.failed(0.0)  # opens at 0
    seen: list[float] = []
    now = 0.0
    while len(seen) < len(delays):
        due = health.next_probe_at
        assert due is not None
        seen.append(due - now)
        now = due + 0.25  # the prober wakes a little late
        assert health.probe_started(now)
        now += 0.5  # the probe takes a while; the next delay runs from its result
        health.probe_result(False, now)
    assert seen == delays
    assert health.backoff == delays[-1]


def test_closing_resets_the_backoff() -> None:
    health = Health(1)
    health.failed(0.0)
    for now in (1.0, 3.0, 7.0):  # three failed probes: next delay 8
        assert health.probe_started(now)
        health.probe_result(False, now)
    assert health.backoff == 8.0 and health.next_probe_at == 15.0
    assert health.probe_started(15.0)
    health.probe_result(True, 15.0)
    assert health.up and health.backoff == 1.0 and health.next_probe_at is None
    health.failed(20.0)
    assert health.next_probe_at == 21.0


# -- counters ---------------------------------------------------------------------------------


def test_counters() -> None:
    health = run(
        OPEN  # 3 failures, opened once
        + " failed@12.5"  # counted while down
        + " probe@13 probe-failed@13 probe@15 probe-ok@15"
        + " failed@16 succeeded@16.5 failed@17 failed@18 failed@19"  # opened again
        + " probe@20"
    )
    assert (health.failures_total, health.opened_total, health.probes_total) == (8, 2, 3)
    assert health.since == 19.0


@pytest.mark.parametrize(
    "bad", [(0, 1.0, 30.0), (-1, 1.0, 30.0), (3, 0.0, 30.0), (3, -1.0, 30.0), (3, 31.0, 30.0)]
)
def test_nonsense_settings_are_refused(bad: tuple[int, float, float]) -> None:
    with pytest.raises(ValueError):
        Health(*bad)


# -- against a model --------------------------------------------------------------------------


class Model:
    """What the docstring says, written differently: the delay is computed, not accumulated."""

    def __init__(self, threshold: int, probe_min: float, probe_max: float) -> None:
        self.threshold, self.probe_min, self.probe_max = threshold, probe_min, probe_max
        self.down = False
        self.streak = 0
        self.failed_probes = 0
        self.in_flight = False
        self.due_at = 0.0
        self.failures = self.opened = self.probes = 0
        self.since: float | None = None

    def delay(self) -> float:
        return min(self.probe_min * 2.0**self.failed_probes, self.probe_max)


class HealthMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    @initialize(
        threshold=st.integers(1, 4),
        probe_min=st.sampled_from([0.5, 1.0, 3.0]),
        factor=st.sampled_from([1.0, 1.5, 4.0, 60.0]),
    )
    def make(self, threshold: int, probe_min: float, factor: float) -> None:
        self.health = Health(threshold, probe_min, probe_min * factor)
        self.model = Model(threshold, probe_min, probe_min * factor)

    @rule(dt=st.sampled_from([0.0, 0.125, 0.5, 1.0, 2.5, 7.0, 40.0]))  # exact in binary: no rounding in sums
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def failed(self) -> None:
        self.health.failed(self.now)
        m = self.model
        m.failures += 1
        if not m.down:
            m.streak += 1
            if m.streak == m.threshold:
                m.down, m.since, m.opened = True, self.now, m.opened + 1
                m.failed_probes = 0
                m.due_at = self.now + m.probe_min

    @rule()
    def succeeded(self) -> None:
        self.health.succeeded(self.now)
        if not self.model.down:
            self.model.streak = 0

    @rule()
    def probe_started(self) -> None:
        m = self.model
        due = m.down and not m.in_flight and self.now >= m.due_at
        assert self.health.probe_started(self.now) == due
        if due:
            m.in_flight, m.probes = True, m.probes + 1

    @precondition(lambda self: self.model.in_flight)
    @rule(ok=st.booleans())
    def probe_result(self, ok: bool) -> None:
        self.health.probe_result(ok, self.now)
        m = self.model
        m.in_flight = False
        if ok:
            m.down, m.since, m.streak = False, self.now, 0
        else:
            m.failed_probes += 1
            m.due_at = self.now + m.delay()

    @rule(ok=st.booleans())
    def stray_probe_result(self, ok: bool) -> None:
        """A result nobody started a probe for (a caller's mistake) must change nothing."""
        if not self.model.in_flight:
            self.health.probe_result(ok, self.now)

    @invariant()
    def agrees_with_the_model(self) -> None:
        h, m = self.health, self.model
        assert h.up is not m.down
        assert h.state == ("down" if m.down else "up")
        assert h.probe_in_flight is m.in_flight
        assert h.consecutive_failures == m.streak
        assert (h.failures_total, h.opened_total, h.probes_total) == (m.failures, m.opened, m.probes)
        assert h.since == m.since
        if m.down and not m.in_flight:
            assert h.next_probe_at == m.due_at
        else:
            assert h.next_probe_at is None

    @invariant()
    def probes_are_due_only_while_down_and_idle(self) -> None:
        h = self.health
        for later in (0.0, 0.5, 100.0):
            due = h.probe_due(self.now + later)
            if h.up or h.probe_in_flight:
                assert not due
            else:
                assert due == (self.now + later >= self.model.due_at)

    @invariant()
    def backoff_stays_within_its_bounds(self) -> None:
        h = self.health
        assert h.probe_min <= h.backoff <= h.probe_max
        if h.next_probe_at is not None:
            assert h.next_probe_at - self.now <= h.probe_max


HealthMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
test_health_against_a_model = HealthMachine.TestCase
