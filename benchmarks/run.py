"""Side-by-side benchmark: the edge against nginx proxy_cache, Varnish and Caddy.

One command starts the project's origin on a generated site (1 KiB, 16 KiB,
256 KiB, 4 MiB objects and a ~200 KiB JS file with .br/.gz siblings), the edge
and nginx proxy_cache and Varnish in front of it, and Caddy serving the same
files directly; warms every cache and checks that each answers HITs; then runs
bounded load, interleaved round-robin over rounds, per object and protocol:

* h1     HTTP/1.1 cleartext, ``wrk -t1 -c64``
* h2c    HTTP/2 cleartext with prior knowledge, ``h2load -c8 -m8`` (nginx, Varnish, Caddy)
* h2tls  HTTP/2 over TLS (ALPN h2), ``h2load -c8 -m8`` (nginx, Caddy, the edge when it has --tls-listen)
* h3     HTTP/3, ``benchmarks/h3load.py -c4 -m16`` (Caddy, the edge when it has --quic-listen)

Per-core mode (group ``1core``): every server on core 0, one worker each, the
load generator on core 1 (``taskset``). Both-cores mode (group ``2core``,
targets ``edge-w2`` and ``nginx-w2``): the edge with ``--workers 2`` and nginx
with two workers, nothing pinned, ``wrk -t2``; HTTP/1.1 only.

Measured per run: req/s, MiB/s of bodies, p50/p99 latency, server CPU seconds
per request (utime+stime of the server's process tree from /proc), the load
client's CPU. Then the cold-miss latency of a 16 KiB object through each cache
and the memory per cached 1 KiB object (RSS delta / N). Results (JSON, a
Markdown table, PNG plots, the peers' configs) land in
``benchmarks/results/<timestamp>/``. Usage::

    python -m benchmarks.run                 # 3 rounds, 5 s per run
    python -m benchmarks.run --quick         # 1 round, 2 s runs, 1k/256k/js
    python -m benchmarks.run --targets edge,nginx --protocols h1 --sizes 1k --rounds 5

Every load run is bounded in time (and h3load also in count); all traffic is
on 127.0.0.1; only processes this script started are stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.h3load import CDF_POINTS, percentile
from benchmarks.targets import CertFiles, make_dev_cert, render_caddyfile, render_nginx, render_vcl

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: Object name → (file, request headers). Order is the plots' x axis.
OBJECTS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "1k": ("1k.bin", ()),
    "16k": ("16k.bin", ()),
    "256k": ("256k.bin", ()),
    "4m": ("4m.bin", ()),
    "js": ("app.js", (("Accept-Encoding", "br, gzip"),)),
    # Identity bytes as many as app.js.br: a compressed hit should cost what this costs.
    "br-size": ("br-size.bin", ()),
}
SIZES = {"1k": 1024, "16k": 16 * 1024, "256k": 256 * 1024, "4m": 4 * 1024 * 1024}
PROTOCOLS = ("h1", "h2c", "h2tls", "h3")
ALL_TARGETS = ("edge", "nginx", "varnish", "caddy", "edge-w2", "nginx-w2")
CACHES = ("edge", "nginx", "varnish")

#: Debian package for each executable the suite runs.
TOOLS = {
    "nginx": "nginx",
    "varnishd": "varnish",
    "caddy": "caddy",
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "taskset": "util-linux",
}

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- /proc accounting


def parse_proc_stat(line: str) -> tuple[int, int]:
    """(ppid, utime+stime in clock ticks) from one /proc/PID/stat line.

    The command name is in parentheses and may itself contain spaces and
    parentheses, so fields are counted from the last ``)``.
    """
    rest = line[line.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _read_stat(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_proc_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _read_stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by ``root`` and its live descendants."""
    ticks = 0
    for pid in process_tree(root):
        st = _read_stat(pid)
        if st is not None:
            ticks += st[1]
    return ticks / CLK_TCK


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and its live descendants (sum of each one's RSS)."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_quiet(max_wait: float, threshold: float = 0.25, sample: float = 0.5) -> float:
    """Wait (at most ``max_wait`` s) until the machine's busy cores over ``sample`` s drop below
    ``threshold``; return the last busy figure. The servers under test are idle meanwhile, so
    what is busy is someone else (on a shared machine, other people's test runs)."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = machine_busy_seconds()
        time.sleep(sample)
        busy = (machine_busy_seconds() - b0) / sample
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (the load generators)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- load tool output


def _duration_us(value: str, unit: str) -> float:
    scale = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}[unit]
    return float(value) * scale


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests, req/s, errors and latency percentiles (ms) from wrk ``--latency`` output.

    The CDF comes from the ``CDF <pct> <us>`` lines our Lua ``done`` hook prints.
    """
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m or not n:
        raise ValueError(f"unexpected wrk output:\n{out}")
    lat: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        lat[pct] = _duration_us(value, unit) / 1000
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    cdf = [[float(p), int(us) / 1000] for p, us in re.findall(r"^CDF ([\d.]+) (\d+)$", out, re.M)]
    return {
        "requests": int(n.group(1)),
        "elapsed_s": _duration_us(n.group(2), n.group(3)) / 1e6,
        "rps": float(m.group(1)),
        "p50_ms": lat.get("50"),
        "p99_ms": lat.get("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "cdf": cdf,
    }


def parse_h2load(out: str) -> dict[str, Any]:
    """Requests, req/s, failures and the negotiated protocol from h2load output."""
    fin = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    req = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        out,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    proto = re.search(r"Application protocol: (\S+)", out)
    if not fin or not req or not codes:
        raise ValueError(f"unexpected h2load output:\n{out}")
    return {
        "requests": int(req.group(4)),
        "elapsed_s": _duration_us(fin.group(1), fin.group(2)) / 1e6,
        "rps": float(fin.group(3)),
        "failed": int(req.group(5)) + int(req.group(6)) + int(req.group(7)),
        "non2xx": int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)),
        "alpn": proto.group(1) if proto else None,
    }


def latency_summary(latencies_us: list[int]) -> dict[str, Any]:
    """p50/p99 and the CDF points (ms) of a list of per-request latencies in µs."""
    lat = sorted(latencies_us)
    return {
        "p50_ms": percentile(lat, 50) / 1000 if lat else None,
        "p99_ms": percentile(lat, 99) / 1000 if lat else None,
        "cdf": [[p, percentile(lat, p) / 1000] for p in CDF_POINTS] if lat else [],
    }


def parse_h2load_log(path: Path) -> list[int]:
    """Per-request durations (µs) from an h2load ``--log-file`` (start, status, duration)."""
    out = []
    with open(path) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1].startswith("2"):
                out.append(int(cols[2]))
    return out


