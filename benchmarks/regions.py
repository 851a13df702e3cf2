"""Regions on one machine: network namespaces, per-link delay, real processes, a region table.

    sudo python -m benchmarks.regions [--quick] [--no-h3] [--plot FILE]

Topology (every name carries the run's prefix ``edgereg-<pid>-``)::

    client-us ─5ms─▶ edge-us ─30ms──┐
    client-eu ─5ms─▶ edge-eu ─80ms──┼─▶ shield-1 | shield-2 ─20ms─▶ origin
    client-ap ─5ms─▶ edge-ap ─150ms─┘

Each role is a network namespace with one veth into a bridge in a ``core`` namespace
(10.77.0.0/24, addresses assigned here; nothing is added to the host's namespace).
Delay is one-way per link (so client->edge is a 10 ms round trip). The kernel's netem
qdisc is tried first; where it is missing, a userspace relay (``benchmarks.delay_relay``)
runs in the *source* namespace on its loopback, one listener per link, and the nodes
point at it: an edge's ``--shields`` are ``http://127.0.0.1:18001,...`` in every region,
so every edge ranks shields by the same names (rendezvous hashing) and each object is
fetched from the origin once.

Passes per region, over HTTP/1.1 keep-alive: cold (regions one after another, so the
origin requests each region caused are its own; new connections, so the TCP handshake to
the edge is in it), warm (regions one after another, connections opened first; a 2-CPU
machine running three regions' Python clients and relays at once measures contention),
then HTTP/3 (keyed https://, so a filling pass and a reported warm pass, one region at a
time, one QUIC connection per request, through a UDP relay, edges on qh3 unless
``--quic-backend aioquic``), and a third pass after a purge of every edge
with shield-1 SIGKILLed during it. Checks printed at the end; exit status 1 when one fails.

Cleanup: every process is in its own session and is killed by process group; every
namespace is deleted (veths go with them), in ``finally``, on SIGINT/SIGTERM too. At
start, namespaces named ``edgereg-<pid>-*`` whose PID is dead are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "cdn.test"
PREFIX_RE = re.compile(r"^edgereg-(\d+)-")
REGIONS = {"us": 30.0, "eu": 80.0, "ap": 150.0}  # edge->shield one-way ms
CLIENT_EDGE_MS = 5.0
SHIELD_ORIGIN_MS = 20.0
SUBNET = "10.77.0"
ORIGIN_PORT, NODE_PORT, ADMIN_PORT, QUIC_PORT = 8000, 8080, 9090, 8443
RELAY_ORIGIN, RELAY_EDGE, RELAY_EDGE_UDP = 18000, 18080, 18443
RELAY_SHIELD = {"shield-1": 18001, "shield-2": 18002}
READY_TIMEOUT = 40.0
REQUEST_TIMEOUT = 20.0
PASS_TIMEOUT = 240.0
STOP_GRACE = 3.0
RUN_LIFETIME = 900.0  # relays exit on their own after this, whatever happens to us


def log(msg: str) -> None:
    print(msg, flush=True)


class RegionsError(RuntimeError):
    pass


def run(cmd: list[str], check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RegionsError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()}")
    return res


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_netns(name: str) -> None:
    """Kill what still runs inside ``name`` (only processes in it), then delete it."""
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    for _ in range(50):
        if run(["ip", "netns", "del", name], check=False).returncode == 0 or name not in list_netns():
            return
        time.sleep(0.1)


def remove_leftovers() -> list[str]:
    """Namespaces of an earlier run (``edgereg-<pid>-``) whose PID is dead: removed."""
    removed = []
    for name in list_netns():
        m = PREFIX_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            delete_netns(name)
            removed.append(name)
    return removed


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the client, run inside a client namespace ---------------------------------------------------


async def client_pass(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """GET every path (optionally paced), ``concurrency`` at a time; one result per request."""
    import httpx

    paths: list[str] = spec["paths"]
    results: list[dict[str, Any]] = []
    queue = iter(enumerate(paths))
    began = time.monotonic()
    interval = spec.get("pace", 0.0) / max(1, len(paths))
    deadline = began + spec.get("limit", PASS_TIMEOUT)

    async def one_h1(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                resp = await client.get(path)
            ok = resp.status_code == 200 and len(resp.content) > 0
            return {"path": path, "status": resp.status_code, "ok": ok, "seconds": time.monotonic() - t0,
                    "bytes": len(resp.content), "x_cache": resp.headers.get("x-cache", ""),
                    "error": "" if ok else f"status {resp.status_code}"}  # fmt: skip
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return {"path": path, "status": 0, "ok": False, "seconds": time.monotonic() - t0, "bytes": 0,
                    "x_cache": "", "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip

    if spec["proto"] == "h3":
        # Imported before any clock starts: the first requests of a pass used to carry the
        # imports of benchmarks.fleet and of the aioquic modules h3_get imports when first
        # called (≈0.25 s: the first, a 21 KB hit, took 300-370 ms against 60-100 for the rest).
        import importlib

        from benchmarks.fleet import h3_get

        for module in ("aioquic.asyncio.protocol", "aioquic.h3.connection", "aioquic.quic.connection"):
            importlib.import_module(module)

    async def one_h3(path: str) -> dict[str, Any]:
        t0 = time.monotonic()
        try:
            reply = await h3_get(spec["port"], path, Path(spec["cafile"]), host=HOST, timeout=REQUEST_TIMEOUT)
            ok = reply.status == 200 and len(reply.body) > 0
            return {"path": path, "status": reply.status, "ok": ok, "seconds": time.monotonic() - t0,
                    "bytes": len(reply.body), "x_cache": reply.header("x-cache") or "",
                    "error": "" if ok else f"status {reply.status}"}  # fmt: skip
        except Exception as exc:
            return {"path": path, "status": 0, "ok": False, "seconds": time.monotonic() - t0, "bytes": 0,
                    "x_cache": "", "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip

    async def worker(client: httpx.AsyncClient | None) -> None:
        for index, path in queue:
            now = time.monotonic()
            if now > deadline:
                return
            if interval and began + index * interval > now:
                await asyncio.sleep(began + index * interval - now)
            if spec["proto"] == "h3":
                results.append(await one_h3(path))
            else:
                assert client is not None
                results.append(await one_h1(client, path))

    conc = max(1, min(spec.get("concurrency", 4), len(paths)))
    if spec["proto"] == "h3":
        await asyncio.gather(*(worker(None) for _ in range(conc)))
    else:
        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{spec['port']}", limits=limits,
                                     timeout=REQUEST_TIMEOUT, trust_env=False,
                                     headers={"Host": HOST}) as client:  # fmt: skip
            if spec.get("warmup"):  # open the keep-alive connections first (a browser's already would be)
                await asyncio.gather(
                    *(client.head("/robots.txt") for _ in range(conc)), return_exceptions=True
                )
            await asyncio.gather(*(worker(client) for _ in range(conc)))
    return results


def wait_port_main(host: str, port: int, timeout: float) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return 0
        except OSError:
            time.sleep(0.05)
    return 1


def admin_main(port: int, token: str, method: str, path: str, body: str | None) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    sys.stdout.write(resp.read().decode(errors="replace"))
    return 0 if resp.status == 200 else 1


# -- the topology ------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    ns: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Topology:
    prefix: str
    workdir: Path
    h3: bool
    token: str = field(default_factory=lambda: os.urandom(12).hex())
    namespaces: list[str] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict[str, Any])
    addr: dict[str, str] = field(default_factory=dict[str, Any])
    cafile: Path | None = None
    mechanism: str = ""
    quic_backend: str = "qh3"

    def ns(self, role: str) -> str:
        return self.prefix + role

    # -- namespaces and links
    def build_network(self, roles: list[str]) -> None:
        core = self.ns("core")
        self._add_ns(core)
        run(["ip", "-n", core, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", core, "link", "set", "br0", "up"])
        for i, role in enumerate(roles):
            ns = self.ns(role)
            self._add_ns(ns)
            address = f"{SUBNET}.{10 + i}"
            self.addr[role] = address
            peer = f"p{i}"
            run(["ip", "-n", core, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns])
            run(["ip", "-n", core, "link", "set", peer, "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)

    def probe_netem(self) -> str:
        """Try a netem qdisc on a veth of ours; the error text when the kernel has none."""
        ns = self.ns("client-us")
        res = run(
            ["tc", "-n", ns, "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "5ms"], check=False
        )
        if res.returncode == 0:
            run(["tc", "-n", ns, "qdisc", "del", "dev", "eth0", "root"], check=False)
            return ""
        return (
            (res.stderr or res.stdout).strip().splitlines()[0]
            if (res.stderr or res.stdout).strip()
            else "failed"
        )

    # -- processes
    def spawn(self, name: str, role: str, argv: list[str]) -> Proc:
        logf = self.workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = (
            str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
        )
        with logf.open("ab") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(role), *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True,
                cwd=str(self.workdir),
            )  # fmt: skip
        proc = Proc(name, self.ns(role), popen, logf)
        self.procs[name] = proc
        return proc

    def in_ns(self, role: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = (
            str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
        )
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(role), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def wait_port(self, role: str, host: str, port: int, what: str, proc: Proc | None = None) -> None:
        res = self.in_ns(role, [sys.executable, "-m", "benchmarks.regions", "_wait-port", host, str(port),
                                str(READY_TIMEOUT)], timeout=READY_TIMEOUT + 10)  # fmt: skip
        if res.returncode != 0:
            tail = ""
            if proc is not None:
                tail = "\n".join(proc.log.read_text(errors="replace").splitlines()[-10:])
            raise RegionsError(f"{what} not accepting on {host}:{port} within {READY_TIMEOUT:g} s\n{tail}")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(STOP_GRACE)

    def close(self) -> None:
        live = [p for p in self.procs.values() if p.popen.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE
        while time.monotonic() < end and any(p.popen.poll() is None for p in live):
            time.sleep(0.05)
        for p in self.procs.values():
            if p.popen.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(STOP_GRACE)
        for name in reversed(self.namespaces):
            delete_netns(name)
        self.namespaces.clear()


# -- the benchmark ---------------------------------------------------------------------------------


def site_paths(root: Path, quick: bool) -> list[str]:
    paths = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if not file.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        if quick and (file.stat().st_size > 4 * 1024 * 1024 or file.suffix in (".br", ".gz", ".zst")):
            continue
        paths.append("/" + rel)
    return paths


_ACCESS = re.compile(r'^(\S+) "(\S+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+)')


def origin_log(path: Path) -> list[tuple[str, int, int]]:
    """(target, bytes, status) per access line of the origin."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _ACCESS.match(line)
        if m:
            out.append((m.group(3), int(m.group(5)), int(m.group(4))))
    return out


