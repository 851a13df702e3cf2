"""Store benchmark: the native LRU against the usual Python LRUs.

A Zipf-distributed get-or-put workload (default: 1M operations over 200k
distinct keys, room for 50k entries): every operation is a ``get``; a miss is
followed by a ``put``. All implementations run interleaved in one process,
round after round, so machine noise hits them alike; the best round counts
(the median is shown too).

Contenders, each used through its natural fast API:

- ``edge._lru.LRU``            native store, charge 1 per entry
- ``cachetools.LRUCache``      the reference point (``ratio`` column)
- ``OrderedDict`` LRU          get + move_to_end, popitem(last=False)
- ``lru-dict`` (``lru.LRU``)   the common C LRU on PyPI
- ``dict``                     no eviction at all: the floor

Also printed: the bytes of overhead per entry beyond key and value, measured
with tracemalloc while filling ``capacity`` entries with pre-built keys and a
shared value.

    python benchmarks/store_bench.py [--ops N] [--keys N] [--capacity N] [--rounds N]
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import random
import statistics
import sys
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cachetools
import lru as lru_dict

try:
    from edge._lru import LRU
except ImportError:  # run from a checkout without `pip install -e .`
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edge._lru import LRU

Run = Callable[[list[Any], int], int]  # (sequence, capacity) -> misses


def run_native(seq: list[Any], cap: int) -> int:
    s = LRU(cap)
    get, put = s.get, s.put
    misses = 0
    for k in seq:
        if get(k) is None:
            put(k, k, 1)
            misses += 1
    return misses


def run_cachetools(seq: list[Any], cap: int) -> int:
    c: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(maxsize=cap)
    get = c.get
    misses = 0
    for k in seq:
        if get(k) is None:
            c[k] = k
            misses += 1
    return misses


def run_ordereddict(seq: list[Any], cap: int) -> int:
    od: OrderedDict[Any, Any] = OrderedDict()
    get, move, popitem = od.get, od.move_to_end, od.popitem
    misses = 0
    for k in seq:
        if get(k) is None:
            od[k] = k
            if len(od) > cap:
                popitem(last=False)
            misses += 1
        else:
            move(k)
    return misses


def run_lru_dict(seq: list[Any], cap: int) -> int:
    c = lru_dict.LRU(cap)
    get = c.get
    misses = 0
    for k in seq:
        if get(k) is None:
            c[k] = k
            misses += 1
    return misses


def run_dict(seq: list[Any], cap: int) -> int:
    d: dict[Any, Any] = {}
    get = d.get
    misses = 0
    for k in seq:
        if get(k) is None:
            d[k] = k
            misses += 1
    return misses


CONTENDERS: list[tuple[str, Run]] = [
    ("edge._lru.LRU", run_native),
    ("cachetools.LRUCache", run_cachetools),
    ("OrderedDict LRU", run_ordereddict),
    ("lru-dict", run_lru_dict),
    ("dict (no eviction)", run_dict),
]


def fill_native(keys: list[Any], value: Any) -> Any:
    s = LRU(len(keys))
    for k in keys:
        s.put(k, value, 1)
    return s


def fill_cachetools(keys: list[Any], value: Any) -> Any:
    c: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(maxsize=len(keys))
    for k in keys:
        c[k] = value
    return c


def fill_ordereddict(keys: list[Any], value: Any) -> Any:
    od: OrderedDict[Any, Any] = OrderedDict()
    for k in keys:
        od[k] = value
    return od


def fill_lru_dict(keys: list[Any], value: Any) -> Any:
    c = lru_dict.LRU(len(keys))
    for k in keys:
        c[k] = value
    return c


def fill_dict(keys: list[Any], value: Any) -> Any:
    d: dict[Any, Any] = {}
    for k in keys:
        d[k] = value
    return d


FILLERS: dict[str, Callable[[list[Any], Any], Any]] = {
    "edge._lru.LRU": fill_native,
    "cachetools.LRUCache": fill_cachetools,
    "OrderedDict LRU": fill_ordereddict,
    "lru-dict": fill_lru_dict,
    "dict (no eviction)": fill_dict,
}


def overhead_per_entry(fill: Callable[[list[Any], Any], Any], keys: list[Any]) -> float:
    value = object()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        container = fill(keys, value)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del container
    return (after - before) / len(keys)


def zipf_sequence(n_ops: int, n_keys: int, s: float, seed: int, as_bytes: bool) -> list[Any]:
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, n_keys + 1)))
    total = cum[-1]
    keys: list[Any] = [f"/assets/{i:06d}.js" for i in range(n_keys)]
    if as_bytes:
        keys = [k.encode() for k in keys]
    rng.shuffle(keys)  # popularity unrelated to key order or hash
    return [keys[bisect.bisect_left(cum, rng.random() * total)] for _ in range(n_ops)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--capacity", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bytes", action="store_true", help="bytes keys instead of str")
    args = ap.parse_args(argv)

    seq = zipf_sequence(args.ops, args.keys, args.zipf, args.seed, args.bytes)
    print(
        f"Python {sys.version.split()[0]}; {args.ops:,} ops, {args.keys:,} keys "
        f"(Zipf s={args.zipf}, {'bytes' if args.bytes else 'str'}), capacity "
        f"{args.capacity:,} entries, {args.rounds} interleaved rounds"
    )

    times: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
    misses: dict[str, int] = {}
    for r in range(args.rounds):
        order = CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]
        for name, run in order:
            gc.collect()
            t0 = time.perf_counter()
            m = run(seq, args.capacity)
            times[name].append(time.perf_counter() - t0)
            misses[name] = m

    fill_keys = list(dict.fromkeys(seq))[: args.capacity]
    ref = args.ops / min(times["cachetools.LRUCache"])
    floor = args.ops / min(times["dict (no eviction)"])
    rows = []
    for name, _ in CONTENDERS:
        best = args.ops / min(times[name])
        med = args.ops / statistics.median(times[name])
        hit = 1 - misses[name] / args.ops
        over = overhead_per_entry(FILLERS[name], fill_keys)
        rows.append((name, best, med, hit, best / ref, over))

    head = (
        f"{'store':<22}{'ops/s best':>13}{'ops/s median':>14}{'hit ratio':>11}"
        f"{'x cachetools':>14}{'B/entry':>9}"
    )
    print(head)
    print("-" * len(head))
    for name, best, med, hit, ratio, over in rows:
        print(f"{name:<22}{best:>13,.0f}{med:>14,.0f}{hit:>11.4f}{ratio:>14.2f}{over:>9.1f}")

    native = rows[0][1]
    lru_dict_rate = next(r[1] for r in rows if r[0] == "lru-dict")
    over = rows[0][5]
    print()
    print("targets (native store):")
    for label, value, goal, ok in [
        ("vs cachetools", native / ref, ">= 4.0x", native / ref >= 4.0),
        ("vs lru-dict", native / lru_dict_rate, ">= 1.5x", native / lru_dict_rate >= 1.5),
        ("dict floor / native", floor / native, "<= 1.5x", floor / native <= 1.5),
        ("overhead B/entry", over, "<= 96", over <= 96),
    ]:
        print(f"  {label:<22}{value:>8.2f}  {goal:<8} {'met' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
