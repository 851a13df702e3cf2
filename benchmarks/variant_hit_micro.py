"""CPU cost of one HTTP/1.1 cache hit on a ``Vary: Accept-Encoding`` variant, without sockets.

``benchmarks.hit_path_micro`` with a browser's headers, the object stored as the
upstream's variant keyed ``br`` (what a browser's request is keyed by):

- ``--stored variant``: an identity text response with a br sibling the node made;
- ``--stored upstream-gzip``: the upstream's gzip body (an origin with only a ``.gz``
  sibling), which the fast hit sends only to a request accepting gzip
  (``edge.cache.key.accepts_coding``).

    python -m benchmarks.variant_hit_micro [--requests 200000] [--stored upstream-gzip]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks.hit_path_micro import BROWSER_HEADERS, NullTransport
from edge import config as edge_config
from edge.cache.encoded import encoded_sibling
from edge.cache.entry import Entry, Variants
from edge.cache.freshness import freshness_policy
from edge.core import EdgeCore
from edge.fronts.h1 import H1Protocol
from edge.http.dates import format_http_date


async def run(requests: int, stored: str) -> float:
    config = edge_config.load(None, {}, {"upstream": "http://127.0.0.1:9"})
    core = EdgeCore(config)
    now = time.time()
    fields = [(b"Date", format_http_date(now)), (b"Cache-Control", b"max-age=3600"),
              (b"Content-Type", b"text/plain"), (b"ETag", b'"abc"'), (b"Vary", b"Accept-Encoding")]  # fmt: skip
    if stored == "upstream-gzip":
        fields.append((b"Content-Encoding", b"gzip"))
    vary = (b"accept-encoding",)
    key = b"http://127.0.0.1:8080/1k.txt"
    entry = Entry(key, 200, b"OK", fields, b"x" * 1024, freshness_policy(200, fields, now), now, 0.0, vary)
    if stored == "variant":
        entry.encodings = {b"br": encoded_sibling(entry, b"br", b"y" * 100)}
    variants = Variants(vary)
    variants.by_secondary[b"br"] = entry
    core.store.put(key, variants, variants.charge)
    proto = H1Protocol(core, config)
    transport = NullTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    batch = (b"GET /1k.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" + BROWSER_HEADERS + b"\r\n") * 10
    start = time.perf_counter()
    for _ in range(requests // 10):
        proto.data_received(batch)
    elapsed = time.perf_counter() - start
    assert transport.bytes > 100 * requests, "hits were not served"
    return elapsed / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--stored", choices=["variant", "upstream-gzip"], default="variant")
    args = ap.parse_args()
    per_hit = asyncio.run(run(args.requests, args.stored))
    print(f"{per_hit:.2f} us per hit (browser headers, {args.stored}), {1e6 / per_hit:,.0f} hits/s of CPU")


if __name__ == "__main__":
    main()