def start(top: Topology, site: Path) -> None:
    py = sys.executable
    a = top.addr
    top.spawn("origin", "origin", [py, "-m", "origin", "serve", "--root", str(site),
                                   "--listen", f"{a['origin']}:{ORIGIN_PORT}"])  # fmt: skip
    # relays: in each source namespace, on its loopback
    relay = [py, "-m", "benchmarks.delay_relay", "--lifetime", str(RUN_LIFETIME)]
    for shield in ("shield-1", "shield-2"):
        top.spawn(f"relay-{shield}", shield, [*relay, "--link",
                  f"tcp:127.0.0.1:{RELAY_ORIGIN}={a['origin']}:{ORIGIN_PORT}@{SHIELD_ORIGIN_MS:g}"])  # fmt: skip
    for region, ms in REGIONS.items():
        links = [f"tcp:127.0.0.1:{RELAY_SHIELD[s]}={a[s]}:{NODE_PORT}@{ms:g}" for s in RELAY_SHIELD]
        links.append(f"tcp:127.0.0.1:{RELAY_ORIGIN}={a['origin']}:{ORIGIN_PORT}@{ms + SHIELD_ORIGIN_MS:g}")
        top.spawn(
            f"relay-edge-{region}", f"edge-{region}", [*relay, *(arg for x in links for arg in ("--link", x))]
        )
        client_links = [f"tcp:127.0.0.1:{RELAY_EDGE}={a[f'edge-{region}']}:{NODE_PORT}@{CLIENT_EDGE_MS:g}"]
        if top.h3:
            client_links.append(
                f"udp:127.0.0.1:{RELAY_EDGE_UDP}={a[f'edge-{region}']}:{QUIC_PORT}@{CLIENT_EDGE_MS:g}"
            )
        top.spawn(f"relay-client-{region}", f"client-{region}",
                  [*relay, *(arg for x in client_links for arg in ("--link", x))])  # fmt: skip

    def node(name: str, role: str, upstream: str, shields: str | None) -> None:
        argv = [py, "-m", "edge.cli", "serve", "--name", name, "--node-id", name,
                "--upstream", upstream, "--listen", f"{a[role]}:{NODE_PORT}", "--access-log", "off",
                "--admin-listen", f"127.0.0.1:{ADMIN_PORT}", "--admin-token", top.token,
                "--cache-size", "256MiB", "--slice-size", "64MiB", "--workers", "1",
                "--connect-timeout", "2", "--read-timeout", "15", "--tls-listen", ""]  # fmt: skip
        if shields:
            argv += ["--shields", shields, "--shield-probe-min", "0.2", "--shield-probe-max", "1"]
        if top.h3 and role.startswith("edge-"):
            assert top.cafile is not None
            certs = top.cafile.parent
            argv += ["--cert", str(certs / "cert.pem"), "--key", str(certs / "key.pem"),
                     "--quic-listen", f"{a[role]}:{QUIC_PORT}", "--quic-backend", top.quic_backend]  # fmt: skip
        else:
            argv += ["--quic-listen", ""]
        top.spawn(name, role, argv)

    origin_url = f"http://127.0.0.1:{RELAY_ORIGIN}"
    for shield in ("shield-1", "shield-2"):
        node(shield, shield, origin_url, None)
    shields = ",".join(f"http://127.0.0.1:{RELAY_SHIELD[s]}" for s in RELAY_SHIELD)
    for region in REGIONS:
        node(f"edge-{region}", f"edge-{region}", origin_url, shields)

    top.wait_port("origin", a["origin"], ORIGIN_PORT, "origin", top.procs["origin"])
    for name in ("shield-1", "shield-2", *(f"edge-{r}" for r in REGIONS)):
        top.wait_port(name, a[name], NODE_PORT, name, top.procs[name])
        top.wait_port(name, "127.0.0.1", ADMIN_PORT, f"{name} admin", top.procs[name])
    for region in REGIONS:
        top.wait_port(f"client-{region}", "127.0.0.1", RELAY_EDGE, f"relay of client-{region}")


