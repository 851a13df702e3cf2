"""1 KiB cache hit over HTTP/1.1: the edge against nginx proxy_cache, in one run.

Both caches sit in front of the same origin; each server is pinned to core 0 and
wrk to core 1 (``taskset``), one worker each, so the figure is per core. Run:

    python -m benchmarks.h1_hit [--duration 5] [--connections 64] [--rounds 1] [--origin typical|project]

Needs Debian's ``nginx`` and ``wrk`` (``apt-get install -y nginx wrk``). Prints
req/s per target per round, and the edge/nginx ratio (median over rounds).
Bounded: each wrk run lasts ``--duration`` seconds; all traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    proxy_cache_path {prefix}/cache keys_zone=edge:16m max_size=512m inactive=1h;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_cache edge;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def fetch(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
        return {k.lower(): v for k, v in resp.headers.items()}


def wrk(url: str, duration: int, connections: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--origin",
        choices=["typical", "project"],
        default="typical",
        help="typical: an origin sending Server, Date, Last-Modified, ETag, Expires, two Cache-Control "
        "lines, Accept-Ranges (benchmarks.typical_origin); project: the bundled origin's fewer fields",
    )
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None and not Path("/usr/sbin/" + tool).exists():
            print(f"{tool} not found: apt-get install -y nginx wrk", file=sys.stderr)
            return 2
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    site = work / "site"
    site.mkdir()
    (site / "1k.bin").write_bytes(os.urandom(1024))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        origin_port, edge_port, nginx_port = free_port(), free_port(), free_port()
        py = sys.executable
        origin = (
            [py, "-m", "benchmarks.typical_origin", "--size", "1024"]
            if args.origin == "typical"
            else [py, "-m", "origin", "serve", "--root", str(site)]
        )
        procs.append(subprocess.Popen(
            ["taskset", "-c", "1", *origin, "--listen", f"127.0.0.1:{origin_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1],
        ))  # fmt: skip
        wait_port(origin_port)
        procs.append(subprocess.Popen(
            ["taskset", "-c", "0", py, "-m", "edge.cli", "serve",
             "--upstream", f"http://127.0.0.1:{origin_port}", "--listen", f"127.0.0.1:{edge_port}",
             "--admin-listen", "", "--access-log", "off"],
            stdout=subprocess.DEVNULL,
        ))  # fmt: skip
        prefix = work / "nginx"
        (prefix / "cache").mkdir(parents=True)
        conf = prefix / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # workers must write the temp cache dir
        conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, origin_port=origin_port, port=nginx_port))
        procs.append(subprocess.Popen(
            ["taskset", "-c", "0", nginx_bin, "-p", str(prefix), "-c", str(conf)],
            stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        wait_port(edge_port)
        wait_port(nginx_port)
        targets = {"edge": f"http://127.0.0.1:{edge_port}/1k.bin",
                   "nginx": f"http://127.0.0.1:{nginx_port}/1k.bin"}  # fmt: skip
        for name, url in targets.items():
            fetch(url)
            headers = fetch(url)
            print(f"warm {name}: X-Cache {headers.get('x-cache')}")
        results: dict[str, list[float]] = {name: [] for name in targets}
        for rnd in range(args.rounds):
            for name, url in targets.items():
                rps = wrk(url, args.duration, args.connections)
                results[name].append(rps)
                print(f"round {rnd + 1} {name:6s} {rps:10.0f} req/s", flush=True)
        edge_med = statistics.median(results["edge"])
        nginx_med = statistics.median(results["nginx"])
        print(f"median edge {edge_med:.0f} req/s, nginx proxy_cache {nginx_med:.0f} req/s, "
              f"ratio {edge_med / nginx_med:.2f}")  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
