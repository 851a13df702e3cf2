"""Passive and active health of one upstream: a circuit breaker, sans-I/O.

Nothing here sleeps, reads a clock or touches a socket: every method takes ``now``
(seconds on one monotonic clock) and the caller does the sending and the waiting.

The circuit is *up* (closed: real traffic goes there) or *down* (open: no real
traffic, probes only). Rules this class guarantees:

- ``fail_threshold`` consecutive failures on real traffic (:meth:`Health.failed`: a
  connect error, a timeout, a 5xx the upstream itself made) open the circuit; a
  success on real traffic (:meth:`Health.succeeded`) while up resets the count;
- while down, a probe is due ``probe_min`` seconds after the circuit opened, and one
  probe at a time: :meth:`Health.probe_due` is False while one is in flight (from
  :meth:`Health.probe_started` to :meth:`Health.probe_result`) and always False while up;
- a successful probe closes the circuit (up, failure count and backoff reset); a
  failed one doubles the delay, capped at ``probe_max``, and schedules the next probe
  that long after its result: 1, 2, 4, 8, 16, 30, 30 ... seconds with the defaults;
  the next time the circuit opens the backoff starts again at ``probe_min``;
- only a probe closes the circuit. A success reported on real traffic while down
  comes from a request already under way when the circuit opened; one lucky request
  is no evidence the upstream recovered (a flapping or overloaded upstream answers
  some), and letting it close the circuit would send it the whole herd again. It is
  ignored;
- a failure reported while down (more requests of the same outage finishing) is
  counted in ``failures_total`` and changes nothing else: the probe schedule is
  neither extended nor shortened;
- ``since`` is the ``now`` of the last change between up and down.

The caller must report the result of every probe it started (a probe that times out
is a failure): while one is in flight no other is due, so a lost result would leave
the circuit open. A result reported with no probe in flight, or a probe started when
none is due, changes nothing (:meth:`Health.probe_started` says whether it claimed
the probe).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Health", "State"]

State = Literal["up", "down"]


class Health:
    """The circuit of one upstream, its probe schedule and its counters."""

    __slots__ = (
        "backoff",
        "consecutive_failures",
        "fail_threshold",
        "failures_total",
        "next_probe_at",
        "opened_total",
        "probe_in_flight",
        "probe_max",
        "probe_min",
        "probes_total",
        "since",
        "up",
    )

    def __init__(
        self,
        fail_threshold: int = 3,
        probe_min: float = 1.0,
        probe_max: float = 30.0,
        *,
        now: float | None = None,
    ) -> None:
        """An upstream that is up; ValueError unless ``fail_threshold >= 1``, ``0 < probe_min <= probe_max``.

        ``now`` is the first ``since``; without it ``since`` stays None until the state first changes.
        """
        if fail_threshold < 1:
            raise ValueError(f"fail_threshold must be at least 1, not {fail_threshold!r}")
        if not 0.0 < probe_min <= probe_max:
            raise ValueError(f"need 0 < probe_min <= probe_max, not {probe_min!r} and {probe_max!r}")
        self.fail_threshold = fail_threshold
        """Consecutive failures on real traffic that open the circuit."""
        self.probe_min = probe_min
        """Seconds from opening to the first probe; the backoff's first step."""
        self.probe_max = probe_max
        """Cap of the backoff between probes, in seconds."""
        self.up = True
        """Closed circuit: real traffic may go there. False while open (down)."""
        self.since = now
        """``now`` of the last change between up and down (the ``now`` given here, or None, before any)."""
        self.consecutive_failures = 0
        """Failures on real traffic since the last success while up (or since the circuit closed)."""
        self.backoff = probe_min
        """Delay before the next probe: ``probe_min`` while up, doubled after each failed probe."""
        self.next_probe_at: float | None = None
        """When the next probe is due; None while up or while a probe is in flight."""
        self.probe_in_flight = False
        """A probe was started and its result is not in yet."""
        self.failures_total = 0
        """Failures reported on real traffic, whatever the state."""
        self.opened_total = 0
        """Times the circuit opened."""
        self.probes_total = 0
        """Probes started."""

    @property
    def state(self) -> State:
        """``"up"`` (closed circuit) or ``"down"`` (open)."""
        return "up" if self.up else "down"

    # -- passive: real traffic -----------------------------------------------------------
    def failed(self, now: float) -> None:
        """A request of real traffic failed because of the upstream; may open the circuit."""
        self.failures_total += 1
        if not self.up:
            return
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.fail_threshold:
            self.up = False
            self.since = now
            self.opened_total += 1
            self.next_probe_at = now + self.backoff  # probe_min: reset when it last closed

    def succeeded(self, now: float) -> None:
        """A request of real traffic got its answer; resets the failure count while up, nothing while down."""
        if self.up:
            self.consecutive_failures = 0

    # -- active: probes while down -------------------------------------------------------
    def probe_due(self, now: float) -> bool:
        """Whether a probe should start now: down, none in flight, and its time has come."""
        # next_probe_at is None while up and while a probe is in flight.
        return self.next_probe_at is not None and now >= self.next_probe_at

    def probe_started(self, now: float) -> bool:
        """Claim the due probe (True), or change nothing when none is due (False)."""
        if not self.probe_due(now):
            return False
        self.probe_in_flight = True
        self.next_probe_at = None
        self.probes_total += 1
        return True

    def probe_result(self, ok: bool, now: float) -> None:
        """The probe in flight ended: ``ok`` closes the circuit, a failure backs off and reschedules."""
        if not self.probe_in_flight:
            return
        self.probe_in_flight = False
        if ok:
            self.up = True
            self.since = now
            self.consecutive_failures = 0
            self.backoff = self.probe_min
        else:
            self.backoff = min(self.backoff * 2.0, self.probe_max)
            self.next_probe_at = now + self.backoff

    def __repr__(self) -> str:
        return (
            f"Health({self.state}, failures={self.consecutive_failures}/{self.fail_threshold},"
            f" next_probe_at={self.next_probe_at}, in_flight={self.probe_in_flight})"
        )
