"""Eviction policies on a CDN-like trace: LRU against S3-FIFO (issue 19).

A generated trace, the same for every policy (deterministic seed):

- a catalog of ``--objects`` objects whose popularity follows Zipf (``--alpha``);
- object sizes log-normal around 16 KiB, clipped to 1 KiB .. 8 MiB (a heavy tail:
  a few percent of the objects are above 1 MiB and hold most of the bytes);
- one-hit wonders: ``--one-hit`` of the requests name an object never asked for again;
- periodic scans: every ``--scan-every`` requests, a crawler walks ``--scan-length``
  consecutive objects of the catalog's cold half, once each.

Each request is a ``get`` on the store; a miss is followed by a ``put`` charged the
object's size (values are the size, no bodies are held), as the memory tier does.
Hit ratios are counted after the first 10 % of the trace (warm-up). Cache sizes are
fractions of the catalog's bytes.

Then the stores' own speed, policies interleaved, best of ``--rounds``: the replay
(gets and puts per second, evictions included), a resident-key get loop (what a
cache hit costs the store) and a put-only churn of new keys into a full store.

    python -m benchmarks.eviction [--requests 1500000] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from collections.abc import Callable
from typing import Any

from edge._lru import LRU, S3FIFO

POLICIES: dict[str, Callable[[int], Any]] = {"lru": LRU, "s3fifo": S3FIFO}
KIB, MIB = 1024, 1024 * 1024


def object_sizes(rng: random.Random, n: int) -> list[int]:
    return [min(8 * MIB, max(KIB, int(rng.lognormvariate(math.log(16 * KIB), 1.6)))) for _ in range(n)]


def make_trace(
    seed: int,
    requests: int,
    objects: int,
    alpha: float,
    one_hit: float,
    scan_every: int,
    scan_length: int,
) -> tuple[list[int], list[int], int]:
    """(keys, sizes, catalog bytes): key k < objects is catalog object k (rank k), larger
    keys are one-hit wonders."""
    rng = random.Random(seed)
    sizes = object_sizes(rng, objects)
    catalog_bytes = sum(sizes)
    cum = list(itertools.accumulate(1.0 / (rank + 1) ** alpha for rank in range(objects)))
    popular = rng.choices(range(objects), cum_weights=cum, k=requests)
    keys: list[int] = []
    key_sizes: list[int] = []
    next_unique = objects
    scan_at = objects // 2
    p = 0
    while len(keys) < requests:
        if scan_every and len(keys) % scan_every == scan_every - 1:
            for _ in range(scan_length):
                keys.append(scan_at)
                key_sizes.append(sizes[scan_at])
                scan_at = scan_at + 1 if scan_at + 1 < objects else objects // 2
            continue
        if rng.random() < one_hit:
            keys.append(next_unique)
            key_sizes.append(object_sizes(rng, 1)[0])
            next_unique += 1
        else:
            k = popular[p]
            p += 1
            keys.append(k)
            key_sizes.append(sizes[k])
    return keys[:requests], key_sizes[:requests], catalog_bytes


def replay(store: Any, keys: list[int], sizes: list[int], warmup: int) -> tuple[float, float, int, float]:
    """(byte hit ratio, object hit ratio, store operations, seconds) after ``warmup`` requests."""
    get, put, cap = store.get, store.put, store.capacity
    hit_bytes = all_bytes = hits = ops = 0
    start = time.perf_counter()
    for i, (k, size) in enumerate(zip(keys, sizes, strict=True)):
        found = get(k)
        ops += 1
        if found is None:
            if size <= cap:
                put(k, size, size)
                ops += 1
        elif i >= warmup:
            hits += 1
            hit_bytes += size
        if i >= warmup:
            all_bytes += size
    elapsed = time.perf_counter() - start
    counted = len(keys) - warmup
    return hit_bytes / all_bytes, hits / counted, ops, elapsed


def get_loop(store: Any, n: int) -> float:
    keys = list(range(1000))
    for k in keys:
        store.put(k, k, 1)
    get = store.get
    seq = keys * (n // 1000)
    start = time.perf_counter()
    for k in seq:
        get(k)
    return len(seq) / (time.perf_counter() - start)


def put_churn(store: Any, n: int) -> float:
    put = store.put
    for k in range(store.capacity):
        put(-1 - k, None, 1)
    keys = range(n)
    start = time.perf_counter()
    for k in keys:
        put(k, None, 1)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_500_000)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--alpha", type=float, default=0.9, help="Zipf exponent of the catalog's popularity")
    ap.add_argument("--one-hit", type=float, default=0.2, help="share of requests for one-hit wonders")
    ap.add_argument("--scan-every", type=int, default=150_000)
    ap.add_argument("--scan-length", type=int, default=20_000)
    ap.add_argument("--sizes", default="0.01,0.04,0.16", help="cache sizes, fractions of the catalog's bytes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--quick", action="store_true", help="300k requests, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.rounds = 300_000, 1
    keys, sizes, catalog = make_trace(
        args.seed, args.requests, args.objects, args.alpha, args.one_hit, args.scan_every, args.scan_length
    )
    uniq = len(set(keys))
    print(
        f"trace: {len(keys):,} requests, {uniq:,} distinct objects, catalog {catalog / MIB:,.0f} MiB, "
        f"{sum(sizes) / MIB:,.0f} MiB requested; Zipf {args.alpha}, one-hit {args.one_hit:.0%}, "
        f"scan of {args.scan_length:,} every {args.scan_every:,}; seed {args.seed}"
    )
    warmup = len(keys) // 10
    print("\n| cache size | policy | byte hit ratio | object hit ratio | replay ops/s |")
    print("|---|---|---|---|---|")
    for frac in (float(f) for f in args.sizes.split(",")):
        cap = int(catalog * frac)
        for name, cls in POLICIES.items():
            best = None
            for _ in range(args.rounds):
                r = replay(cls(cap), keys, sizes, warmup)
                if best is None or r[3] < best[3]:
                    best = r
            assert best is not None
            bhr, ohr, ops, secs = best
            print(
                f"| {frac:.0%} ({cap / MIB:,.0f} MiB) | {name} | {bhr:.4f} | {ohr:.4f} | {ops / secs:,.0f} |"
            )
    print("\n| policy | get hit ops/s | put churn ops/s (evicting) |")
    print("|---|---|---|")
    speed: dict[str, list[float]] = {n: [0.0, 0.0] for n in POLICIES}
    for _ in range(max(args.rounds, 3)):
        for name, cls in POLICIES.items():
            speed[name][0] = max(speed[name][0], get_loop(cls(10**6), 2_000_000))
            speed[name][1] = max(speed[name][1], put_churn(cls(100_000), 1_000_000))
    for name, (g, p) in speed.items():
        print(f"| {name} | {g:,.0f} | {p:,.0f} |")


if __name__ == "__main__":
    main()
