"""Waiting in tests without betting on the machine's speed.

A test never sleeps hoping something happened meanwhile: it awaits an event (see
:class:`tests.support.scripted_origin.Gate` and the ``ScriptedOrigin`` waits), or,
for a state the edge offers no event for, polls a condition with :func:`eventually`.
Either way the bound is :data:`WAIT`, far beyond anything a passing run needs: a
busy machine makes a test slower, never wrong, and the bound is only reached by a
test that is failing anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tests.support.nodes import Edge

T = TypeVar("T")

WAIT = 20.0
"""Seconds to wait for something that should happen at once (only a failing test waits this long)."""

STUCK_TURNS = 50
"""Event-loop turns without progress after which :func:`unchanged_for` calls a transfer stuck."""


async def within(awaitable: Awaitable[T], what: str, timeout: float = WAIT) -> T:
    """The result of ``awaitable``; an AssertionError saying ``what`` did not happen after ``timeout`` s."""
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout:g} s") from None


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Return as soon as ``predicate()`` holds; an AssertionError saying ``what`` after ``timeout`` s.

    For states of the edge that no event announces (a fill finishing, a compression
    landing). It checks at once, then every few milliseconds on the running loop, so
    the edge under test (on the same loop) keeps running between checks.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.005)


async def unchanged_for(measure: Callable[[], object], turns: int = STUCK_TURNS) -> bool:
    """True if ``measure()`` gives the same value after each of the next ``turns`` event-loop turns.

    For "the peer has stopped reading": measure a write buffer while the peer is the
    edge on this same loop. Every turn runs every callback that is ready, the edge's
    reads and the writer's flushes included, so a peer that still reads changes the
    buffer within a turn or two. It counts turns, not seconds: a busy machine makes
    the turns slower, not fewer, so it cannot mistake a slow peer for a stopped one.
    (A kernel that defers loopback work to a later moment could make a reading peer
    look stopped; the mistake would make a test check less, never fail.)
    """
    before = measure()
    for _ in range(turns):
        await asyncio.sleep(0)
        if measure() != before:
            return False
    return True


def fills_in_flight(edge: Edge) -> int:
    """Upstream fills the edge has under way (collapsed misses, background refreshes)."""
    return len(edge.core.fills)


def fill_readers(edge: Edge) -> int:
    """Clients attached to the edge's fills under way: the leader and its collapsed followers.

    A client counts once its request has reached the fill, before the head arrives.
    """
    fills = edge.core.fills
    in_flight = getattr(fills, "in_flight", fills)  # key -> Fill, on the core or on its Fills
    return sum(fill.readers for fill in in_flight.values())


def every_slice_stored(edge: Edge) -> bool:
    """The store holds exactly one sliced object, and every one of its slices: its fill is complete.

    A large object's fill stops being a fill others can join once it is sliced (they read
    slices instead), so :func:`fills_settled` says nothing about it; this does.
    """
    from edge.cache.slices import META_SUFFIX

    store = edge.core.store
    metas = [store.peek(k) for k in list(store) if isinstance(k, bytes) and k.endswith(META_SUFFIX)]
    return len(metas) == 1 and all(metas[0].slice_key(i) in store for i in range(metas[0].count()))


async def fills_settled(edge: Edge, what: str = "the edge's fills finished") -> None:
    """Wait until no fill is under way: whatever they stored is in the store now."""
    await eventually(lambda: fills_in_flight(edge) == 0, what)


async def compressions_settled(edge: Edge) -> None:
    """Wait until every compression the edge started so far has landed (or none was started).

    The compressor queues large codings on the loop and gives its thread one at a time;
    ``pending`` counts the queued and the running one until its result is attached (or its
    job dropped) on the loop, so at 0 every result is counted in ``edge.core.compressions``.
    Small bodies are compressed inline and counted at once.
    """
    compressor = edge.core.compressor
    await eventually(lambda: compressor.pending == 0, "compressions settled")