def run_passes(top: Topology, regions: list[str], spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Run one client pass in each region's client namespace at once; results per region."""
    procs = {}
    for region in regions:
        s = dict(spec)
        s["port"] = RELAY_EDGE_UDP if spec["proto"] == "h3" else RELAY_EDGE
        env = dict(os.environ)
        env["PYTHONPATH"] = (
            str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
        )
        procs[region] = subprocess.Popen(
            ["ip", "netns", "exec", top.ns(f"client-{region}"), sys.executable, "-m", "benchmarks.regions",
             "_client", json.dumps(s)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )  # fmt: skip
        top.procs[f"client-pass-{region}-{time.monotonic_ns()}"] = Proc("client", top.ns(f"client-{region}"),
                                                                         procs[region], top.workdir / "client.log")  # type: ignore[arg-type]  # fmt: skip
    out = {}
    for region, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=PASS_TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            raise RegionsError(f"client pass in {region} did not finish") from None
        if p.returncode != 0:
            raise RegionsError(f"client pass in {region} exited {p.returncode}: {stderr[-2000:]}")
        out[region] = json.loads(stdout)
    return out


def purge_all(top: Topology, role: str) -> None:
    res = top.in_ns(role, [sys.executable, "-m", "benchmarks.regions", "_admin", str(ADMIN_PORT), top.token,
                           "POST", "/purge", json.dumps({"all": True})], timeout=20)  # fmt: skip
    if res.returncode != 0:
        raise RegionsError(f"purge all on {role}: {res.stdout} {res.stderr}")


def ms(v: float) -> str:
    return f"{v * 1000:7.1f}"


def benchmark(args: argparse.Namespace) -> int:
    prefix = f"edgereg-{os.getpid()}-"
    removed = remove_leftovers()
    if removed:
        log(f"removed leftovers of dead runs: {' '.join(removed)}")
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    top = Topology(prefix, workdir, h3=not args.no_h3, quic_backend=args.quic_backend)
    began = time.monotonic()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    failures: list[str] = []
    try:
        site = workdir / "site"
        run([sys.executable, "-m", "origin", "sample-site", "--dest", str(site)], timeout=120)
        paths = site_paths(site, args.quick)
        total_bytes = sum((site / p.lstrip("/")).stat().st_size for p in paths)
        log(f"run prefix {prefix}; workdir {workdir}")
        log(f"sample site: {len(paths)} objects, {total_bytes / 1e6:.1f} MB"
            f"{' (quick: files over 4 MiB and precompressed siblings left out)' if args.quick else ''}")  # fmt: skip
        roles = ["origin", "shield-1", "shield-2", *(f"edge-{r}" for r in REGIONS),
                 *(f"client-{r}" for r in REGIONS)]  # fmt: skip
        top.build_network(roles)
        log(f"namespaces: {len(top.namespaces)} ({', '.join(n.removeprefix(prefix) for n in top.namespaces)}), "
            f"bridge br0 in core, {SUBNET}.0/24")  # fmt: skip
        netem_error = top.probe_netem()
        if netem_error:
            top.mechanism = "userspace delay relay (benchmarks.delay_relay)"
            log(f"delay mechanism: netem unavailable ({netem_error!r}); using {top.mechanism}, TCP"
                f"{' and UDP' if top.h3 else ''}")  # fmt: skip
        else:
            top.mechanism = "userspace delay relay (benchmarks.delay_relay)"
            log("delay mechanism: netem works here, but per-link delays on the shared bridge are done with "
                f"the {top.mechanism} anyway (same numbers on every kernel)")  # fmt: skip
        log(
            f"links (one-way): client->edge {CLIENT_EDGE_MS:g} ms; edge->shield "
            + ", ".join(f"{r} {v:g} ms" for r, v in REGIONS.items())
            + f"; shield->origin {SHIELD_ORIGIN_MS:g} ms"
        )
        if top.h3:
            try:
                from edge.wiring.devcert import ensure_dev_cert

                made = ensure_dev_cert(workdir / "certs")
                top.cafile = Path(made.ca)
            except Exception as exc:
                top.h3 = False
                log(f"HTTP/3 skipped: no certificate ({exc})")
        t0 = time.monotonic()
        start(top, site)
        log(f"started origin, 2 shields, 3 edges, {len([p for p in top.procs if p.startswith('relay')])} relay "
            f"processes in {time.monotonic() - t0:.1f} s")  # fmt: skip

        regions = list(REGIONS)
        origin_log_path = top.procs["origin"].log
        cold: dict[str, list[dict[str, Any]]] = {}
        origin_by_region: dict[str, tuple[int, int, int]] = {}
        seen = 0
        seen_bytes = 0
        for region in regions:  # one region after another: each one's origin requests are its own
            cold.update(run_passes(top, [region], {"proto": "h1", "paths": paths, "concurrency": 4}))
            time.sleep(0.3)
            lines = origin_log(origin_log_path)
            nbytes = sum(b for _, b, _ in lines)
            origin_by_region[region] = (
                sum(1 for _, _, st in lines[seen:] if st == 200),
                sum(1 for _, _, st in lines[seen:] if st == 304),
                nbytes - seen_bytes,
            )
            seen, seen_bytes = len(lines), nbytes
        # warm passes one region at a time too: three Python clients, relays and edges at once on a
        # small machine measure CPU contention, not the network
        warm: dict[str, list[dict[str, Any]]] = {r: [] for r in regions}
        for _ in range(1 if args.quick else 2):
            for region in regions:
                spec = {"proto": "h1", "paths": paths, "concurrency": 2, "warmup": True}
                warm[region] += run_passes(top, [region], spec)[region]
        time.sleep(0.3)
        lines_after_warm = origin_log(origin_log_path)
        distinct = len(set(paths))
        origin_total = len(lines_after_warm)
        origin_full = [t for t, _, st in lines_after_warm if st == 200]
        origin_304 = sum(1 for _, _, st in lines_after_warm if st == 304)

        h3: dict[str, list[dict[str, Any]]] = {}
        if top.h3:
            try:
                # HTTP/3 requests key as https://cdn.test/...: a first pass fills the edges (from the
                # shields, which hold the objects), the second one is the warm pass reported. One
                # region at a time, as the warm HTTP/1.1 passes: a Python QUIC client decrypts every
                # packet itself (≈1,750 for a 2 MB body), so three clients, three UDP relays and
                # three edges at once on 2 CPUs measured CPU contention, not the network
                h3spec = {"proto": "h3", "cafile": str(top.cafile), "paths": paths, "concurrency": 2}
                run_passes(top, regions, h3spec)
                for region in regions:
                    h3.update(run_passes(top, [region], h3spec))
            except RegionsError as exc:
                log(f"HTTP/3 pass failed: {exc}")
                failures.append("HTTP/3 pass")
        else:
            log("HTTP/3: skipped (--no-h3)" if args.no_h3 else "HTTP/3: skipped")

        # third pass: purge every edge, then SIGKILL shield-1 while clients fetch
        for region in regions:
            purge_all(top, f"edge-{region}")
        third_paths = paths * (1 if args.quick else 2)
        pace = 4.0 if args.quick else 8.0
        import threading

        killed_at: list[float] = []

        def killer() -> None:
            time.sleep(pace * 0.3)
            top.kill("shield-1")
            killed_at.append(time.monotonic())

        kt = threading.Thread(target=killer, daemon=True)
        k0 = time.monotonic()
        kt.start()
        third = run_passes(
            top,
            regions,
            {"proto": "h1", "paths": third_paths, "concurrency": 2, "pace": pace, "warmup": True},
        )
        kt.join(10)
        time.sleep(0.3)
        lines_after_kill = origin_log(origin_log_path)
        (workdir / "results.json").write_text(
            json.dumps({"cold": cold, "warm": warm, "h3": h3, "third": third})
        )
        log(f"third pass: every edge purged; shield-1 SIGKILLed {killed_at[0] - k0 if killed_at else float('nan'):.1f} s "
            f"into a {pace:g} s paced pass of {len(third_paths)} requests per region")  # fmt: skip

        # -- table
        log("")
        log("HTTP/1.1, keep-alive, latency = request sent -> whole body received (ms)")
        hdr = (f"{'region':6} {'c->e RTT':>8} {'e->s RTT':>8} | {'cold p50':>8} {'cold p95':>8} | "
               f"{'warm p50':>8} {'warm p95':>8} | {'hit%':>5} | {'origin 200':>10} {'304':>4} {'origin MB':>9} | "
               f"{'h3 p50':>7} {'h3 p95':>7} | {'errors':>6} {'errors(kill)':>12}")  # fmt: skip
        log(hdr)
        log("-" * len(hdr))
        summary = {}
        for region in regions:
            c = [r["seconds"] for r in cold[region] if r["ok"]]
            w = [r["seconds"] for r in warm[region] if r["ok"]]
            hits = sum(1 for r in warm[region] if r["x_cache"].upper().startswith("HIT"))
            hit_ratio = hits / max(1, len(warm[region]))
            errors = sum(1 for r in cold[region] + warm[region] + h3.get(region, []) if not r["ok"])
            kill_errors = [r for r in third[region] if not r["ok"]]
            hv = [r["seconds"] for r in h3.get(region, []) if r["ok"]]
            oreq, o304, obytes = origin_by_region[region]
            summary[region] = {"cold": c, "warm": w}
            h3cols = f"{ms(statistics.median(hv))} {ms(percentile(hv, 95))}" if hv else f"{'-':>7} {'-':>7}"
            log(f"{region:6} {2 * CLIENT_EDGE_MS:8.0f} {2 * REGIONS[region]:8.0f} | "
                f"{ms(statistics.median(c)) if c else '    nan':>8} {ms(percentile(c, 95)):>8} | "
                f"{ms(statistics.median(w)) if w else '    nan':>8} {ms(percentile(w, 95)):>8} | "
                f"{hit_ratio * 100:5.0f} | {oreq:10d} {o304:4d} {obytes / 1e6:9.2f} | {h3cols} | "
                f"{errors:6d} {len(kill_errors):12d}")  # fmt: skip
            for bad in kill_errors[:5]:
                log(f"    {region} error with shield-1 killed: {bad['path']}: {bad['error']}")
            if errors:
                for bad in [x for x in cold[region] + warm[region] + h3.get(region, []) if not x["ok"]][:5]:
                    log(f"    {region} error: {bad['path']}: {bad['error']}")
        small = {
            region: [x["seconds"] for x in warm[region] if x["ok"] and x["bytes"] <= 65536 and
                     x["x_cache"].upper().startswith("HIT")]
            for region in regions
        }  # fmt: skip
        log("warm hits of objects up to 64 KiB, p50: " + ", ".join(
            f"{r} {statistics.median(v) * 1000:.1f} ms" for r, v in small.items() if v
        ) + f" (client->edge RTT {2 * CLIENT_EDGE_MS:g} ms; the rest is the Python relay and client)")  # fmt: skip
        log("")
        log("origin requests per region: during that region's cold pass (regions run one after another);"
            " 'hit%' = X-Cache: HIT in the warm pass; h3 = warm, one new QUIC connection per request")  # fmt: skip
        log(
            "origin 200 / 304 per region: full fetches / revalidations during that region's cold pass; *.html is "
            "'Cache-Control: no-cache' at the origin (origin/rules.py), so index.html is revalidated on every request"
        )
        log(f"origin after cold+warm passes: {origin_total} requests = {len(origin_full)} full fetches (200) of "
            f"{len(set(origin_full))} distinct targets + {origin_304} revalidations (304), "
            f"{sum(b for _, b, _ in lines_after_warm) / 1e6:.2f} MB; after the kill pass: "
            f"{len(lines_after_kill)} requests ({len(lines_after_kill) - origin_total} more: shield-1's keys "
            "refetched through shield-2, plus the no-cache HTML each time)")  # fmt: skip

        # -- checks
        log("")
        for region in regions:
            w = summary[region]["warm"]
            p50 = statistics.median(w) if w else float("inf")
            rtt = 2 * REGIONS[region] / 1000
            ok = p50 < rtt
            log(f"CHECK warm p50 {region} {p50 * 1000:.1f} ms < edge->shield RTT {rtt * 1000:.0f} ms: "
                f"{'ok' if ok else 'FAIL'}")  # fmt: skip
            if not ok:
                failures.append(f"warm p50 {region}")
        ok = len(origin_full) == distinct and set(origin_full) == set(paths)
        log(
            f"CHECK origin full fetches (200) {len(origin_full)} == distinct objects {distinct}: "
            f"{'ok' if ok else 'FAIL'} (plus {origin_304} revalidations of no-cache HTML)"
        )
        if not ok:
            failures.append("origin requests")
        client_errors = sum(1 for r in regions for x in cold[r] + warm[r] + third[r] if not x["ok"])
        ok = client_errors == 0
        log(
            f"CHECK client errors (HTTP/1.1, shield-1 killed in pass 3) = {client_errors}: {'ok' if ok else 'FAIL'}"
        )
        if not ok:
            failures.append("client errors")
        if h3:
            h3_errors = sum(1 for r in regions for x in h3[r] if not x["ok"])
            log(f"CHECK HTTP/3 client errors = {h3_errors}: {'ok' if h3_errors == 0 else 'FAIL'}")
            if h3_errors:
                failures.append("h3 errors")

        plot = (
            Path(args.plot) if args.plot else Path(tempfile.gettempdir()) / f"edge-regions-{os.getpid()}.png"
        )
        try:
            write_plot(plot, regions, summary)
            log(f"plot: {plot}")
        except Exception as exc:
            log(f"plot not written: {exc}")
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); cleaning up")
        failures.append("interrupted")
    except RegionsError as exc:
        log(f"ERROR: {exc}")
        failures.append("error")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        top.close()
        left = [n for n in list_netns() if n.startswith(prefix)]
        log(f"cleanup: processes stopped, namespaces left with prefix {prefix}: {len(left)}")
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    log(
        f"total {time.monotonic() - began:.1f} s; {'all checks ok' if not failures else 'FAILED: ' + ', '.join(failures)}"
    )
    return 0 if not failures else 1


def write_plot(path: Path, regions: list[str], summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(regions))
    width = 0.35
    for offset, kind, color in ((-width / 2, "cold", "#c44e52"), (width / 2, "warm", "#4c72b0")):
        p50 = [statistics.median(summary[r][kind]) * 1000 if summary[r][kind] else 0 for r in regions]
        p95 = [percentile(summary[r][kind], 95) * 1000 for r in regions]
        ax.bar([i + offset for i in x], p50, width, label=f"{kind} p50", color=color)
        ax.scatter(
            [i + offset for i in x],
            p95,
            marker="_",
            s=400,
            color="black",
            label="p95 (black ticks)" if kind == "cold" else None,
        )
    for i, r in enumerate(regions):
        ax.axhline(2 * REGIONS[r], xmin=i / len(regions), xmax=(i + 1) / len(regions), color="gray", ls=":")
    ax.axhline(2 * CLIENT_EDGE_MS, color="green", ls="--", label="client->edge RTT")
    ax.set_xticks(list(x), [f"{r}\n(edge->shield RTT {2 * REGIONS[r]:g} ms)" for r in regions])
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Cold vs warm latency per region (HTTP/1.1 through the edge)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_client":
        print(json.dumps(asyncio.run(client_pass(json.loads(argv[1])))))
        return 0
    if argv and argv[0] == "_wait-port":
        return wait_port_main(argv[1], int(argv[2]), float(argv[3]))
    if argv and argv[0] == "_admin":
        return admin_main(int(argv[1]), argv[2], argv[3], argv[4], argv[5] if len(argv) > 5 else None)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.regions", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer objects and passes (under ~60 s)")
    parser.add_argument("--no-h3", action="store_true", help="skip the HTTP/3 pass")
    parser.add_argument(
        "--quic-backend",
        default="qh3",
        help="edges' --quic-backend (default qh3, the node's own default; aioquic was the default "
        "while qh3 lost its first flight to aioquic clients, fixed in edge/fronts/qh3_io.py)",
    )
    parser.add_argument("--plot", help="PNG path (default: a file in the temp directory)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.regions needs root (ip netns)", file=sys.stderr)
        return 2
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