# --------------------------------------------------------------------------- aggregation and table


@dataclass(frozen=True, slots=True)
class Row:
    """Medians over rounds for one (group, protocol, object, target)."""

    group: str
    proto: str
    obj: str
    target: str
    rps: float
    mib_s: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_us_per_req: float | None
    client_cores: float | None
    other_cores: float | None
    ratio: float | None
    ref: str | None
    rounds: int
    errors: int


def reference_target(group: str, proto: str) -> str:
    """The target each row is compared with: nginx proxy_cache, or Caddy for HTTP/3 (nginx here has none)."""
    if proto == "h3":
        return "caddy"
    return "nginx-w2" if group == "2core" else "nginx"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(runs: Sequence[dict[str, Any]]) -> list[Row]:
    """Rows of medians over rounds; the ratio is the median of per-round ratios to the reference."""
    by_key: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        by_key.setdefault((run["group"], run["proto"], run["obj"], run["target"]), []).append(run)
    rows = []
    for (group, proto, obj, target), rs in by_key.items():
        ref = reference_target(group, proto)
        ref_by_round = {r["round"]: r["rps"] for r in by_key.get((group, proto, obj, ref), [])}
        ratios = [r["rps"] / ref_by_round[r["round"]] for r in rs if ref_by_round.get(r["round"])]
        rows.append(
            Row(
                group=group,
                proto=proto,
                obj=obj,
                target=target,
                rps=_median([r["rps"] for r in rs]) or 0.0,
                mib_s=_median([r["mib_s"] for r in rs]) or 0.0,
                p50_ms=_median([r.get("p50_ms") for r in rs]),
                p99_ms=_median([r.get("p99_ms") for r in rs]),
                cpu_us_per_req=_median([r.get("cpu_us_per_req") for r in rs]),
                client_cores=_median([r.get("client_cores") for r in rs]),
                other_cores=_median([r.get("other_cores") for r in rs]),
                ratio=_median(ratios) if ratios else None,
                ref=ref if ratios else None,
                rounds=len(rs),
                errors=sum(r.get("errors", 0) for r in rs),
            )
        )
    order = {name: i for i, name in enumerate(ALL_TARGETS)}
    objs = {name: i for i, name in enumerate(OBJECTS)}
    protos = {name: i for i, name in enumerate(PROTOCOLS)}
    rows.sort(key=lambda r: (r.group, protos.get(r.proto, 9), objs.get(r.obj, 9), order.get(r.target, 9)))
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows (ratios are req/s against the named reference).

    "other cores" is CPU used meanwhile by everything but the server and the load
    client: near 0 on a quiet machine; a row with a high figure was disturbed.
    """
    head = (
        "| mode | proto | object | target | req/s | MiB/s | p50 ms | p99 ms | "
        "server CPU µs/req | client cores | other cores | ratio |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x {r.ref}"
        err = f" ⚠{r.errors} err" if r.errors else ""
        lines.append(
            f"| {r.group} | {r.proto} | {r.obj} | {r.target} | {r.rps:,.0f}{err} | {r.mib_s:,.1f} | "
            f"{_fmt(r.p50_ms, '.2f')} | {_fmt(r.p99_ms, '.2f')} | {_fmt(r.cpu_us_per_req, '.1f')} | "
            f"{_fmt(r.client_cores, '.2f')} | {_fmt(r.other_cores, '.2f')} | {ratio} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the site


def make_js(size: int, seed: int = 7) -> bytes:
    """Deterministic, plausible JavaScript of about ``size`` bytes (compresses like real bundles)."""
    rnd = random.Random(seed)
    words = [
        "render",
        "state",
        "props",
        "value",
        "index",
        "items",
        "cache",
        "fetch",
        "node",
        "event",
        "handler",
        "module",
        "export",
        "default",
        "config",
        "options",
        "result",
        "error",
    ]
    parts = ['"use strict";\n']
    total = len(parts[0])
    i = 0
    while total < size:
        a, b, c = rnd.sample(words, 3)
        n = rnd.randrange(1, 1000)
        chunk = (
            f"function {a}{i}({b}, {c}) {{\n  const {a}_{n} = {b}.{c} ?? {n};\n"
            f"  if ({c}.length > {n % 17}) {{ return {b}.map((x) => x.{a} + {n}); }}\n"
            f'  return {{ {a}: {a}_{n}, {b}: "{rnd.getrandbits(48):x}" }};\n}}\n'
        )
        parts.append(chunk)
        total += len(chunk)
        i += 1
    return "".join(parts).encode()[:size]


def make_site(site: Path) -> dict[str, int]:
    """Write the benchmark's objects (and app.js.br / app.js.gz) into ``site``; return file sizes."""
    import brotli  # type: ignore[import-untyped]

    site.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(1)
    for name, size in SIZES.items():
        (site / OBJECTS[name][0]).write_bytes(rnd.randbytes(size))
    js = make_js(200 * 1024)
    (site / "app.js").write_bytes(js)
    br = brotli.compress(js, quality=11)
    (site / "app.js.br").write_bytes(br)
    (site / "app.js.gz").write_bytes(gzip.compress(js, compresslevel=9, mtime=0))
    (site / OBJECTS["br-size"][0]).write_bytes(rnd.randbytes(len(br)))
    return {p.name: p.stat().st_size for p in site.iterdir()}


RULES = '[[rule]]\nglob = "*"\ncache_control = "public, max-age=86400"\n'


