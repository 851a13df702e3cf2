"""Cold compressed misses (issue 19): TTFB, bytes and the edge's CPU for a 200 KiB JS miss.

Starts the project's origin on a folder holding only ``app.js`` (the benchmark's synthetic
200 KiB JavaScript, no precompressed siblings, so the edge gets identity from upstream) and
an edge per ``--edge-root`` in front of it (two checkouts: before and after a change), the
edges on core 0 and the origin and this client on core 1. Each object is a fresh URL
(``/app.js?cold=N``) fetched by one keep-alive HTTP/1.1 connection per edge, the edges taking
turns object by object (so a busy moment of the machine falls on both):

* the miss with ``Accept-Encoding: <coding>``: time to the response head (TTFB), to the
  last byte, its Content-Encoding and body bytes;
* the same URL again (the first hit), then a pause for the edge's compression thread.

The edge's CPU (utime + stime of its process from /proc, 10 ms ticks) is read around each
round of ``--objects`` objects and divided by them: it includes the miss, the first hit and
the stored variant's compression, whenever each happens. Medians over ``--rounds``::

    python -m benchmarks.cold_compressed --coding br --rounds 5
    python -m benchmarks.cold_compressed --edge-root /path/to/older/checkout --edge-root .

All traffic is on 127.0.0.1; only the two processes started here are stopped.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import RULES, free_port, make_js, wait_port

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch(conn: http.client.HTTPConnection, path: str, coding: str) -> tuple[float, float, str, int]:
    """(TTFB s, total s, Content-Encoding, body bytes as sent)."""
    headers = {"Accept-Encoding": coding} if coding != "none" else {}
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    ttfb = time.perf_counter() - started
    body = resp.read()
    return ttfb, time.perf_counter() - started, resp.getheader("Content-Encoding") or "identity", len(body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coding", default="br", help="Accept-Encoding of the requests (br, zstd, gzip, none)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--objects", type=int, default=20, help="cold objects per round")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds after each first hit")
    ap.add_argument(
        "--edge-root",
        type=Path,
        action="append",
        help="checkout an edge is run from (repeatable; default this one)",
    )
    args = ap.parse_args(argv)
    roots: list[Path] = args.edge_root or [ROOT]
    with tempfile.TemporaryDirectory(prefix="cold-compressed-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "app.js").write_bytes(make_js(200 * 1024))
        rules = Path(tmp) / "rules.toml"
        rules.write_text(RULES)
        origin_port = free_port()
        origin = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-m", "origin", "serve", "--root", str(site),
             "--listen", f"127.0.0.1:{origin_port}", "--rules", str(rules)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        edges, ports = [], []
        procs = [origin]
        try:
            for root in roots:
                port = free_port()
                edges.append(
                    subprocess.Popen(
                        [
                            "taskset",
                            "-c",
                            "0",
                            sys.executable,
                            "-m",
                            "edge.cli",
                            "serve",
                            "--upstream",
                            f"http://127.0.0.1:{origin_port}",
                            "--listen",
                            f"127.0.0.1:{port}",
                            "--admin-listen",
                            "",
                        ],
                        cwd=root,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                procs.append(edges[-1])
                ports.append(port)
            os.sched_setaffinity(0, {1})
            wait_port(origin_port, origin, "origin")
            conns = []
            for edge, port in zip(edges, ports, strict=True):
                wait_port(port, edge, "edge")
                conns.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
                fetch(conns[-1], "/app.js?warm", args.coding)  # imports, first connection upstream
            time.sleep(1.0)
            n = len(edges)
            ttfbs: list[list[float]] = [[] for _ in edges]
            totals: list[list[float]] = [[] for _ in edges]
            cpus: list[list[float]] = [[] for _ in edges]
            miss_bytes: list[list[int]] = [[] for _ in edges]
            hit_bytes: list[list[int]] = [[] for _ in edges]
            codings: list[set[str]] = [set() for _ in edges]
            serial = 0
            for _ in range(args.rounds):
                before = [cpu_seconds(edge.pid) for edge in edges]
                for _ in range(args.objects):
                    serial += 1
                    path = f"/app.js?cold={serial}"
                    for k in range(n):
                        i = (serial + k) % n  # who goes first alternates
                        ttfb, total, coding, size = fetch(conns[i], path, args.coding)
                        ttfbs[i].append(ttfb)
                        totals[i].append(total)
                        miss_bytes[i].append(size)
                        codings[i].add(coding)
                        hit_bytes[i].append(fetch(conns[i], path, args.coding)[3])
                        time.sleep(args.settle)
                for i, edge in enumerate(edges):
                    cpus[i].append((cpu_seconds(edge.pid) - before[i]) / args.objects)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"Accept-Encoding: {args.coding}, {args.rounds} x {args.objects} objects per edge")
    for i, root in enumerate(roots):
        print(f"edge from {root}: miss Content-Encoding {', '.join(sorted(codings[i]))}")
        print(
            f"  miss TTFB median {statistics.median(ttfbs[i]) * 1000:.2f} ms, "
            f"last byte {statistics.median(totals[i]) * 1000:.2f} ms"
        )
        print(
            f"  miss body {statistics.median(miss_bytes[i]):,.0f} B, "
            f"first hit body {statistics.median(hit_bytes[i]):,.0f} B"
        )
        print(
            f"  edge CPU per object (miss + first hit + stored variant) median "
            f"{statistics.median(cpus[i]) * 1000:.1f} ms (rounds: {', '.join(f'{c * 1000:.1f}' for c in cpus[i])})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
