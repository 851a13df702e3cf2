"""Shield tier and multi-worker figures, measured on real processes on loopback.

    python -m benchmarks.tiers [--quick] [--keep] [--seed N]

Starts (``benchmarks/fleet.py``) an origin, two shields and three edges (each edge
lists both shields; edge-1 also lists them in ``--purge-peers``) and, for part (c),
one node of two workers, and prints:

(a) 30 concurrent cold requests for one object spread over the 3 edges: origin
    requests for it (must be 1), whether every body is the same (sha256, and the
    origin's), and the Cache-Status of a request through each tier: the first
    (both tiers miss), a second-tier hit (an edge that did not have it, its shield
    does) and the hit after it;
(b) 2,000 requests over 200 objects through the 3 edges (24 in flight, over at
    least 3 s) while shield-1 is killed (SIGKILL) after 1 s: client errors (must be
    0: a non-200 or a wrong body counts), origin requests (total and per object),
    shield-1's keys served through shield-2 (Cache-Status, and the edges' /stats
    upstreams) and the duration. ``--quick``: 400 requests over 50 objects;
(c) a ``--workers 2`` node: fill an object over new connections, rewrite it at the
    origin, purge it through the admin API, then 20 new connections: every body
    must be the new one, and the origin must see exactly one request for it per
    fill (1 before the purge, 1 after); then new HTTP/3 connections until both
    workers served one (/stats ``workers[i].h3_connections``).

Every figure marked "must" is checked; the exit status is 1 when one is not met.
Everything is bounded in time (``--quick`` under a minute here, the default run
about two) and every process is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from benchmarks.fleet import (
    Fleet,
    LoadResult,
    Node,
    Reply,
    Sample,
    gather_gets,
    h3_get,
    run_load,
)

BURST = 30
"""(a): concurrent cold requests for one object."""
KILL_AFTER = 1.0
"""(b): seconds into the run when the shield is killed."""
CONCURRENCY = 24
"""(b): requests in flight."""
PACE = 3.0
"""(b): the plan is spread over at least this many seconds, so that with --quick the kill
still lands inside the run (the default run takes about this long unpaced here: ~650 req/s)."""


@dataclass
class Checks:
    """The "must" figures and whether each held."""

    failed: list[str] = field(default_factory=list)

    def must(self, ok: bool, what: str) -> str:
        """``ok`` or ``FAILED``, remembering ``what`` failed."""
        if not ok:
            self.failed.append(what)
        return "ok" if ok else "FAILED"


def say(text: str = "") -> None:
    print(text, flush=True)


def topology(fleet: Fleet) -> tuple[list[Node], list[Node]]:
    """shield-1 and shield-2, then edge-1..3 listing both (edge-1 also in --purge-peers)."""
    shields = fleet.start_nodes([fleet.shield_spec("shield-1"), fleet.shield_spec("shield-2")])
    edges = fleet.start_nodes(
        [
            fleet.edge_spec("edge-1", shields, purge_peers=shields),
            fleet.edge_spec("edge-2", shields),
            fleet.edge_spec("edge-3", shields),
        ]
    )
    return shields, edges


# -- (a) ----------------------------------------------------------------------------------------


def part_a(fleet: Fleet, edges: list[Node], checks: Checks) -> None:
    assert fleet.origin is not None
    say(f"(a) cold burst: {BURST} concurrent requests for one object over 3 edges, 2 shields")
    path = fleet.add_object("/a/burst.bin", 512 * 1024)
    targets = [(edges[i % len(edges)], path) for i in range(BURST)]
    began = time.monotonic()
    replies = asyncio.run(gather_gets(targets, host=fleet.host))
    took = time.monotonic() - began
    fleet.origin.sync()
    fetched = fleet.origin.requests(path)
    statuses = Counter(r.status for r in replies)
    shas = {r.sha256 for r in replies}
    same = shas == {fleet.sha256(path)} and statuses == Counter({200: BURST})
    shield_names = Counter(r.members[0][0] for r in replies if r.members)
    collapsed = sum(1 for r in replies if r.members and "collapsed" in r.members[-1][1])
    say(f"  GET {path} (512 KiB) x{BURST}: edge-1, -2, -3 in turn, new connections, all started at once")
    say(f"  statuses {dict(statuses)} in {took * 1000:.0f} ms")
    say(
        f"  origin requests for it: {fetched}  (must be 1: {checks.must(fetched == 1, 'a: one origin request')})"
    )
    say(
        f"  bodies identical and the origin's (sha256 {min(shas)[:16]}...): {same}  ({checks.must(same, 'a: bodies')})"
    )
    say(f"  shield member in Cache-Status: {dict(shield_names)}; edge members 'collapsed': {collapsed}")

    say("  Cache-Status through both tiers, for a new object:")
    second = fleet.add_object("/a/second-tier.bin", 16 * 1024)
    first = fleet.get(edges[0], second)
    tier2 = fleet.get(edges[1], second)
    hit = fleet.get(edges[1], second)
    say(f"    first request, edge-1:   {first.cache_status}")
    say(f"    second-tier hit, edge-2: {tier2.cache_status}")
    say(f"    then, edge-2:            {hit.cache_status}")
    shield = first.members[0][0] if first.members else "?"
    ok = (
        [m[0] for m in tier2.members] == [shield, "edge-2"]
        and tier2.members[0][1].startswith("hit")
        and tier2.members[1][1] == "fwd=uri-miss; fwd-status=200; stored"
        and [m[0] for m in hit.members] == [shield, "edge-2"]
        and hit.members[1][1].startswith("hit")
        and tier2.sha256 == hit.sha256 == fleet.sha256(second)
    )
    fleet.origin.sync()
    say(
        f"    the shield's member, then the edge's: {checks.must(ok, 'a: Cache-Status of a second-tier hit')}"
    )
    say(f"    origin requests for it: {fleet.origin.requests(second)}")


# -- (b) ----------------------------------------------------------------------------------------


def part_b(
    fleet: Fleet, shields: list[Node], edges: list[Node], checks: Checks, size: tuple[int, int, int]
) -> None:
    assert fleet.origin is not None
    requests, objects, seed = size
    victim, survivor = shields
    say(f"(b) {requests} requests over {objects} objects through 3 edges, {CONCURRENCY} in flight;")
    say(f"    {victim.name} SIGKILLed {KILL_AFTER:g} s in")
    rng = random.Random(seed)
    paths = fleet.add_objects("/b", objects, [2048, 4096, 8192, 16384])
    plan = [(edges[i % len(edges)], paths[rng.randrange(objects)]) for i in range(requests)]
    before = {e.name: {s.name: fleet.upstream(e, s) for s in shields} for e in edges}
    killed_at: list[float] = []

    async def run() -> LoadResult:
        began = time.monotonic()

        async def killer() -> None:
            await asyncio.sleep(KILL_AFTER)
            await asyncio.to_thread(fleet.kill, victim)
            killed_at.append(time.monotonic() - began)

        task = asyncio.create_task(killer())
        try:
            return await run_load(
                plan, fleet.sha256, host=fleet.host, concurrency=CONCURRENCY, duration_limit=120.0,
                min_seconds=PACE,
            )  # fmt: skip
        finally:
            await task

    result = asyncio.run(run())
    fleet.origin.sync()
    kill = killed_at[0] if killed_at else float("nan")
    done = len(result.samples)
    errors = result.errors
    say(
        f"  GETs to edge-1, -2, -3 in turn, objects by random.Random({seed}), 2-16 KiB, spread over >= {PACE:g} s"
    )
    say(f"  done {done} of {result.planned} in {result.seconds:.2f} s ({done / result.seconds:.0f} req/s)")
    say(f"  {victim.name} killed at {kill:.2f} s")
    no_error = not errors and done == requests
    say(f"  client errors: {len(errors)}  (must be 0: {checks.must(no_error, 'b: no client error')})")
    for sample in errors[:5]:
        say(f"    {sample.node} {sample.path}: {sample.error}")

    def shield_of(sample: Sample) -> str | None:
        return sample.members[0][0] if len(sample.members) == 2 else None

    def edge_missed(sample: Sample) -> bool:
        return bool(sample.members) and not sample.members[-1][1].startswith("hit")

    counts = fleet.origin.counts(paths)
    per_object = dict(sorted(Counter(counts.values()).items()))
    victims_keys = {s.path for s in result.samples if s.started < kill and shield_of(s) == victim.name}
    twice = {p for p, n in counts.items() if n > 1}
    say(f"  origin requests: {sum(counts.values())} for {objects} objects; objects by requests: {per_object}")
    say(f"    fetched more than once: {len(twice)}, of which {victim.name} had fetched before the kill:")
    say(f"    {len(twice & victims_keys)} (its cache died with it; {survivor.name} fetched them again)")
    after = [s for s in result.samples if s.started > kill and edge_missed(s)]
    by_shield = Counter(shield_of(s) for s in after)
    moved = {s.path for s in after if s.path in victims_keys and shield_of(s) == survivor.name}
    none_dead = by_shield[victim.name] == 0
    say(f"  edge misses started after the kill, by shield: {dict(by_shield)}")
    say(f"    (none through {victim.name}: {checks.must(none_dead, 'b: no miss through the dead shield')})")
    say(
        f"  {victim.name}'s keys seen before the kill: {len(victims_keys)}; fetched through {survivor.name} after: {len(moved)}"
    )
    say("  edges' /stats upstreams (change during the run; state after):")
    all_down = True
    for edge in edges:
        parts = []
        for shield in shields:
            now = fleet.upstream(edge, shield)
            was = before[edge.name][shield.name]
            state = "up" if now["up"] else "DOWN"
            parts.append(
                f"{shield.name} {state} requests +{now['requests'] - was['requests']}"
                f" failures +{now['failures_total'] - was['failures_total']}"
            )
            all_down = all_down and (shield is survivor or not now["up"])
        say(f"    {edge.name}: " + "; ".join(parts))
    ok = bool(moved) and all_down
    say(
        f"  {victim.name} down on every edge, its keys served by {survivor.name}: {checks.must(ok, 'b: keys moved')}"
    )
    say(f"  duration: {result.seconds:.2f} s")


# -- (c) ----------------------------------------------------------------------------------------


def part_c(fleet: Fleet, checks: Checks) -> None:
    assert fleet.origin is not None
    say("(c) a --workers 2 node in front of the origin: fill, change, purge, 20 new connections; HTTP/3")
    node = fleet.start_node(fleet.edge_spec("node-w2", workers=2, h3=True))
    say(f"  {node.command()}")
    path = fleet.add_object("/c/object.bin", 64 * 1024)
    fills = [fleet.get(node, path) for _ in range(10)]
    fleet.origin.sync()
    filled = fleet.origin.requests(path)
    old_ok = all(r.status == 200 and r.sha256 == fleet.sha256(path, 0) for r in fills)
    say(f"  fill: 10 GETs, new connections, all the origin's body: {old_ok}")
    say(f"    origin requests: {filled}  (must be 1: {checks.must(old_ok and filled == 1, 'c: one fill')})")
    fleet.rewrite(path)
    answer = fleet.purge(node, path)
    say(f"  file rewritten at the origin; POST /purge {{'url': '{fleet.url_of(path)}'}}")
    say(f"    -> {answer}")
    after = [fleet.get(node, path) for _ in range(20)]
    fleet.origin.sync()
    new = sum(1 for r in after if r.status == 200 and r.sha256 == fleet.sha256(path, 1))
    old = sum(1 for r in after if r.sha256 == fleet.sha256(path, 0))
    refetch = fleet.origin.requests(path) - filled
    fresh = checks.must(new == 20 and old == 0, "c: never the purged body")
    say(
        f"  20 new connections: new body {new}, purged body {old}, other {20 - new - old}  (must be 20/0: {fresh})"
    )
    say(
        f"  origin requests after the purge: {refetch}  (must be 1: {checks.must(refetch == 1, 'c: one refetch')})"
    )
    workers = fleet.stats(node)["workers"]
    say(
        "  /stats workers: "
        + ", ".join(f"{w['worker']}: upstream_requests {w['upstream_requests']}" for w in workers)
    )

    quic_port, ca = node.quic_port, fleet.ca
    assert quic_port is not None and ca is not None
    h3_path = fleet.add_object("/c/h3.bin", 16 * 1024)
    replies: list[Reply] = []

    def per_worker() -> list[int]:
        return [int(w.get("h3_connections", 0)) for w in fleet.stats(node)["workers"]]

    async def four() -> list[Reply]:
        return list(
            await asyncio.gather(*(h3_get(quic_port, h3_path, ca, host=fleet.host) for _ in range(4)))
        )

    began = time.monotonic()
    while len(replies) < 24 and not all(n > 0 for n in per_worker()):
        replies += asyncio.run(four())
    took = time.monotonic() - began
    counts = per_worker()
    good = all(r.status == 200 and r.sha256 == fleet.sha256(h3_path) for r in replies)
    ok = checks.must(all(n > 0 for n in counts) and good, "c: HTTP/3 on both workers")
    fleet.origin.sync()
    say(f"  HTTP/3: {len(replies)} new QUIC connections, 4 at a time from new UDP ports, in {took:.2f} s")
    say(f"    bodies ok: {good}; origin requests: {fleet.origin.requests(h3_path)}")
    say(f"    /stats h3_connections per worker: {counts}  (each must be > 0: {ok})")
    fleet.stop_node(node)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="(b) with 400 requests over 50 objects")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, origin files)")
    parser.add_argument("--seed", type=int, default=1, help="seed of (b)'s request order")
    args = parser.parse_args(argv)
    requests, objects = (400, 50) if args.quick else (2000, 200)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    checks = Checks()
    began = time.monotonic()
    say(f"$ python -m benchmarks.tiers {shlex.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    with Fleet(keep=args.keep) as fleet:
        fleet.start_origin()
        shields, edges = topology(fleet)
        say(f"topology on 127.0.0.1 (every request says Host: {fleet.host}):")
        say(f"  {fleet.origin_command()}")
        for node in [*shields, *edges]:
            say(f"  {node.command()}")
        say()
        part_a(fleet, edges, checks)
        say()
        part_b(fleet, shields, edges, checks, (requests, objects, args.seed))
        say()
        part_c(fleet, checks)
        if args.keep:
            say(f"\nlogs and files kept in {fleet.dir}")
    say()
    total = time.monotonic() - began
    if checks.failed:
        say(f"FAILED ({total:.0f} s): " + "; ".join(checks.failed))
        return 1
    say(f"all checks passed ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