# --------------------------------------------------------------------------- processes


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free port on 127.0.0.1 (TCP, or UDP with ``socket.SOCK_DGRAM``)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_udp_port() -> int:
    """A port free for both TCP and UDP (Caddy's and the edge's h3 share the TLS port number)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free for both TCP and UDP")


def wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 20.0) -> None:
    """Wait until something accepts on 127.0.0.1:port; fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name}: nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def find_tool(name: str) -> str | None:
    """Path of an executable, looking in sbin folders too (nginx, varnishd live there)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def missing_tools(needed: Sequence[str]) -> list[str]:
    """Executables among ``needed`` that are not installed."""
    return [tool for tool in needed if find_tool(tool) is None]


def install_hint(missing: Sequence[str]) -> str:
    """The apt-get line that installs the Debian packages providing ``missing``."""
    pkgs = sorted({TOOLS[t] for t in missing})
    return "apt-get update && apt-get install -y " + " ".join(pkgs)


@dataclass(frozen=True, slots=True)
class EdgeCaps:
    """What this checkout's ``edge serve`` can do, read from its ``--help``."""

    tls_flag: str | None = None
    """Flag of the HTTPS-over-TCP (HTTP/2) listener, if any."""
    quic_flag: str | None = None
    """Flag of the HTTP/3 (QUIC, UDP) listener, if any."""
    cert_flags: tuple[str, str] | None = None
    """Certificate and key flags, if any."""
    quic_backend_flag: str | None = None
    """Flag choosing the QUIC library, if any."""
    access_log_flag: str | None = None
    """Flag of the access log (turned off: the peers log nothing either), if any."""

    @classmethod
    def from_help(cls, text: str) -> EdgeCaps:
        flags = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", text))
        tls = next((f for f in ("--tls-listen", "--https-listen") if f in flags), None)
        quic = "--quic-listen" if "--quic-listen" in flags else None
        cert = next(
            (
                p
                for p in (("--cert", "--key"), ("--tls-cert", "--tls-key"))
                if p[0] in flags and p[1] in flags
            ),
            None,
        )
        backend = "--quic-backend" if "--quic-backend" in flags else None
        if cert is None:  # a listener we cannot give a certificate to cannot start
            tls = quic = None
        access_log = "--access-log" if "--access-log" in flags else None
        return cls(
            tls_flag=tls, quic_flag=quic, cert_flags=cert, quic_backend_flag=backend, access_log_flag=access_log
        )

    @classmethod
    def detect(cls) -> EdgeCaps:
        out = subprocess.run(
            [sys.executable, "-m", "edge.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        ).stdout
        return cls.from_help(out)


@dataclass
class Target:
    """One server under test and the URLs of its listeners."""

    name: str
    kind: str
    group: str
    proc: subprocess.Popen[bytes]
    h1: str | None = None
    h2c: str | None = None
    h2tls: str | None = None
    h3: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def is_cache(self) -> bool:
        return self.kind in CACHES

    def base(self, proto: str) -> str | None:
        return {"h1": self.h1, "h2c": self.h2c, "h2tls": self.h2tls, "h3": self.h3}[proto]


class Lab:
    """Starts and stops the origin and the servers under test in a temporary folder."""

    def __init__(self, work: Path, *, log: Callable[[str], None] = print) -> None:
        self.work = work
        self.site = work / "site"
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.log = log
        self.origin_port = 0
        self.origin: subprocess.Popen[bytes] | None = None
        self.cert: CertFiles | None = None
        self.configs: dict[str, Path] = {}

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        cpus: str | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        logf = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        full = (["taskset", "-c", cpus] if cpus else []) + cmd
        proc = subprocess.Popen(
            full, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        logf.close()
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.work / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start_origin(self, cpus: str | None) -> None:
        sizes = make_site(self.site)
        self.log(f"site: {', '.join(f'{k} {v:,} B' for k, v in sorted(sizes.items()))}")
        (self.work / "rules.toml").write_text(RULES)
        self.origin_port = free_port()
        self.origin = self._spawn(
            "origin",
            [
                sys.executable,
                "-m",
                "origin",
                "serve",
                "--root",
                str(self.site),
                "--listen",
                f"127.0.0.1:{self.origin_port}",
                "--rules",
                str(self.work / "rules.toml"),
            ],
            cpus=cpus,
            cwd=ROOT,
        )
        wait_port(self.origin_port, self.origin, "origin")
        self.cert = make_dev_cert(self.work / "tls")

    def start_edge(
        self, name: str, group: str, cpus: str | None, workers: int, caps: EdgeCaps, quic_backend: str | None
    ) -> Target:
        assert self.cert is not None
        h1 = free_port()
        cmd = [
            sys.executable,
            "-m",
            "edge.cli",
            "serve",
            "--upstream",
            f"http://127.0.0.1:{self.origin_port}",
            "--listen",
            f"127.0.0.1:{h1}",
            "--admin-listen",
            "",
            "--cache-size",
            "2GiB",
            "--workers",
            str(workers),
        ]
        if caps.access_log_flag:
            cmd += [caps.access_log_flag, "off"]
        tls = quic = None
        if caps.tls_flag:
            tls = free_port()
            cmd += [caps.tls_flag, f"127.0.0.1:{tls}"]
        if caps.quic_flag:
            quic = free_tcp_udp_port()
            cmd += [caps.quic_flag, f"127.0.0.1:{quic}"]
            if quic_backend and caps.quic_backend_flag:
                cmd += [caps.quic_backend_flag, quic_backend]
        if caps.cert_flags and (tls or quic):
            cmd += [caps.cert_flags[0], str(self.cert.cert), caps.cert_flags[1], str(self.cert.key)]
        proc = self._spawn(name, cmd, cpus=cpus, cwd=ROOT)
        wait_port(h1, proc, name)
        if tls:
            wait_port(tls, proc, name)
        # h3 and h2tls are measured per core: with one worker only (every worker serves them since issue 15).
        one = workers == 1
        return Target(
            name,
            "edge",
            group,
            proc,
            h1=f"http://127.0.0.1:{h1}",
            h2tls=f"https://127.0.0.1:{tls}" if tls and one else None,
            h3=f"https://127.0.0.1:{quic}" if quic and one else None,
        )

    def start_nginx(self, name: str, group: str, cpus: str | None, workers: int) -> Target:
        assert self.cert is not None
        prefix = self.work / name
        (prefix / "cache").mkdir(parents=True)
        h1, h2c, tls = free_port(), free_port(), free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_nginx(
                prefix,
                origin_port=self.origin_port,
                h1_port=h1,
                h2c_port=h2c,
                tls_port=tls,
                cert=self.cert.cert,
                key=self.cert.key,
                workers=workers,
                as_root=os.geteuid() == 0,
            )
        )
        self.configs[f"{name}.conf"] = conf
        nginx = find_tool("nginx") or "nginx"
        proc = self._spawn(name, [nginx, "-p", str(prefix), "-c", str(conf)], cpus=cpus)
        for port in (h1, h2c, tls):
            wait_port(port, proc, name)
        return Target(
            name,
            "nginx",
            group,
            proc,
            h1=f"http://127.0.0.1:{h1}",
            h2c=f"http://127.0.0.1:{h2c}",
            h2tls=f"https://127.0.0.1:{tls}",
        )

    def start_varnish(self, name: str, group: str, cpus: str | None) -> Target:
        folder = self.work / name
        folder.mkdir()
        vcl = folder / "default.vcl"
        vcl.write_text(render_vcl(origin_port=self.origin_port))
        self.configs[f"{name}.vcl"] = vcl
        port = free_port()
        # -j none: as root the default jail drops to the varnish/vcache users, which cannot enter a
        # private temporary folder; the benchmark runs Varnish as the calling user instead.
        cmd = [
            find_tool("varnishd") or "varnishd",
            "-F",
            "-a",
            f"127.0.0.1:{port}",
            "-f",
            str(vcl),
            "-n",
            str(folder / "work"),
            "-s",
            "malloc,2g",
            "-j",
            "none",
            "-p",
            "thread_pools=1",
            "-p",
            "http_gzip_support=off",
            "-p",
            "feature=+http2",
        ]
        if os.geteuid() != 0:
            cmd.remove("-j")
            cmd.remove("none")
        proc = self._spawn(name, cmd, cpus=cpus)
        wait_port(port, proc, name, timeout=40)
        url = f"http://127.0.0.1:{port}"
        return Target(name, "varnish", group, proc, h1=url, h2c=url)

    def start_caddy(self, name: str, group: str, cpus: str | None, procs: int) -> Target:
        folder = self.work / name
        folder.mkdir()
        http_port, https_port = free_port(), free_tcp_udp_port()
        conf = folder / "Caddyfile"
        conf.write_text(
            render_caddyfile(
                site=self.site, state=folder / "state", http_port=http_port, https_port=https_port
            )
        )
        self.configs[f"{name}.Caddyfile"] = conf
        env = dict(
            os.environ,
            GOMAXPROCS=str(procs),
            XDG_DATA_HOME=str(folder),
            XDG_CONFIG_HOME=str(folder),
            HOME=str(folder),
        )
        proc = self._spawn(
            name,
            [find_tool("caddy") or "caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
            cpus=cpus,
            env=env,
        )
        wait_port(http_port, proc, name)
        wait_port(https_port, proc, name)
        return Target(
            name,
            "caddy",
            group,
            proc,
            h1=f"http://127.0.0.1:{http_port}",
            h2c=f"http://127.0.0.1:{http_port}",
            h2tls=f"https://127.0.0.1:{https_port}",
            h3=f"https://127.0.0.1:{https_port}",
        )

    def stop_all(self) -> None:
        """SIGTERM each process this lab started (its own session), then SIGKILL stragglers."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


# --------------------------------------------------------------------------- probing and checks


@dataclass(frozen=True, slots=True)
class Reply:
    """One response as the checks see it."""

    status: int
    headers: dict[str, str]
    body_len: int


def get_h1(url: str, headers: Sequence[tuple[str, str]] = (), timeout: float = 10.0) -> Reply:
    """One GET over a fresh HTTP/1.1 connection (fresh, so SO_REUSEPORT spreads them over workers)."""
    parts = url.split("/", 3)
    host, port = parts[2].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + parts[3], headers=dict(headers))
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, len(body))
    finally:
        conn.close()


def get_h2(url: str, headers: Sequence[tuple[str, str]] = (), timeout: float = 10.0) -> Reply:
    """One GET over HTTP/2: prior knowledge on http://, ALPN h2 on https:// (httpx + h2)."""
    import httpx

    with (
        httpx.Client(http1=False, http2=True, verify=False, timeout=timeout) as client,
        client.stream("GET", url, headers=dict(headers)) as resp,
    ):
        if resp.http_version != "HTTP/2":
            raise RuntimeError(f"{url} answered over {resp.http_version}, not HTTP/2")
        raw = sum(len(chunk) for chunk in resp.iter_raw())  # bytes as sent, before decoding
        return Reply(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, raw)


def get_h3(url: str, headers: Sequence[tuple[str, str]] = (), timeout: float = 10.0) -> Reply:
    """One GET over HTTP/3 with the benchmark's own client."""
    import asyncio

    from benchmarks.h3load import fetch_once

    status, fields, body = asyncio.run(fetch_once(url, headers, timeout=timeout))
    return Reply(status, fields, len(body))


GETTERS: dict[str, Callable[..., Reply]] = {"h1": get_h1, "h2c": get_h2, "h2tls": get_h2, "h3": get_h3}


def is_hit(kind: str, headers: dict[str, str]) -> bool:
    """Did this response come from the cache? (A file server always counts as one.)"""
    if kind == "caddy":
        return True
    if headers.get("x-cache", "").upper().startswith("HIT"):
        return True
    return kind == "varnish" and len(headers.get("x-varnish", "").split()) == 2


def warm_and_check(target: Target, proto: str, obj: str, expect_len: dict[str, int]) -> dict[str, Any]:
    """Fill the cache for one object and require several HITs in a row; return what was served.

    Raises RuntimeError with the last response's fields when the target never answers HITs.
    """
    base = target.base(proto)
    assert base is not None
    path, headers = OBJECTS[obj]
    url = f"{base}/{path}"
    get = GETTERS[proto]
    streak, reply = 0, None
    for _ in range(40):
        reply = get(url, headers)
        if reply.status != 200:
            raise RuntimeError(f"{target.name} {proto} {url}: status {reply.status}")
        streak = streak + 1 if is_hit(target.kind, reply.headers) else 0
        if streak >= (6 if target.name.endswith("-w2") else 2):
            break
    assert reply is not None
    if streak < 2:
        raise RuntimeError(
            f"{target.name} {proto} {url}: no cache HIT after 40 requests; last fields "
            f"{json.dumps(reply.headers)}"
        )
    encoding = reply.headers.get("content-encoding", "identity")
    file = path + {"br": ".br", "gzip": ".gz"}.get(encoding, "")
    if file in expect_len and reply.body_len != expect_len[file]:
        raise RuntimeError(f"{target.name} {proto} {url}: body {reply.body_len} B, file {expect_len[file]} B")
    return {
        "encoding": encoding,
        "body_len": reply.body_len,
        "hit_fields": {
            k: reply.headers[k] for k in ("x-cache", "age", "x-varnish", "cache-status") if k in reply.headers
        },
    }


# --------------------------------------------------------------------------- load runs

WRK_LUA = """
done = function(summary, latency, requests)
  for _, p in ipairs({POINTS}) do
    io.write(string.format("CDF %g %d\\n", p, latency:percentile(p)))
  end
end
""".replace("POINTS", ", ".join(str(p) for p in CDF_POINTS))


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """How each load tool is run."""

    duration: float
    client_cpus: str | None
    wrk_threads: int = 1
    wrk_connections: int = 64
    h2_clients: int = 8
    h2_streams: int = 8
    h3_connections: int = 4
    h3_streams: int = 16
    h3_processes: int = 1


def _run_tool(cmd: list[str], cpus: str | None, timeout: float) -> tuple[str, float]:
    """Run a load generator (pinned when ``cpus``); return its stdout and CPU seconds."""
    before = children_cpu_seconds()
    full = (["taskset", "-c", cpus] if cpus else []) + cmd
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    cpu = children_cpu_seconds() - before
    if proc.returncode != 0 and not proc.stdout:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc.stdout, cpu


def load_h1(url: str, headers: Sequence[tuple[str, str]], plan: LoadPlan, work: Path) -> dict[str, Any]:
    lua = work / "cdf.lua"
    if not lua.exists():
        lua.write_text(WRK_LUA)
    cmd = [
        find_tool("wrk") or "wrk",
        f"-t{plan.wrk_threads}",
        f"-c{plan.wrk_connections}",
        f"-d{plan.duration:g}s",
        "--latency",
        "-s",
        str(lua),
    ]
    for k, v in headers:
        cmd += ["-H", f"{k}: {v}"]
    out, cpu = _run_tool([*cmd, url], plan.client_cpus, plan.duration + 30)
    res = parse_wrk(out)
    res["client_cpu_s"] = cpu
    res["errors"] = res.pop("non2xx") + res.pop("socket_errors")
    return res


def load_h2(url: str, headers: Sequence[tuple[str, str]], plan: LoadPlan, work: Path) -> dict[str, Any]:
    log = work / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = [
        find_tool("h2load") or "h2load",
        "-t1",
        f"-c{plan.h2_clients}",
        f"-m{plan.h2_streams}",
        "-D",
        f"{max(1, round(plan.duration))}",
        f"--log-file={log}",
    ]
    for k, v in headers:
        cmd += ["-H", f"{k.lower()}: {v}"]
    out, cpu = _run_tool([*cmd, url], plan.client_cpus, plan.duration + 30)
    res = parse_h2load(out)
    if url.startswith("https") and res["alpn"] != "h2":
        raise RuntimeError(f"h2load negotiated {res['alpn']!r}, not h2, with {url}")
    res.update(latency_summary(parse_h2load_log(log)) if log.exists() else {})
    log.unlink(missing_ok=True)
    res["client_cpu_s"] = cpu
    res["errors"] = res.pop("failed") + res.pop("non2xx")
    return res


def load_h3(url: str, headers: Sequence[tuple[str, str]], plan: LoadPlan, work: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.h3load",
        url,
        "-c",
        str(plan.h3_connections),
        "-m",
        str(plan.h3_streams),
        "-d",
        f"{plan.duration:g}",
        "-n",
        "2000000",
        "-P",
        str(plan.h3_processes),
        "--json",
    ]
    for k, v in headers:
        cmd += ["-H", f"{k}: {v}"]
    out, cpu = _run_tool(cmd, plan.client_cpus, plan.duration + 60)
    res: dict[str, Any] = json.loads(out)
    ok = sum(n for code, n in res["statuses"].items() if code.startswith("2"))
    return {
        "requests": ok,
        "elapsed_s": res["elapsed_s"],
        "rps": ok / max(res["elapsed_s"], 1e-9),
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "cdf": res["cdf"],
        "errors": res["errors"] + res["requests"] - ok,
        "client_cpu_s": cpu,
        "client_bound": res["client_bound"],
        "body_bytes": res["body_bytes"],
    }


LOADERS: dict[str, Callable[[str, Sequence[tuple[str, str]], LoadPlan, Path], dict[str, Any]]] = {
    "h1": load_h1,
    "h2c": load_h2,
    "h2tls": load_h2,
    "h3": load_h3,
}


def measured_run(target: Target, origin_pid: int | None, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one load; add the server's CPU (its process tree), CPU per request and a noise gauge."""
    cpu0 = tree_cpu_seconds(target.pid)
    origin0 = tree_cpu_seconds(origin_pid) if origin_pid else 0.0
    busy0 = machine_busy_seconds()
    res = run()
    busy = machine_busy_seconds() - busy0
    res["server_cpu_s"] = tree_cpu_seconds(target.pid) - cpu0
    # Whatever else ran meanwhile (other processes on a shared machine, softirq): a noise gauge.
    res["other_cores"] = max(0.0, busy - res["server_cpu_s"] - res["client_cpu_s"]) / max(
        res["elapsed_s"], 1e-9
    )
    res["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
    res["origin_cpu_s"] = (tree_cpu_seconds(origin_pid) - origin0) if origin_pid else None
    res["cpu_us_per_req"] = res["server_cpu_s"] / res["requests"] * 1e6 if res["requests"] else None
    res["client_cores"] = res["client_cpu_s"] / max(res["elapsed_s"], 1e-9)
    return res


NOISY = 0.25
"""Cores used by other processes during a run above which the run counts as disturbed."""


def quietest_run(
    target: Target, origin_pid: int | None, run: Callable[[], dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """A measured run, repeated (at most ``args.retry_noisy`` times) while others disturbed it.

    Waits for a quiet machine before each attempt and keeps the least disturbed one.
    """
    best: dict[str, Any] | None = None
    for attempt in range(1 + max(0, args.retry_noisy)):
        busy_before = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
        res = measured_run(target, origin_pid, run)
        res.update(busy_before=busy_before, attempt=attempt + 1)
        if best is None or res["other_cores"] < best["other_cores"]:
            best = res
        if res["other_cores"] <= NOISY:
            break
    assert best is not None
    return best


# --------------------------------------------------------------------------- cold miss and memory


def _timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, dict[str, str]]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return (time.perf_counter() - t0) * 1000, {k.lower(): v for k, v in resp.getheaders()}


def _conn(url: str) -> http.client.HTTPConnection:
    host, port = url.split("/")[2].rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def cold_miss(targets: Sequence[Target], origin_url: str, n: int) -> dict[str, Any]:
    """Median latency (ms) of a fresh 16 KiB URL through each cache, interleaved, and of a hit.

    Each request has a new query string, so it is a miss in every cache; one
    keep-alive connection per target. The origin's own latency is the floor.
    """
    token = f"{time.time_ns():x}"
    conns = {t.name: _conn(t.h1 or "") for t in targets} | {"origin": _conn(origin_url)}
    miss: dict[str, list[float]] = {name: [] for name in conns}
    hit: dict[str, list[float]] = {name: [] for name in conns}
    not_miss: dict[str, int] = dict.fromkeys(conns, 0)
    try:
        for i in range(n):
            for name, conn in conns.items():
                ms, fields = _timed_get(conn, f"/16k.bin?cold={token}-{i}")
                miss[name].append(ms)
                if name != "origin" and not fields.get("x-cache", "MISS").upper().startswith("MISS"):
                    not_miss[name] += 1
                hit[name].append(_timed_get(conn, f"/16k.bin?cold={token}-{i}")[0])
    finally:
        for conn in conns.values():
            conn.close()
    out = {
        name: {
            "miss_ms": statistics.median(miss[name]),
            "hit_ms": statistics.median(hit[name]),
            "n": n,
            "not_miss": not_miss[name],
        }
        for name in conns
    }
    if "nginx" in out:
        for name in out:
            out[name]["miss_over_nginx_ms"] = out[name]["miss_ms"] - out["nginx"]["miss_ms"]
    return out


def memory_per_object(target: Target, n: int) -> dict[str, Any]:
    """RSS growth of the target's process tree per cached 1 KiB object, after ``n`` new objects."""
    conn = _conn(target.h1 or "")
    token = f"{time.time_ns():x}"
    try:
        _timed_get(conn, f"/1k.bin?mem={token}-warm")
        time.sleep(0.3)
        before = tree_rss_bytes(target.pid)
        for i in range(n):
            _timed_get(conn, f"/1k.bin?mem={token}-{i}")
        time.sleep(0.5)
        after = tree_rss_bytes(target.pid)
    finally:
        conn.close()
    return {"objects": n, "rss_before": before, "rss_after": after, "bytes_per_object": (after - before) / n}


# --------------------------------------------------------------------------- plots


#: One colour per server, the same in every panel (the both-cores targets share their server's).
COLOURS = {
    "edge": "tab:blue",
    "nginx": "tab:orange",
    "varnish": "tab:green",
    "caddy": "tab:red",
    "edge-w2": "tab:blue",
    "nginx-w2": "tab:orange",
}


def plot(rows: Sequence[Row], runs: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """throughput.png (req/s and MiB/s vs object per protocol) and latency_cdf.png; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    panels = sorted({(r.group, r.proto) for r in rows}, key=lambda gp: (gp[0], PROTOCOLS.index(gp[1])))
    objs = [o for o in OBJECTS if any(r.obj == o for r in rows)]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False)
    for col, (group, proto) in enumerate(panels):
        names = [
            t
            for t in ALL_TARGETS
            if any(r.target == t and r.proto == proto and r.group == group for r in rows)
        ]
        for name in names:
            series = {r.obj: r for r in rows if r.target == name and r.proto == proto and r.group == group}
            xs = [i for i, o in enumerate(objs) if o in series]
            style = {"marker": "o", "label": name, "color": COLOURS.get(name)}
            axes[0][col].plot(xs, [series[objs[i]].rps for i in xs], **style)
            axes[1][col].plot(xs, [series[objs[i]].mib_s for i in xs], **style)
        for row, label in enumerate(("req/s", "MiB/s")):
            ax = axes[row][col]
            ax.set_yscale("log")
            ax.set_xticks(range(len(objs)), [o if o != "js" else "js (br)" for o in objs])
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][col].set_title(f"{proto} ({group})")
        axes[0][col].legend(fontsize=8)
    fig.suptitle("Hits: throughput vs object size (median over rounds)")
    fig.tight_layout()
    written.append(folder / "throughput.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    cdf_objs = [o for o in ("1k", "256k") if o in objs]
    if cdf_objs:
        fig, axes = plt.subplots(
            len(cdf_objs), len(panels), figsize=(4.2 * len(panels), 3.6 * len(cdf_objs)), squeeze=False
        )
        last_round = max(r["round"] for r in runs)
        for row, obj in enumerate(cdf_objs):
            for col, (group, proto) in enumerate(panels):
                ax = axes[row][col]
                for r in runs:
                    if (r["round"], r["group"], r["proto"], r["obj"]) == (
                        last_round,
                        group,
                        proto,
                        obj,
                    ) and r.get("cdf"):
                        ax.plot(
                            [c[1] for c in r["cdf"]],
                            [c[0] / 100 for c in r["cdf"]],
                            label=r["target"],
                            color=COLOURS.get(r["target"]),
                        )
                ax.set_xscale("log")
                ax.set_xlabel("latency (ms)")
                ax.set_ylabel("fraction of requests")
                ax.set_title(f"{proto} ({group}) {obj}")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=8)
        fig.suptitle(f"Latency CDF under load (round {last_round})")
        fig.tight_layout()
        written.append(folder / "latency_cdf.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


# --------------------------------------------------------------------------- main


def versions() -> dict[str, str]:
    """Versions of the peers, the load tools and this checkout."""
    probes = {
        "nginx": ["nginx", "-v"],
        "varnishd": ["varnishd", "-V"],
        "caddy": ["caddy", "version"],
        "wrk": ["wrk", "-v"],
        "h2load": ["h2load", "--version"],
        "git": ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
    }
    out = {}
    for name, cmd in probes.items():
        exe = find_tool(cmd[0])
        if exe is None:
            continue
        try:
            p = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        out[name] = (
            ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0] if (p.stdout or p.stderr) else ""
        )
    out["python"] = sys.version.split()[0]
    out["kernel"] = platform.release()
    with contextlib.suppress(OSError):
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        out["cpu"] = model.group(1) if model else ""
    out["cores"] = str(os.cpu_count())
    return out


def _csv(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, 2 s runs, 1k/256k/js, fewer samples"
    )
    ap.add_argument("--rounds", type=int, help="rounds of interleaved runs (default 3; quick 1)")
    ap.add_argument("--duration", type=float, help="seconds per load run (default 5; quick 2)")
    ap.add_argument(
        "--targets",
        type=lambda v: _csv(v, ALL_TARGETS, "target"),
        help=f"comma list from {','.join(ALL_TARGETS)} (default all)",
    )
    ap.add_argument(
        "--sizes",
        type=lambda v: _csv(v, list(OBJECTS), "size"),
        help=f"comma list from {','.join(OBJECTS)} (default all; quick 1k,256k,js)",
    )
    ap.add_argument(
        "--protocols",
        type=lambda v: _csv(v, PROTOCOLS, "protocol"),
        help=f"comma list from {','.join(PROTOCOLS)} (default all)",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="before each run, wait up to this many seconds for other processes to leave the CPUs (0: don't)",
    )
    ap.add_argument(
        "--retry-noisy",
        type=int,
        default=2,
        help="repeat a run disturbed by other processes up to N times, keeping the quietest (default 2)",
    )
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads in per-core mode (default 1; 2core uses 2)"
    )
    ap.add_argument("--h3-processes", type=int, default=1, help="h3load processes (default 1)")
    ap.add_argument(
        "--quic-backend", choices=["qh3", "aioquic"], help="the edge's QUIC library (default: its own)"
    )
    ap.add_argument("--cold-samples", type=int, help="cold-miss requests per cache (default 25; quick 7)")
    ap.add_argument(
        "--mem-objects", type=int, help="objects for memory per object (default 5000; quick 1000)"
    )
    ap.add_argument(
        "--skip-missing", action="store_true", help="drop what needs a missing tool instead of exiting"
    )
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<timestamp>)")
    args = ap.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (1 if q else 3)
    args.duration = args.duration or (2.0 if q else 5.0)
    args.targets = args.targets or list(ALL_TARGETS)
    args.sizes = args.sizes or (["1k", "256k", "js"] if q else list(OBJECTS))
    args.protocols = args.protocols or list(PROTOCOLS)
    args.cold_samples = (7 if q else 25) if args.cold_samples is None else args.cold_samples
    args.mem_objects = (1000 if q else 5000) if args.mem_objects is None else args.mem_objects
    return args


def needed_tools(targets: Sequence[str], protocols: Sequence[str]) -> dict[str, list[str]]:
    """Executable → what needs it, for the chosen targets and protocols."""
    need: dict[str, list[str]] = {"taskset": ["pinning"]}
    for t in targets:
        tool = {"nginx": "nginx", "nginx-w2": "nginx", "varnish": "varnishd", "caddy": "caddy"}.get(t)
        if tool:
            need.setdefault(tool, []).append(t)
    if "h1" in protocols:
        need.setdefault("wrk", []).append("h1")
    for p in ("h2c", "h2tls"):
        if p in protocols:
            need.setdefault("h2load", []).append(p)
    return need


def say(msg: str) -> None:
    """Print a progress line at once."""
    print(msg, flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # stop the servers on `kill` too, not only on Ctrl-C

    need = needed_tools(args.targets, args.protocols)
    missing = missing_tools(list(need))
    skipped: list[str] = []
    if missing:
        users = sorted({w for t in missing for w in need[t]})
        say(f"missing: {', '.join(missing)} (needed by {', '.join(users)})")
        say(f"install with:  {install_hint(missing)}")
        if not args.skip_missing or "taskset" in missing:
            return 2
        for tool in missing:
            for what in need[tool]:
                skipped.append(f"{what}: {tool} not installed")
                if what in args.targets:
                    args.targets.remove(what)
                if what in args.protocols:
                    args.protocols.remove(what)
    py_missing = [m for m in ("brotli", "httpx", "h2", "matplotlib") if _missing_module(m)]
    if "h3" in args.protocols and _missing_module("aioquic") and _missing_module("qh3"):
        py_missing.append("aioquic")
    if py_missing:
        say(f"missing Python packages: {', '.join(py_missing)}; install with:  pip install -e '.[bench]'")
        if any(m in py_missing for m in ("brotli", "httpx", "h2")):
            return 2
        if "aioquic" in py_missing:
            args.protocols = [p for p in args.protocols if p != "h3"]
            skipped.append("h3: no QUIC library (aioquic or qh3) installed")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir: Path = args.out or RESULTS / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    caps = EdgeCaps.detect()
    if "h3" in args.protocols and not caps.quic_flag and {"edge", "edge-w2"} & set(args.targets):
        skipped.append("h3 edge: `edge serve --help` has no --quic-listen (with --cert/--key) yet")
    if "h2tls" in args.protocols and not caps.tls_flag and {"edge", "edge-w2"} & set(args.targets):
        skipped.append("h2tls edge: `edge serve --help` has no --tls-listen (with --cert/--key) yet")
    if {"h2c"} & set(args.protocols) and {"edge", "edge-w2"} & set(args.targets):
        skipped.append("h2c edge: the edge serves HTTP/2 over TLS only (h2tls rows)")
    say(f"results → {out_dir}")
    say(f"edge capabilities: {caps}")

    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    lab = Lab(work, log=say)
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    checks: dict[str, Any] = {}
    cold: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    started = time.time()
    try:
        one_core = "0"
        lab.start_origin(cpus="1")
        targets: list[Target] = []
        starters: dict[str, Callable[[], Target]] = {
            "edge": lambda: lab.start_edge("edge", "1core", one_core, 1, caps, args.quic_backend),
            "nginx": lambda: lab.start_nginx("nginx", "1core", one_core, 1),
            "varnish": lambda: lab.start_varnish("varnish", "1core", one_core),
            "caddy": lambda: lab.start_caddy("caddy", "1core", one_core, 1),
            "edge-w2": lambda: lab.start_edge("edge-w2", "2core", None, 2, caps, args.quic_backend),
            "nginx-w2": lambda: lab.start_nginx("nginx-w2", "2core", None, 2),
        }
        for name in ALL_TARGETS:
            if name in args.targets:
                try:
                    targets.append(starters[name]())
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}\n--- {name} log ---\n{lab.log_tail(name)}") from exc
        say("started: " + ", ".join(t.name for t in targets))

        # Memory first, on fresh processes: after the load rounds, freed buffers would absorb new objects.
        if args.mem_objects > 0:
            say(f"memory: {args.mem_objects} new 1 KiB objects per cache")
            for t in targets:
                if t.is_cache and t.group == "1core":
                    memory[t.name] = memory_per_object(t, args.mem_objects)
                    per = memory[t.name]["bytes_per_object"]
                    say(f"  {t.name:8s} {per:,.0f} B RSS per cached 1 KiB object")

        expect = {p.name: p.stat().st_size for p in lab.site.iterdir()}
        scenarios = [
            (proto, obj)
            for proto in PROTOCOLS
            if proto in args.protocols
            for obj in OBJECTS
            if obj in args.sizes
        ]
        plan_for = {
            "1core": LoadPlan(
                args.duration,
                "1",
                wrk_threads=args.wrk_threads,
                wrk_connections=args.connections,
                h3_processes=args.h3_processes,
            ),
            "2core": LoadPlan(args.duration, None, wrk_threads=2, wrk_connections=args.connections),
        }
        served: dict[tuple[str, str, str], dict[str, Any]] = {}
        for proto, obj in scenarios:
            for t in targets:
                if t.base(proto) is None or (t.group == "2core" and proto != "h1"):
                    continue
                try:
                    served[(t.name, proto, obj)] = warm_and_check(t, proto, obj, expect)
                except Exception as exc:  # every failure is reported, then we stop
                    failures.append(f"{t.name} {proto} {obj}: {exc}")
        for key, info in served.items():
            checks[" ".join(key)] = info
        for failure in failures:  # loud, and the exit status says so; the rest is still measured
            say(f"CHECK FAILED  {failure}")
            skipped.append(f"CHECK FAILED {failure}")
        if not served:
            raise SystemExit("no target answered cache HITs; nothing to measure")
        js_enc = {k[0]: v["encoding"] for k, v in served.items() if k[2] == "js" and k[1] == "h1"}
        if js_enc:
            say("JS encodings served: " + ", ".join(f"{k}={v}" for k, v in js_enc.items()))
        say(f"warm: {len(served)} (target, protocol, object) checks answered HITs")

        # A short unmeasured run per server so first-touch costs are not in round 1.
        for t in targets:
            if t.h1 and "h1" in args.protocols:
                warm_plan = LoadPlan(
                    1.0, plan_for[t.group].client_cpus, wrk_threads=plan_for[t.group].wrk_threads
                )
                load_h1(f"{t.h1}/{OBJECTS['1k'][0]}", (), warm_plan, work)

        origin_pid = lab.origin.pid if lab.origin else None
        for rnd in range(1, args.rounds + 1):
            for proto, obj in scenarios:
                order = [t for t in targets if (t.name, proto, obj) in served]
                shift = (rnd - 1) % max(1, len(order))
                order = order[shift:] + order[:shift]  # rotate so no target always goes first
                for t in order:
                    path, headers = OBJECTS[obj]
                    url = f"{t.base(proto)}/{path}"
                    plan = plan_for[t.group]
                    try:
                        res = quietest_run(
                            t, origin_pid, partial(LOADERS[proto], url, headers, plan, work), args
                        )
                    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                        failures.append(f"{t.name} {proto} {obj} round {rnd}: load run failed: {exc}")
                        say(f"RUN FAILED  {failures[-1]}")
                        skipped.append(f"RUN FAILED {failures[-1]}")
                        continue
                    body = served[(t.name, proto, obj)]["body_len"]
                    res.update(
                        round=rnd,
                        group=t.group,
                        proto=proto,
                        obj=obj,
                        target=t.name,
                        body_len=body,
                        encoding=served[(t.name, proto, obj)]["encoding"],
                        mib_s=res["rps"] * body / 2**20,
                    )
                    if (
                        "body_bytes" in res
                        and not res["errors"]
                        and res["body_bytes"] != res["requests"] * body
                    ):
                        # h3load counts body bytes itself: a short or long body is a failed run.
                        failures.append(
                            f"{t.name} {proto} {obj} round {rnd}: {res['body_bytes']} body bytes "
                            f"for {res['requests']} responses of {body}"
                        )
                        say(f"RUN FAILED  {failures[-1]}")
                        skipped.append(f"RUN FAILED {failures[-1]}")
                        continue
                    runs.append(res)
                    warn = f"  ⚠ {res['errors']} errors" if res["errors"] else ""
                    if res.get("origin_cpu_s") and res["origin_cpu_s"] > 0.2:
                        warn += f"  ⚠ origin used {res['origin_cpu_s']:.2f} s CPU (misses?)"
                    if res["other_cores"] > NOISY:
                        warn += f"  ⚠ noise: {res['other_cores']:.2f} cores used by other processes"
                    say(
                        f"r{rnd} {proto:5s} {obj:4s} {t.name:8s} {res['rps']:9.0f} req/s "
                        f"{res['mib_s']:8.1f} MiB/s "
                        f"p50 {_fmt(res.get('p50_ms'), '.2f')} p99 {_fmt(res.get('p99_ms'), '.2f')} ms "
                        f"cpu {_fmt(res['cpu_us_per_req'], '.1f')} µs/req client {res['client_cores']:.2f}"
                        f"{warn}"
                    )

        caches = [t for t in targets if t.is_cache and t.group == "1core"]
        if caches and args.cold_samples > 0:
            say(f"cold miss: {args.cold_samples} fresh 16 KiB URLs per cache")
            cold = cold_miss(caches, f"http://127.0.0.1:{lab.origin_port}", args.cold_samples)
            for name, c in cold.items():
                over = f" ({c['miss_over_nginx_ms']:+.2f} vs nginx)" if "miss_over_nginx_ms" in c else ""
                say(f"  {name:8s} miss {c['miss_ms']:.2f} ms{over}, same URL again {c['hit_ms']:.2f} ms")
    except BaseException:
        for name, _ in lab.procs:
            tail = lab.log_tail(name, 5)
            if tail:
                say(f"--- {name} log (last lines) ---\n{tail}")
        raise
    finally:
        for conf_name, conf_path in lab.configs.items():
            (out_dir / "configs").mkdir(exist_ok=True)
            shutil.copy(conf_path, out_dir / "configs" / conf_name)
        lab.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    rows = aggregate(runs)
    table = format_table(rows)
    cmd = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
    raw = {
        "command": cmd.strip(),
        "started": started,
        "seconds": round(time.time() - started, 1),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "versions": versions(),
        "edge_caps": {k: getattr(caps, k) for k in EdgeCaps.__slots__},
        "skipped": skipped,
        "checks": checks,
        "runs": runs,
        "rows": [_row_dict(r) for r in rows],
        "cold_miss": cold,
        "memory": memory,
    }
    (out_dir / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    md = [f"`{cmd.strip()}` — {stamp}", "", table, ""]
    if cold:
        md += ["| cache | cold miss ms (median) | over nginx ms | same URL again ms |", "|---|---|---|---|"]
        md += [
            f"| {n} | {c['miss_ms']:.2f} | {_fmt(c.get('miss_over_nginx_ms'), '+.2f')} | {c['hit_ms']:.2f} |"
            for n, c in cold.items()
        ]
        md.append("")
    if memory:
        md += ["| cache | RSS bytes per cached 1 KiB object |", "|---|---|"]
        md += [f"| {n} | {m['bytes_per_object']:,.0f} |" for n, m in memory.items()]
        md.append("")
    if skipped:
        md += ["Skipped:", *[f"- {s}" for s in skipped], ""]
    (out_dir / "table.md").write_text("\n".join(md))
    pngs = plot(rows, runs, out_dir) if runs else []
    say("")
    say("\n".join(md))
    plots = ", ".join(p.name for p in pngs) or "none (no matplotlib)"
    say(f"raw numbers: {out_dir / 'results.json'}; plots: {plots}")
    if failures:
        say(f"{len(failures)} check(s) or run(s) failed: see CHECK FAILED / RUN FAILED above")
    return 1 if failures else 0


def _row_dict(row: Row) -> dict[str, Any]:
    return {k: getattr(row, k) for k in Row.__slots__}


def _missing_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


if __name__ == "__main__":
    sys.exit(main())
