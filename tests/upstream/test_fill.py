"""`Fill`, the one in-flight upstream fetch several clients tail, driven directly (no sockets).

What this file pins down, from the docstrings of ``edge/upstream/fill.py``:

- the head: ``set_head`` resolves ``head``; ``fail_head`` makes every awaiter raise the
  upstream error and marks it retrieved, so nobody awaiting it logs "exception was never
  retrieved";
- readers: ``attach`` registers a reader before the head; ``tail`` yields every chunk from
  the first byte at the reader's own pace, each reader independently; a reader that
  leaves early (``detach`` is idempotent, and a reader cancelled mid-wait) never stops
  the fill for the others; ``tail`` raises the fill's error after what arrived
  (truncation) and ends cleanly after ``finish``;
- memory: while ``keep`` the whole body is held (``body()``); after ``stop_keeping`` a
  chunk is released (replaced by ``b""``) once every reader has passed it, ``room()``
  makes the producer wait while the slowest reader lags more than ``high_water`` bytes,
  returns True when there is room and False once no reader is left, and ``attach``
  after a release raises RuntimeError;
- ``discard``, ``leader_fields`` and ``not_storable`` are plain state Fill does nothing with;
- a Hypothesis property with an oracle: random chunks, readers (late joiners, speeds,
  early leavers), keep / stop keeping at any point, finish or truncation; every reader
  that stays gets exactly the chunks appended, in order, and a not-kept fill never holds
  more than ``high_water`` (plus the one chunk appended next) beyond its slowest reader.

Everything is event-driven: ``await asyncio.sleep(0)`` is a scheduling point, never a
timed wait, and a wait that should end but does not fails after a bounded number of
scheduling points instead of hanging.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.upstream.client import UpstreamError
from edge.upstream.fill import Fill, Reader

T = TypeVar("T")

CHUNKS = [b"a", b"bb", b"ccc", b"dddd"]
BODY = b"".join(CHUNKS)
STEPS = 100
"""Scheduling points a wait that should end may take before the test calls it stuck."""


async def settle(steps: int = 10) -> None:
    """Let every ready task run (scheduling points only, no timed wait)."""
    for _ in range(steps):
        await asyncio.sleep(0)


async def within(aw: Awaitable[T], steps: int = STEPS) -> T:
    """Await ``aw``, failing (instead of hanging) if it is still pending after ``steps`` scheduling points."""
    fut = asyncio.ensure_future(aw)
    for _ in range(steps):
        if fut.done():
            break
        await asyncio.sleep(0)
    if not fut.done():
        fut.cancel()
        pytest.fail(f"still waiting after {steps} scheduling points")
    return fut.result()


def tail(fill: Fill, reader: Reader) -> AsyncGenerator[bytes, None]:
    """``fill.tail(reader)`` as the async generator it is, to step it with ``anext`` and close it."""
    gen = fill.tail(reader)
    assert isinstance(gen, AsyncGenerator)
    return gen


async def collect(fill: Fill, reader: Reader) -> tuple[list[bytes], BaseException | None]:
    """Every chunk ``tail`` yields, and the error it ended with (None when it ended cleanly)."""
    got: list[bytes] = []
    try:
        async for chunk in fill.tail(reader):
            got.append(chunk)
    except UpstreamError as exc:
        return got, exc
    return got, None


def held(fill: Fill) -> int:
    """Bytes the fill still holds (released chunks are ``b""``)."""
    return sum(len(chunk) for chunk in fill.chunks)


def released(fill: Fill) -> list[int]:
    """Indexes of released chunks (every chunk appended in these tests is non-empty)."""
    return [i for i, chunk in enumerate(fill.chunks) if not chunk]


def filled(high_water: int = 1 << 20, chunks: list[bytes] = CHUNKS) -> Fill:
    fill = Fill(b"http://example.com/app.js", high_water=high_water)
    for chunk in chunks:
        fill.append(chunk)
    return fill


# -- the head -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_set_head_resolves_head_once() -> None:
    fill = Fill(b"k")
    assert not fill.head.done()
    fill.set_head()
    assert fill.head.done()
    await within(asyncio.shield(fill.head))  # resolved: awaiting it does not raise
    fill.set_head()  # again: a no-op
    fill.fail_head(UpstreamError("late"))  # after the head: ignored
    assert fill.head.exception() is None


@pytest.mark.asyncio
async def test_fail_head_raises_the_error_for_every_awaiter() -> None:
    fill = Fill(b"k")
    error = UpstreamError("connection refused")

    async def wait_head(shielded: bool) -> BaseException | None:
        try:
            await (asyncio.shield(fill.head) if shielded else fill.head)
        except UpstreamError as exc:
            return exc
        return None

    waiters = [asyncio.ensure_future(wait_head(shielded)) for shielded in (True, False, True)]
    await settle()
    assert not any(w.done() for w in waiters)
    fill.fail_head(error)
    fill.fail_head(UpstreamError("second"))  # the first error stays
    fill.set_head()  # and a head after it is ignored
    assert [await within(w) for w in waiters] == [error, error, error]
    with pytest.raises(UpstreamError) as caught:
        await fill.head  # awaiting after the fact raises too
    assert caught.value is error


@pytest.mark.asyncio
async def test_fail_head_marks_the_error_retrieved_when_nobody_awaits() -> None:
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    try:
        # The check itself: an unretrieved error on a bare future is reported when it is freed.
        control_error = UpstreamError("control")
        control = loop.create_future()
        control.set_exception(control_error)
        del control
        gc.collect()
        assert [r["message"] for r in reports if r.get("exception") is control_error] == [
            "Future exception was never retrieved"
        ]

        error = UpstreamError("connection refused")
        fill = Fill(b"k")
        reader = fill.attach()
        fill.fail_head(error)
        fill.detach(reader)  # every reader gone before looking at the head
        del fill
        gc.collect()
        await settle()
        assert [r for r in reports if r.get("exception") is error] == []
    finally:
        loop.set_exception_handler(previous)


# -- readers --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reader_attached_before_the_head_tails_from_the_first_byte() -> None:
    fill = Fill(b"k")
    reader = fill.attach()
    assert fill.readers == 1
    fill.stop_keeping()  # even when nothing is stored, nothing it has not read goes away
    fill.set_head()
    fill.append(CHUNKS[0])
    fill.append(CHUNKS[1])
    reading = asyncio.ensure_future(collect(fill, reader))
    await settle()
    assert not reading.done()  # waits for more, not busy
    fill.append(CHUNKS[2])
    fill.append(CHUNKS[3])
    fill.finish()
    assert await within(reading) == (CHUNKS, None)


@pytest.mark.asyncio
async def test_several_readers_tail_independently_at_their_own_pace() -> None:
    fill = Fill(b"k")
    eager, stepper, late = fill.attach(), fill.attach(), fill.attach()
    fill.set_head()
    eager_got: list[bytes] = []

    async def read_eagerly() -> None:
        async for chunk in fill.tail(eager):
            eager_got.append(chunk)

    eager_task = asyncio.ensure_future(read_eagerly())
    steps = tail(fill, stepper)
    await settle()
    assert eager_got == []
    fill.append(CHUNKS[0])
    await settle()
    assert eager_got == CHUNKS[:1]  # woken by the chunk
    fill.append(CHUNKS[1])
    fill.append(CHUNKS[2])
    await settle()
    assert eager_got == CHUNKS[:3]
    assert await within(anext(steps)) == CHUNKS[0]  # far behind, one chunk at a time
    fill.append(CHUNKS[3])
    assert await within(anext(steps)) == CHUNKS[1]
    fill.finish()
    await within(eager_task)
    assert eager_got == CHUNKS
    assert [chunk async for chunk in steps] == CHUNKS[2:]
    assert await within(collect(fill, late)) == (CHUNKS, None)  # starts after the end
    assert fill.body() == BODY


@pytest.mark.asyncio
async def test_a_reader_joining_while_the_body_is_kept_gets_it_from_byte_zero() -> None:
    fill = filled()
    fill.set_head()
    first = fill.attach()
    first_steps = tail(fill, first)
    assert await within(anext(first_steps)) == CHUNKS[0]
    joiner = fill.attach()  # four chunks in, one of them read
    fill.finish()
    assert await within(collect(fill, joiner)) == (CHUNKS, None)
    assert [chunk async for chunk in first_steps] == CHUNKS[1:]


@pytest.mark.asyncio
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "not-keep"])
async def test_a_reader_leaving_early_never_stops_the_fill_for_the_others(keep: bool) -> None:
    fill = Fill(b"k", high_water=4)
    leaver, stayer = fill.attach(), fill.attach()
    if not keep:
        fill.stop_keeping()
    fill.set_head()
    staying = asyncio.ensure_future(collect(fill, stayer))
    leaving = tail(fill, leaver)
    fill.append(CHUNKS[0])
    assert await within(fill.room()) is True
    assert await within(anext(leaving)) == CHUNKS[0]
    await leaving.aclose()
    fill.detach(leaver)
    fill.detach(leaver)  # again, as a finally does
    assert fill.readers == 1
    for chunk in CHUNKS[1:]:
        fill.append(chunk)
        assert await within(fill.room()) is True  # the stayer still reads: go on
    fill.finish()
    assert await within(staying) == (CHUNKS, None)


@pytest.mark.asyncio
async def test_detach_is_idempotent_and_by_identity() -> None:
    fill = filled()
    fill.set_head()
    one, other = fill.attach(), fill.attach()  # both at index 0: equal positions
    fill.detach(one)
    fill.detach(one)
    fill.detach(one)
    assert fill.readers == 1
    fill.stop_keeping()
    assert released(fill) == []  # ``other`` is still registered and has read nothing
    fill.finish()
    assert await within(collect(fill, other)) == (CHUNKS, None)
    fill.detach(other)
    fill.detach(other)
    assert fill.readers == 0


@pytest.mark.asyncio
async def test_a_reader_cancelled_while_waiting_does_not_disturb_the_others() -> None:
    fill = Fill(b"k")
    doomed, survivor = fill.attach(), fill.attach()
    fill.set_head()

    async def read(reader: Reader) -> tuple[list[bytes], BaseException | None]:
        try:
            return await collect(fill, reader)
        finally:
            fill.detach(reader)

    cancelled = asyncio.ensure_future(read(doomed))
    surviving = asyncio.ensure_future(read(survivor))
    await settle()  # both wait for the first chunk
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert fill.readers == 1
    for chunk in CHUNKS:
        fill.append(chunk)
    fill.finish()
    assert await within(surviving) == (CHUNKS, None)


@pytest.mark.asyncio
async def test_tail_raises_the_fill_error_after_yielding_what_arrived() -> None:
    fill = Fill(b"k")
    waiting, steady, after = fill.attach(), fill.attach(), fill.attach()
    fill.set_head()
    error = UpstreamError("upstream closed mid-body")
    waiting_read = asyncio.ensure_future(collect(fill, waiting))
    steps = tail(fill, steady)
    fill.append(CHUNKS[0])
    fill.append(CHUNKS[1])
    assert await within(anext(steps)) == CHUNKS[0]
    await settle()
    fill.fail(error)
    assert await within(waiting_read) == (CHUNKS[:2], error)  # woken by the failure
    assert await within(anext(steps)) == CHUNKS[1]  # what arrived first...
    with pytest.raises(UpstreamError) as caught:
        await within(anext(steps))  # ...then the error
    assert caught.value is error
    assert await within(collect(fill, after)) == (CHUNKS[:2], error)  # started after the failure


@pytest.mark.asyncio
async def test_tail_ends_cleanly_after_finish() -> None:
    fill = Fill(b"k")
    waiting, after = fill.attach(), fill.attach()
    fill.set_head()
    waiting_read = asyncio.ensure_future(collect(fill, waiting))
    await settle()
    fill.append(CHUNKS[0])
    await settle()
    assert not waiting_read.done()
    fill.finish()
    assert await within(waiting_read) == (CHUNKS[:1], None)
    assert await within(collect(fill, after)) == (CHUNKS[:1], None)


@pytest.mark.asyncio
async def test_an_empty_body_ends_at_once() -> None:
    fill = Fill(b"k")
    reader = fill.attach()
    fill.set_head()
    fill.finish()
    assert await within(collect(fill, reader)) == ([], None)
    assert fill.body() == b""


# -- keep and not keep ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_while_keep_the_whole_body_is_held() -> None:
    fill = Fill(b"k", high_water=1)  # far below the body: irrelevant while keeping
    readers = [fill.attach() for _ in range(2)]
    fill.set_head()
    for chunk in CHUNKS:
        fill.append(chunk)
        assert await within(fill.room()) is True
    fill.finish()
    for reader in readers:
        assert await within(collect(fill, reader)) == (CHUNKS, None)
        fill.detach(reader)
    assert fill.keep
    assert fill.chunks == CHUNKS
    assert fill.body() == BODY
    assert fill.size == len(BODY) == held(fill)
    assert await within(fill.room()) is True  # nobody reads, but the body is being stored
    late = fill.attach()
    assert await within(collect(fill, late)) == (CHUNKS, None)


@pytest.mark.asyncio
async def test_after_stop_keeping_a_chunk_goes_once_every_reader_passed_it() -> None:
    fill = filled()
    fill.set_head()
    fast, slow = fill.attach(), fill.attach()
    fast_steps, slow_steps = tail(fill, fast), tail(fill, slow)
    assert [await within(anext(fast_steps)) for _ in range(3)] == CHUNKS[:3]
    assert await within(anext(slow_steps)) == CHUNKS[0]
    assert released(fill) == []  # kept so far
    fill.stop_keeping()
    assert fill.keep is False
    assert released(fill) == [0]  # both have had chunk 0; nobody lost a byte it has not read
    assert fill.chunks[1:] == CHUNKS[1:]
    assert await within(anext(slow_steps)) == CHUNKS[1]
    assert await within(anext(slow_steps)) == CHUNKS[2]
    assert released(fill)[:2] == [0, 1]  # the slow reader moved past chunk 1
    assert fill.chunks[3:] == CHUNKS[3:]  # nobody has chunk 3 yet
    fill.detach(slow)  # the slowest leaves: what only it held goes
    assert released(fill) == [0, 1, 2]
    assert fill.chunks[3] == CHUNKS[3]
    fill.finish()
    assert [chunk async for chunk in fast_steps] == CHUNKS[3:]
    fill.detach(fast)
    assert held(fill) == 0  # the last reader gone, nothing is held
    assert fill.size == len(BODY)  # size still counts what arrived


@pytest.mark.asyncio
async def test_attach_after_chunks_were_released_raises() -> None:
    fill = filled()
    fill.set_head()
    reader = fill.attach()
    steps = tail(fill, reader)
    fill.stop_keeping()
    early = fill.attach()  # nothing released yet: a reader may still join at byte 0
    early_steps = tail(fill, early)
    assert await within(anext(steps)) == CHUNKS[0]
    assert await within(anext(steps)) == CHUNKS[1]
    assert await within(anext(early_steps)) == CHUNKS[0]
    assert await within(anext(early_steps)) == CHUNKS[1]  # both passed chunk 0
    assert released(fill) == [0]
    with pytest.raises(RuntimeError):
        fill.attach()
    assert fill.readers == 2  # the refused reader was not registered
    fill.finish()
    assert [chunk async for chunk in steps] == CHUNKS[2:]
    assert [chunk async for chunk in early_steps] == CHUNKS[2:]


@pytest.mark.asyncio
async def test_stop_keeping_with_no_reader_releases_everything() -> None:
    fill = filled()
    fill.set_head()
    fill.stop_keeping()
    assert held(fill) == 0
    with pytest.raises(RuntimeError):
        fill.attach()
    assert await within(fill.room()) is False


@pytest.mark.asyncio
async def test_room_is_at_once_within_high_water() -> None:
    fill = Fill(b"k", high_water=len(BODY))  # lag exactly high_water is not "more than"
    fill.attach()  # never reads
    fill.stop_keeping()
    fill.set_head()
    for chunk in CHUNKS:
        fill.append(chunk)
        assert await within(fill.room(), steps=1) is True


@pytest.mark.asyncio
async def test_room_waits_while_the_slowest_reader_lags_more_than_high_water() -> None:
    fill = Fill(b"k", high_water=6)
    fast, slow = fill.attach(), fill.attach()
    fill.stop_keeping()
    fill.set_head()
    fast_read = asyncio.ensure_future(collect(fill, fast))
    slow_steps = tail(fill, slow)
    for chunk in (b"aaa", b"bbb", b"ccc"):
        fill.append(chunk)
    waiting = asyncio.ensure_future(fill.room())
    await settle()
    assert not waiting.done()  # the fast reader has everything; the slow one lags 9 > 6 bytes
    assert await within(anext(slow_steps)) == b"aaa"
    await settle()
    assert not waiting.done()  # it holds chunk 0 until it asks for the next one
    assert await within(anext(slow_steps)) == b"bbb"  # passed chunk 0: 6 bytes behind now
    assert await within(waiting) is True
    assert held(fill) <= fill.high_water
    fill.finish()
    assert [chunk async for chunk in slow_steps] == [b"ccc"]
    assert await within(fast_read) == ([b"aaa", b"bbb", b"ccc"], None)


@pytest.mark.asyncio
async def test_room_returns_false_once_no_reader_is_left() -> None:
    fill = Fill(b"k", high_water=2)
    first, second = fill.attach(), fill.attach()
    fill.stop_keeping()
    fill.set_head()
    fill.append(b"abcde")
    waiting = asyncio.ensure_future(fill.room())
    await settle()
    assert not waiting.done()
    fill.detach(first)
    await settle()
    assert not waiting.done()  # one reader is left, still 5 bytes behind
    fill.detach(second)
    assert await within(waiting) is False
    assert await within(fill.room()) is False  # and at once from then on


@pytest.mark.asyncio
async def test_discard_leader_fields_and_not_storable_are_plain_state() -> None:
    fill = Fill(b"k", high_water=1)
    assert (fill.discard, fill.leader_fields, fill.not_storable) == (False, [], None)
    fill.discard = True
    fill.leader_fields = [(b"Set-Cookie", b"id=1")]
    fill.not_storable = "no-store"
    reader = fill.attach()
    fill.set_head()
    for chunk in CHUNKS:
        fill.append(chunk)
        assert await within(fill.room()) is True  # still kept: only stop_keeping stops that
    fill.finish()
    assert await within(collect(fill, reader)) == (CHUNKS, None)
    fill.detach(reader)
    assert fill.keep and fill.body() == BODY and released(fill) == []
    assert fill.headers == [] and fill.leader_fields == [(b"Set-Cookie", b"id=1")]


# -- property: random readers against an oracle ----------------------------------------------


class Truncated(UpstreamError):
    """The upstream failing mid-body."""


class Abandoned(UpstreamError):
    """The producer giving up because every reader left (as ``_run_fill`` does)."""


@dataclass(frozen=True)
class ReaderPlan:
    join_at: int
    """Chunks appended before it attaches (0: before the head)."""
    leave_after: int | None
    """Chunks it reads before it leaves; None: it stays to the end."""
    pauses: tuple[int, ...]
    """Scheduling points it lets pass while holding each chunk (cycled): its speed."""


@dataclass(frozen=True)
class Scenario:
    sizes: tuple[int, ...]
    high_water: int
    stop_at: int | None
    """``stop_keeping`` before this chunk (``len(sizes)``: after the last); None: kept throughout."""
    readers: tuple[ReaderPlan, ...]
    producer_pauses: tuple[int, ...]
    truncate: bool


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    sizes = tuple(draw(st.lists(st.integers(1, 6), max_size=12)))
    n = len(sizes)
    pauses = st.lists(st.integers(0, 3), min_size=1, max_size=4).map(tuple)
    plan = st.builds(
        ReaderPlan,
        join_at=st.one_of(st.just(0), st.integers(0, n)),
        leave_after=st.one_of(st.none(), st.integers(0, n)),
        pauses=pauses,
    )
    return Scenario(
        sizes=sizes,
        high_water=draw(st.integers(0, 12)),
        stop_at=draw(st.one_of(st.none(), st.just(0), st.integers(0, n))),
        readers=tuple(draw(st.lists(plan, min_size=1, max_size=4))),
        producer_pauses=draw(pauses),
        truncate=draw(st.booleans()),
    )


async def run_scenario(s: Scenario) -> None:
    fill = Fill(b"k", high_water=s.high_water)
    chunks = [bytes([65 + i]) * size for i, size in enumerate(s.sizes)]
    n = len(chunks)
    truncation = Truncated("upstream closed mid-body")
    received: dict[int, list[bytes]] = {}
    """What each reader that joined got so far."""
    active: set[int] = set()
    """Readers attached and not yet detached: the oracle's own count."""
    outcomes: dict[int, str | BaseException] = {}
    tasks: list[asyncio.Task[None]] = []
    bounded = False
    """Not kept, and the producer has had room at least once since."""

    def check_release() -> None:
        # Never release a chunk an active reader has not received.
        if active:
            slowest = min(len(received[i]) for i in active)
            assert all(i < slowest for i in released(fill)), (released(fill), slowest)
        if fill.keep:
            assert released(fill) == []

    async def read(i: int, plan: ReaderPlan, reader: Reader) -> None:
        got = received[i]
        gen = tail(fill, reader)
        left = False
        try:
            await fill.head
            if plan.leave_after == 0:
                left = True
            else:
                async for chunk in gen:
                    got.append(chunk)
                    check_release()
                    for _ in range(plan.pauses[len(got) % len(plan.pauses)]):
                        await asyncio.sleep(0)  # holding the chunk: a slow client
                    if len(got) == plan.leave_after:
                        left = True
                        break
            outcomes[i] = "left" if left else "end"
        except UpstreamError as exc:
            outcomes[i] = exc
        finally:
            await gen.aclose()
            fill.detach(reader)
            active.discard(i)
            fill.detach(reader)  # idempotent, as a second finally would
            assert fill.readers == len(active)
            if not active and not fill.keep:
                assert held(fill) == 0, "the last reader left, yet chunks are held"

    def join(step: int) -> None:
        for i, plan in enumerate(s.readers):
            if plan.join_at != step:
                continue
            was_released = bool(released(fill))
            try:
                reader = fill.attach()
            except RuntimeError:
                assert was_released and not fill.keep, "attach refused though nothing was released"
                continue
            assert not was_released, "attach accepted after chunks were released"
            received[i] = []
            active.add(i)
            assert fill.readers == len(active)
            tasks.append(asyncio.ensure_future(read(i, plan, reader)))

    async def produce() -> None:
        nonlocal bounded
        for step in range(n + 1):
            join(step)
            if s.stop_at == step:
                fill.stop_keeping()
                bounded = False
                check_release()
                if not active:
                    assert held(fill) == 0, "not stored and nobody reads, yet chunks are held"
            if step == 0:
                fill.set_head()
            if step == n:
                break
            chunk = chunks[step]
            fill.append(chunk)
            if bounded:
                assert held(fill) <= s.high_water + len(chunk), (held(fill), s.high_water, len(chunk))
            ok = await fill.room()
            check_release()
            if fill.keep:
                assert ok is True
            else:
                assert ok is bool(active)
                if not ok:
                    fill.fail(Abandoned("every reader left"))
                    return
                lag = fill.size - min(sum(map(len, received[i])) for i in active)
                assert lag <= s.high_water, (lag, s.high_water)
                assert held(fill) <= s.high_water, (held(fill), s.high_water)
                bounded = True
            for _ in range(s.producer_pauses[step % len(s.producer_pauses)]):
                await asyncio.sleep(0)
        if s.truncate:
            fill.fail(truncation)
        else:
            fill.finish()

    producer = asyncio.ensure_future(produce())
    for _ in range(1_000):  # scheduling points; no scenario here needs 100
        if producer.done() and all(t.done() for t in tasks):
            break
        await asyncio.sleep(0)
    else:
        pytest.fail("a reader or the producer waits for ever")
    await producer
    for task in tasks:
        await task

    stopped_early = isinstance(fill.error, Abandoned)
    for i, got in received.items():
        leave_after = s.readers[i].leave_after
        if leave_after is not None and leave_after <= n:
            assert outcomes[i] == "left"
            assert got == chunks[:leave_after]
        else:
            assert not stopped_early, "the fill stopped while a reader stayed"
            assert got == chunks, "a reader that stayed got other bytes than those appended"
            assert outcomes[i] == (truncation if s.truncate else "end")
    assert fill.readers == 0
    if fill.keep:
        assert fill.chunks == chunks and fill.body() == b"".join(chunks)
    elif stopped_early:
        # At most the chunk appended after the last reader left (room() said stop) is still there.
        assert all(not chunk for chunk in fill.chunks[:-1]), fill.chunks
    else:
        assert held(fill) == 0, "nobody reads any more, yet chunks are held"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_every_staying_reader_gets_every_byte_and_memory_stays_bounded(scenario: Scenario) -> None:
    asyncio.run(run_scenario(scenario))
