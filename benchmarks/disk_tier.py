"""The disk tier (issue 20): hit ratio with and without it, a kill -9 mid-fill, index rebuild time.

    flock /tmp/bench.lock python -m benchmarks.disk_tier [--quick] [--phase ratio|crash|rebuild|all]

Processes on loopback: an origin (this module, ``origin`` sub-command: every object's body
is derived from its number, so the client checks the sha256 of every response it gets) and
``python -m edge.cli serve`` with ``--disk-cache``.

- ratio: one Zipf(0.8) trace over a catalogue of ``--catalogue-mib`` (512) of objects sized
  16 KiB..1 MiB (log-uniform), through an edge of ``--cache-mib`` (128) memory, once without
  and once with the disk tier: byte hit ratio (response bytes whose Cache-Status says hit)
  and origin requests.
- crash: a fill-heavy run (every object once, 16 clients) killed with SIGKILL after
  ``--kill-after`` s, the edge restarted on the same directory; then every object the first
  run received is asked again: bodies whose sha256 differs from the origin's (must be 0),
  the index rebuild time the edge logs, the hit ratio of that pass.
- rebuild: ``--records`` (200,000) synthetic 1 KiB records written with
  ``edge.cache.disk_format``, then a fresh process rebuilds the index (page cache warm,
  and cold when ``/proc/sys/vm/drop_caches`` is writable).
- nginx: 256 KiB and 4 MiB disk hits (edge memory 1 MiB) against nginx's proxy_cache with
  ``sendfile on`` and off (its default), each server alone on core 0, wrk on core 1: a warm
  run, then ``--cold-rounds`` cold rounds, each after ``fdatasync`` + ``POSIX_FADV_DONTNEED``
  on every file of the server's cache directory (checked with mincore through ``fincore``;
  the line says NOT COLD when pages stayed), asking for every object once. ``--edge-root
  LABEL=DIR`` (repeatable) runs other checkouts' edges in the same run (before / after).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KiB, MiB = 1024, 1024 * 1024
TOKEN = "bench-token"
HOST = {"Host": "bench.example"}
"""Every request names one site, so a restarted edge on another port keys objects alike."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def size_of(n: int) -> int:
    rnd = random.Random(n)
    return int(16 * KiB * (64 ** rnd.random()))  # 16 KiB .. 1 MiB, log-uniform


def body_of(n: int) -> bytes:
    size = size_of(n)
    seed = hashlib.sha256(b"%d" % n).digest()
    return (seed * (size // 32 + 1))[:size]


# -- the origin --------------------------------------------------------------------------------


async def origin_main(port: int) -> None:
    count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                if target == b"/__count":
                    body, fields = b"%d" % count, b""
                elif target.startswith(b"/s/"):  # /s/SIZE/N: a fixed size, for the nginx comparison
                    count += 1
                    _, _, size, n = target.split(b"/")
                    body = (hashlib.sha256(n).digest() * (int(size) // 32 + 1))[: int(size)]
                    fields = b'Cache-Control: max-age=86400\r\nETag: "s%s"\r\n' % n
                else:
                    count += 1
                    n = int(target.rsplit(b"/", 1)[1])
                    body = body_of(n)
                    fields = b'Cache-Control: max-age=86400\r\nETag: "%d"\r\n' % n
                writer.write(b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n" % (fields, len(body)) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- edge and origin processes -------------------------------------------------------------------


class Edge:
    def __init__(
        self,
        origin: str,
        cache_mib: int,
        disk: Path | None,
        disk_mib: int,
        log: Path,
        root: str | None = None,
    ) -> None:
        self.port, self.admin = free_port(), free_port()
        argv = [
            sys.executable, "-m", "edge.cli", "serve", "--upstream", origin,
            "--listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{self.admin}",
            "--admin-token", TOKEN, "--access-log", "off", "--tls-listen", "", "--quic-listen", "",
            "--cache-size", f"{cache_mib}MiB", "--compress-codings", "",
        ]  # fmt: skip
        if disk is not None:
            argv += ["--disk-cache", str(disk), "--disk-size", f"{disk_mib}MiB"]
        self.log = log
        env = None
        if root is not None:  # another checkout's edge (e.g. a `git worktree` of the commit before)
            env = {**os.environ, "PYTHONPATH": os.path.abspath(root)}
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "ab"),  # noqa: SIM115
            env=env,
            cwd=root,
        )
        wait_port(self.port)

    def stats(self) -> dict[str, object]:
        r = httpx.get(f"http://127.0.0.1:{self.admin}/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        return dict(r.json())

    def rebuilt_in(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                stats = self.stats()
            except httpx.HTTPError:
                stats = {}
            if stats.get("disk_ready"):
                return float(stats["disk_load_seconds"])  # type: ignore[arg-type]
            time.sleep(0.05)
        raise TimeoutError("the edge did not rebuild its index")

    def stop(self, kill: bool = False) -> None:
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(30)


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def origin_count(origin: str) -> int:
    return int(httpx.get(origin + "/__count").text)


# -- the client ----------------------------------------------------------------------------------


async def fetch_all(port: int, trace: list[int], clients: int) -> dict[str, int]:
    """Fetch ``trace`` with ``clients`` concurrent keep-alive clients; check every body."""
    totals = {"requests": 0, "bytes": 0, "hit_bytes": 0, "hits": 0, "bad": 0, "errors": 0}
    queue = iter(trace)
    digests: dict[int, bytes] = {}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=HOST) as c:
            for n in queue:
                try:
                    r = await c.get(f"/obj/{n}")
                except httpx.HTTPError:
                    totals["errors"] += 1
                    continue
                want = digests.get(n) or digests.setdefault(n, hashlib.sha256(body_of(n)).digest())
                totals["requests"] += 1
                totals["bytes"] += len(r.content)
                if r.status_code != 200 or hashlib.sha256(r.content).digest() != want:
                    totals["bad"] += 1
                if "hit" in r.headers.get("cache-status", "").rsplit(",", 1)[-1].split(";")[1]:
                    totals["hits"] += 1
                    totals["hit_bytes"] += len(r.content)

    await asyncio.gather(*(client() for _ in range(clients)))
    return totals


def zipf_trace(objects: int, requests: int, seed: int, alpha: float = 0.8) -> list[int]:
    rnd = random.Random(seed)
    ranks = list(range(objects))
    rnd.shuffle(ranks)
    weights = [1 / (i + 1) ** alpha for i in range(objects)]
    return rnd.choices(ranks, weights=weights, k=requests)


def catalogue(mib: int) -> int:
    total, n = 0, 0
    while total < mib * MiB:
        total += size_of(n)
        n += 1
    return n


# -- phases --------------------------------------------------------------------------------------


def phase_ratio(args: argparse.Namespace, work: Path, origin: str) -> None:
    objects = catalogue(args.catalogue_mib)
    trace = zipf_trace(objects, args.requests, seed=20)
    print(f"ratio: {objects} objects ({args.catalogue_mib} MiB), {len(trace)} requests, Zipf 0.8, "
          f"memory {args.cache_mib} MiB")  # fmt: skip
    for disk in (False, True):
        d = work / "ratio-disk"
        shutil.rmtree(d, ignore_errors=True)
        before = origin_count(origin)
        edge = Edge(
            origin, args.cache_mib, d if disk else None, 4 * args.catalogue_mib, work / "edge-ratio.log"
        )
        if disk:
            edge.rebuilt_in()
        started = time.monotonic()
        totals = asyncio.run(fetch_all(edge.port, trace, 8))
        elapsed = time.monotonic() - started
        stats = edge.stats()
        edge.stop()
        print(
            f"  {'memory + disk' if disk else 'memory only  '}: byte hit ratio "
            f"{totals['hit_bytes'] / totals['bytes']:.3f}, object hit ratio {totals['hits'] / totals['requests']:.3f}, "
            f"origin requests {origin_count(origin) - before}, bad bodies {totals['bad']}, errors {totals['errors']}, "
            f"{elapsed:.1f} s, disk hits {stats.get('disk_hits', '-')}, disk writes {stats.get('disk_writes', '-')}, "
            f"skipped {stats.get('disk_writes_skipped', '-')}"
        )  # fmt: skip


def phase_crash(args: argparse.Namespace, work: Path, origin: str) -> None:
    d = work / "crash-disk"
    shutil.rmtree(d, ignore_errors=True)
    objects = catalogue(args.catalogue_mib)
    log = work / "edge-crash.log"
    log.write_bytes(b"")
    edge = Edge(origin, args.cache_mib, d, 4 * args.catalogue_mib, log)
    edge.rebuilt_in()
    done: list[int] = []

    async def fill() -> None:
        queue = iter(range(objects))

        async def client() -> None:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{edge.port}", timeout=30, headers=HOST
            ) as c:
                for n in queue:
                    try:
                        r = await c.get(f"/obj/{n}")
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        done.append(n)

        tasks = [asyncio.create_task(client()) for _ in range(16)]
        await asyncio.sleep(args.kill_after)
        edge.stop(kill=True)
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(fill())
    tmp = len(list(d.rglob(".tmp-*")))
    records = sum(1 for p in d.rglob("*") if p.is_file() and p.parent.parent.name == "objects")
    print(f"crash: killed -9 after {args.kill_after} s: {len(done)} objects received, {records} records "
          f"and {tmp} temporary files on disk")  # fmt: skip
    log.write_bytes(b"")
    started = time.monotonic()
    edge = Edge(origin, args.cache_mib, d, 4 * args.catalogue_mib, log)
    rebuilt = edge.rebuilt_in()
    wall = time.monotonic() - started
    before = origin_count(origin)
    totals = asyncio.run(fetch_all(edge.port, done, 8))
    print(
        f"  restart: index rebuilt in {rebuilt:.2f} s ({edge.stats()['disk_loaded_records']} records; process up to "
        f"index {wall:.2f} s); then {totals['requests']} requests: bad bodies {totals['bad']}, object hit ratio "
        f"{totals['hits'] / max(1, totals['requests']):.3f}, byte hit ratio "
        f"{totals['hit_bytes'] / max(1, totals['bytes']):.3f}, origin requests {origin_count(origin) - before}"
    )  # fmt: skip
    edge.stop()


REBUILD = """
import asyncio, sys, time
from edge.core.disk import DiskTier
async def main():
    tier = DiskTier(sys.argv[1], 1 << 50)
    t = time.perf_counter()
    await tier.start()
    print(len(tier.index), time.perf_counter() - t)
    await tier.write_snapshot()
    tier.pool.shutdown()
asyncio.run(main())
"""


def phase_rebuild(args: argparse.Namespace, work: Path) -> None:
    from edge.cache.disk_format import RecordHead, body_digest, encode_head, file_name

    d = work / "rebuild-disk"
    shutil.rmtree(d, ignore_errors=True)
    for sub in range(256):
        (d / "objects" / f"{sub:02x}").mkdir(parents=True)
    started = time.monotonic()
    body = b"x" * KiB
    digest = body_digest(body)
    fields = [(b"Cache-Control", b"max-age=86400"), (b"Content-Type", b"application/octet-stream")]
    now = time.time()
    for i in range(args.records):
        key = b"http://bench.example/obj/%d" % i
        head = RecordHead(key, b"", 200, b"OK", fields, (), now, 0.0, 86400.0, True, False, False, now,
                          now + 86400, len(body), digest)  # fmt: skip
        name = file_name(key, b"")
        with open(d / "objects" / name[:2] / name, "wb") as f:
            f.write(encode_head(head) + body)
    print(f"rebuild: {args.records} records written in {time.monotonic() - started:.1f} s")
    runs = [("heads only, warm page cache", False, False), ("from the snapshot, warm", False, True)]
    drop = Path("/proc/sys/vm/drop_caches")
    if os.access(drop, os.W_OK):
        runs.append(("from the snapshot, cold page cache", True, True))
        if not args.no_cold_heads:
            runs.append(("heads only, cold page cache", True, False))
    snap = d / "index-0.snap"
    for what, cold, use_snapshot in runs:
        if not use_snapshot:
            snap.unlink(missing_ok=True)
        if cold:
            os.sync()
            drop.write_text("3\n")
        out = subprocess.run(
            [sys.executable, "-c", REBUILD, str(d)], capture_output=True, text=True, check=True
        )
        count, seconds = out.stdout.split()
        print(f"  {what}: {count} records indexed in {float(seconds):.2f} s "
              f"({int(count) / float(seconds):,.0f} records/s)")  # fmt: skip
    shutil.rmtree(d, ignore_errors=True)


NGINX = """
user root;
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    sendfile {sendfile};
    proxy_cache_path {prefix}/cache keys_zone=edge:64m max_size=4g inactive=1h;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_cache edge;
            proxy_cache_key $proxy_host$request_uri;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""
WRK_LUA = """
counter = 0
request = function()
    counter = counter + 1
    return wrk.format("GET", "/s/{size}/" .. (counter % {objects}))
end
"""
WRK_ONCE_LUA = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct {{ long tv_sec; long tv_nsec; }} edge_ts; int clock_gettime(int, edge_ts *); ]]
local ts = ffi.new("edge_ts")
local function now() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9 end
counter = 0
done = 0
started = nil
request = function()
    if started == nil then started = now() end
    counter = counter + 1
    return wrk.format("GET", "/s/{size}/" .. (counter % {objects}))
end
response = function(status, headers, body)
    done = done + 1
    if done == {objects} then
        io.write(string.format("ELAPSED %.6f\\n", now() - started))
        io.flush()
        wrk.thread:stop()
    end
end
"""
"""A cold round: every object asked once; the time from the first request to the last answer
is printed by the script (wrk itself waits out its -d and divides by that)."""


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _group(pid: int) -> list[int]:
    """``pid`` and its children (nginx's master and worker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(c) for c in children.read_text().split())] if children.exists() else [pid]


def _files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


def evict(directory: Path) -> tuple[int, int]:
    """Drop ``directory``'s files from the page cache (fdatasync, then POSIX_FADV_DONTNEED: the
    sandbox cannot write /proc/sys/vm/drop_caches); (bytes of the files, bytes still resident
    after, by mincore through util-linux ``fincore``)."""
    files = _files(directory)
    total = 0
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fdatasync(fd)  # nginx does not sync its cache files: dirty pages would stay
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total, resident(files)


def resident(files: list[Path]) -> int:
    """Bytes of ``files`` in the page cache (mincore, via ``fincore``)."""
    out = 0
    for i in range(0, len(files), 200):
        run = subprocess.run(
            ["fincore", "-b", "-n", "-r", "-o", "RES", *map(str, files[i : i + 200])],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        out += sum(int(line) for line in run.stdout.split() if line.isdigit())
    return out


def _wrk(port: int, lua: Path, seconds: float) -> tuple[int, float, float, float | None]:
    """(requests, req/s, p99 ms, the script's ELAPSED or None) of one wrk run on core 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(lua),
         "--timeout", "10s", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([0-9.]+)(us|ms|s)", out)
    assert p99 is not None, out
    ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    elapsed = re.search(r"ELAPSED ([0-9.]+)", out)
    return reqs, rate, ms, float(elapsed.group(1)) if elapsed else None


def phase_nginx(args: argparse.Namespace, work: Path, origin: str) -> None:
    """Disk hits (memory too small to hold the objects) against nginx's proxy_cache on disk,
    page cache warm, then cold (both caches' files evicted before each cold round)."""
    origin_port = int(origin.rsplit(":", 1)[1])
    roots = [tuple(r.split("=", 1)) for r in args.edge_root] or [("edge", None)]
    print(f"disk hits vs nginx proxy_cache (both on core 0, wrk -t1 -c16 on core 1; warm: {args.wrk_seconds} s; "
          f"cold: {args.cold_rounds} rounds of every object once, the cache directory evicted before each):")  # fmt: skip
    print(
        "  (server CPU per request from /proc; p99 of a cold row: the median of its rounds'; edge roots: "
        + ", ".join(f"{label}={root or '.'}" for label, root in roots)
        + ")"
    )
    sizes = [(256 * KiB, 256), (4 * MiB, 32)]
    if args.sizes:
        sizes = [(s, o) for s, o in sizes if f"{s // KiB}k" in args.sizes.split(",")]
    for size, objects in sizes:
        paths = [f"/s/{size}/{n}" for n in range(objects)]
        lua = work / "disk.lua"
        lua.write_text(WRK_LUA.format(size=size, objects=objects))
        once = work / "once.lua"
        once.write_text(WRK_ONCE_LUA.format(size=size, objects=objects))
        servers: list[tuple[str, str | None]] = [(f"{label}", root) for label, root in roots]
        if args.edge_memory:
            servers.append(("edge-memory", roots[0][1]))
        servers += [("nginx", None), ("nginx-nosendfile", None)]
        for server, root in servers:
            directory: Path | None = None
            if server == "edge-memory":  # the same objects as memory hits, for the disk's share
                edge = Edge(origin, 1024, None, 0, work / "edge-nginx.log", root)
                port, proc = edge.port, edge.proc
            elif not server.startswith("nginx"):  # memory too small: every hit is read from disk
                directory = work / "nginx-cmp-disk"
                shutil.rmtree(directory, ignore_errors=True)
                edge = Edge(origin, 1, directory, 2048, work / "edge-nginx.log", root)
                edge.rebuilt_in()
                port, proc = edge.port, edge.proc
            else:
                prefix = work / "nginx"
                shutil.rmtree(prefix, ignore_errors=True)
                prefix.mkdir()
                port = free_port()
                (prefix / "nginx.conf").write_text(
                    NGINX.format(prefix=prefix, origin_port=origin_port, port=port,
                                 sendfile="on" if server == "nginx" else "off")
                )  # fmt: skip
                proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
                wait_port(port)
                directory = prefix / "cache"
            subprocess.run(["taskset", "-pc", "0", str(proc.pid)], capture_output=True, check=False)
            for pid in _group(proc.pid):
                subprocess.run(["taskset", "-pc", "0", str(pid)], capture_output=True, check=False)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                for _ in range(2):  # stored, then a hit (the edge: from disk, memory holds 1 MiB)
                    for path in paths:
                        c.get(path)
            if not server.startswith("nginx"):
                edge_stats_before = edge.stats()
            pids = _group(proc.pid)
            cpu0 = _cpu_seconds(pids)
            reqs, rate, p99, _ = _wrk(port, lua, args.wrk_seconds)
            cpu = _cpu_seconds(pids) - cpu0
            extra = ""
            if server != "edge-memory" and not server.startswith("nginx"):
                after = edge.stats()
                extra = f", disk hits {int(after['disk_hits']) - int(edge_stats_before['disk_hits'])}"  # type: ignore[call-overload]
                if "disk_fast_hits" in after:
                    extra += f" (fast {int(after['disk_fast_hits']) - int(edge_stats_before.get('disk_fast_hits', 0))})"  # type: ignore[call-overload]
            print(f"  {size // KiB:>5} KiB x {objects} {server:>16} warm: {rate:8.0f} req/s, p99 {p99:7.1f} ms, "
                  f"CPU {1e6 * cpu / max(1, reqs):6.0f} us/request{extra}", flush=True)  # fmt: skip
            if directory is not None and args.cold_rounds:
                c_reqs, c_cpu, c_time, p99s, left, total = 0, 0.0, 0.0, [], 0, 0
                for _ in range(args.cold_rounds):
                    total, left_now = evict(directory)
                    left = max(left, left_now)
                    cpu0 = _cpu_seconds(pids)
                    n, _rate, p99, elapsed = _wrk(port, once, args.cold_seconds)
                    c_cpu += _cpu_seconds(pids) - cpu0
                    if elapsed is None:
                        print(f"  {server}: a cold round did not finish in {args.cold_seconds} s")
                        elapsed = float(args.cold_seconds)
                    c_time += elapsed
                    c_reqs += n
                    p99s.append(p99)
                p99s.sort()
                note = (
                    ""
                    if left < total // 100
                    else f" [NOT COLD: {left} of {total} bytes still resident after the eviction]"
                )
                print(f"  {size // KiB:>5} KiB x {objects} {server:>16} cold: {c_reqs / c_time:8.0f} req/s, "
                      f"p99 {p99s[len(p99s) // 2]:7.1f} ms, CPU {1e6 * c_cpu / max(1, c_reqs):6.0f} us/request "
                      f"({c_reqs} requests; resident after eviction: {left} of {total} bytes){note}", flush=True)  # fmt: skip
            if not server.startswith("nginx"):
                edge.stop()
            else:
                proc.terminate()
                proc.wait(10)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "origin":
        asyncio.run(origin_main(int(sys.argv[2])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["ratio", "crash", "rebuild", "nginx", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="a smaller catalogue and trace")
    parser.add_argument("--catalogue-mib", type=int, default=512)
    parser.add_argument("--cache-mib", type=int, default=128)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--kill-after", type=float, default=4.0)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--cold-rounds", type=int, default=5, help="nginx phase: cold rounds (0: none)")
    parser.add_argument(
        "--cold-seconds", type=int, default=4, help="nginx phase: wrk -d of one cold round (its bound)"
    )
    parser.add_argument(
        "--edge-root", action="append", default=[], metavar="LABEL=DIR",
        help="nginx phase: an edge checkout to run (repeatable; default: this one, labelled edge)",
    )  # fmt: skip
    parser.add_argument(
        "--edge-memory", action="store_true", help="nginx phase: also the objects as memory hits"
    )
    parser.add_argument("--sizes", default="", help="nginx phase: 256k,4096k (default both)")
    parser.add_argument(
        "--no-cold-heads", action="store_true", help="skip the slowest rebuild (minutes at 1M)"
    )
    args = parser.parse_args()
    if args.quick:
        args.catalogue_mib, args.cache_mib, args.requests, args.records = 64, 16, 1500, 20_000
        args.kill_after = 1.0
    work = Path(tempfile.mkdtemp(prefix="edge-disk-bench-"))
    port = free_port()
    origin_proc = subprocess.Popen([sys.executable, "-m", "benchmarks.disk_tier", "origin", str(port)])
    try:
        wait_port(port)
        origin = f"http://127.0.0.1:{port}"
        if args.phase in ("ratio", "all"):
            phase_ratio(args, work, origin)
        if args.phase in ("crash", "all"):
            phase_crash(args, work, origin)
        if args.phase in ("rebuild", "all"):
            phase_rebuild(args, work)
        if args.phase in ("nginx", "all"):
            phase_nginx(args, work, origin)
    finally:
        origin_proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
