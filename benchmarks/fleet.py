"""Real processes on loopback: an origin, shields and edges, started, crashed and stopped.

A topology of REAL processes on 127.0.0.1, for ``benchmarks/tiers.py`` and
``tests/wiring/test_fleet.py``::

    with Fleet() as fleet:
        paths = fleet.add_objects("/bench", count=50, size=4096)
        fleet.start_origin()
        s1, s2 = fleet.start_nodes([fleet.shield_spec("shield-1"), fleet.shield_spec("shield-2")])
        edge = fleet.start_node(fleet.edge_spec("edge-1", [s1, s2], purge_peers=[s1, s2]))
        reply = fleet.get(edge, paths[0])
        assert reply.status == 200 and reply.sha256 == fleet.sha256(paths[0])
        fleet.kill(s1)                          # SIGKILL: a crash, not a shutdown
        fleet.restart(s1)                       # same ports, same arguments
        fleet.origin.requests(paths[0])         # what the origin's access log counted

What it starts and how:

- the origin is ``python -m origin serve --root DIR --listen 127.0.0.1:PORT`` on a
  generated directory of ``.bin`` objects (``application/octet-stream``: never
  compressed by the edge, ``Cache-Control: public, max-age=300`` from the origin's
  defaults). Content is deterministic (SHAKE-256 of the path and a version), so every
  body has a known sha256 (:meth:`Fleet.sha256`); :meth:`Fleet.rewrite` replaces a
  file atomically with its next version. A thread reads the origin's stdout (one
  access line per request) and counts requests per path (:class:`Origin`);
- each node is ``python -m edge.cli serve`` with its own ``--name`` (also its
  ``--node-id``), public port, admin port on 127.0.0.1 and the fleet's shared admin
  token; ``--shields``, ``--purge-peers``, ``--workers`` and HTTP/3 (a certificate and
  ``--quic-listen``) as the :class:`NodeSpec` says. Edges get quick probes of down
  shields (``--shield-probe-min 0.2 --shield-probe-max 1``) so a restarted shield is
  seen within about a second;
- every client request carries ``Host: cdn.test`` (:data:`HOST`), as a CDN's clients
  all name the site, not the node: nodes key by Host and forward it, so every edge and
  shield key an object the same way (and rendezvous-hash it to the same shield);
- ports are picked free below the kernel's ephemeral range, so a port freed by a
  killed shield is not taken by an outgoing connection before the shield restarts.

Bounds and cleanup: every wait has a deadline (readiness polls, request timeouts,
load loops bounded in time and count). Each process is started in a session of its
own and is stopped through its process group, whose id is the PID this module got
from ``Popen`` (a node's ``--workers`` children share that group): SIGTERM, then
SIGKILL after a grace period. :meth:`Fleet.close` runs on leaving the ``with`` block,
exceptions and KeyboardInterrupt included, and from ``atexit`` as a last resort; it
only ever signals process groups this fleet started.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import http.client
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

__all__ = [
    "HOST",
    "Fleet",
    "FleetError",
    "LoadResult",
    "Node",
    "NodeSpec",
    "Origin",
    "Reply",
    "Sample",
    "cache_status_members",
    "gather_gets",
    "h3_get",
    "run_load",
]

HOST = "cdn.test"
"""The site's name: the Host every client request carries (see the module docstring)."""

READY_TIMEOUT = 30.0
"""Seconds a process may take to start answering (only a broken start waits this long)."""

STOP_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when stopping."""

REQUEST_TIMEOUT = 10.0
"""Seconds one client request may take."""

POLL = 0.05
"""Seconds between two checks of a polled condition."""

Role = Literal["origin", "shield", "edge", "node"]


class FleetError(RuntimeError):
    """A process did not start, died, or a deadline passed; the message says which and why."""


# -- small helpers ------------------------------------------------------------------------


def deadline_poll(predicate: Callable[[], bool], what: str, timeout: float, interval: float = POLL) -> None:
    """Return when ``predicate()`` holds; FleetError naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise FleetError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_free(port: int, udp: bool) -> bool:
    kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp else [socket.SOCK_STREAM]
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


_taken: set[int] = set()
_rng = random.Random(os.getpid() ^ time.monotonic_ns())


def free_port(udp: bool = False) -> int:
    """A port free on 127.0.0.1 (for TCP, and UDP too with ``udp``), below the ephemeral range.

    Outgoing connections take their local ports from the ephemeral range; a listening
    port chosen there could be taken by one of them while its node is down (killed,
    about to restart). Ports this process already handed out are not given twice.
    """
    low, _ = _ephemeral_range()
    start = max(1024, low - 12000)
    for _ in range(500):
        port = _rng.randrange(start, low)
        if port not in _taken and _port_free(port, udp):
            _taken.add(port)
            return port
    raise FleetError("no free port below the ephemeral range after 500 tries")


def object_bytes(path: str, version: int, size: int) -> bytes:
    """The deterministic body of ``path`` at ``version``: SHAKE-256 of both, ``size`` bytes."""
    return hashlib.shake_256(f"{path}#v{version}".encode()).digest(size)


def cache_status_members(value: str | None) -> list[tuple[str, str]]:
    """``Cache-Status`` as (cache name, parameters) per member, first (upstream-most) first.

    Names here are tokens (the fleet's node names), so a plain split is exact.
    """
    if not value:
        return []
    members = []
    for member in value.split(","):
        name, _, params = member.strip().partition(";")
        members.append((name.strip(), params.strip()))
    return members


# -- the origin -----------------------------------------------------------------------------

_ACCESS = re.compile(r'^(\S+) "(\S+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+)')


@dataclass
class Origin:
    """The origin process and what its access log said, per path (thread-safe)."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    lines: list[tuple[str, str, int]] = field(default_factory=list)
    """(method, target, status) per access line, in the order the origin logged them."""
    _counts: Counter[str] = field(default_factory=Counter)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None
    _marks: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("ab") as copy:
            for raw in self.proc.stdout:
                copy.write(raw)
                m = _ACCESS.match(raw.decode("latin-1"))
                if m is None:
                    continue
                method, target, status = m.group(2), m.group(3), int(m.group(4))
                with self._cond:
                    self.lines.append((method, target, status))
                    self._counts[target] += 1
                    self._cond.notify_all()

    def start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read, name="origin-access-log", daemon=True)
        self._reader.start()

    def requests(self, path: str) -> int:
        """Requests the origin logged for ``path`` (any method) so far."""
        with self._cond:
            return self._counts[path]

    def counts(self, paths: Iterable[str] | None = None) -> dict[str, int]:
        """Requests per path, for ``paths`` (every path logged when None)."""
        with self._cond:
            if paths is None:
                return {p: n for p, n in self._counts.items() if not p.startswith("/__mark")}
            return {p: self._counts[p] for p in paths}

    def total(self) -> int:
        """Every request logged, the fleet's own markers left out."""
        with self._cond:
            return sum(n for p, n in self._counts.items() if not p.startswith("/__mark"))

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
        """Block until ``predicate()`` (called with the log's lock held) holds, or FleetError."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise FleetError(f"origin: {what}: not within {timeout:g} s")

    def sync(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until every request the origin finished before now has been counted.

        Sends a marker request straight to the origin and waits for its access line:
        the origin logs on one event loop, and the reader reads its stdout in order.
        """
        mark = f"/__mark-{next(self._marks)}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("GET", mark)
            conn.getresponse().read()
        finally:
            conn.close()
        self.wait_for(lambda: self._counts[mark] > 0, f"marker {mark} logged", timeout)


# -- nodes ------------------------------------------------------------------------------------


@dataclass
class NodeSpec:
    """What one ``edge serve`` node is started with (see :meth:`Fleet.shield_spec`, :meth:`Fleet.edge_spec`)."""

    name: str
    role: Role = "node"
    shields: Sequence[Node] | Sequence[str] = ()
    """Nodes (or URLs, e.g. a node's own future URL) listed in ``--shields``."""
    purge_peers: Sequence[Node] = ()
    upstream: str | None = None
    """``--upstream``; the fleet's origin when None."""
    workers: int = 1
    h3: bool = False
    """Serve HTTP/3 on :attr:`Node.quic_port` (needs the fleet's certificate)."""
    options: Mapping[str, str] = field(default_factory=dict)
    """More ``--flag value`` pairs (without the dashes: ``{"shield-fallback": "error"}``)."""
    port: int | None = None
    admin_port: int | None = None


@dataclass
class Node:
    """One running (or killed) ``edge serve`` process group."""

    name: str
    role: Role
    port: int
    admin_port: int
    quic_port: int | None
    workers: int
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and not _exited(self.proc)

    def command(self) -> str:
        """The command line, as a shell would show it (for reports)."""
        return " ".join(_shell_quote(a) for a in ["python", *self.argv[1:]])

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _shell_quote(arg: str) -> str:
    return (
        arg if arg and re.fullmatch(r"[A-Za-z0-9_./:,=@%+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"
    )


@dataclass
class Reply:
    """One HTTP response as a client saw it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float = 0.0

    def header(self, name: str) -> str | None:
        """All values of ``name`` joined with ", " (None when absent)."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def cache_status(self) -> str:
        return self.header("cache-status") or ""

    @property
    def members(self) -> list[tuple[str, str]]:
        return cache_status_members(self.header("cache-status"))


class Fleet:
    """Starts, crashes, restarts and stops a topology of real processes on loopback."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        token: str | None = None,
        host: str = HOST,
        keep: bool = False,
        cert: Path | None = None,
        key: Path | None = None,
        ca: Path | None = None,
    ) -> None:
        """``workdir`` holds the origin's files and every log (a fresh temporary directory
        when None, removed on close unless ``keep``). ``cert``/``key``/``ca`` are the
        certificate HTTP/3 nodes use and the CA that signed it; when an HTTP/3 node is
        asked for without them, a dev CA and certificate are made in ``workdir``."""
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="edge-fleet-")) if workdir is None else workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = self.dir / "root"
        self.root.mkdir(exist_ok=True)
        self.token = token or "fleet-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]
        self.host = host
        self.keep = keep
        self.cert, self.key, self.ca = cert, key, ca
        self.origin: Origin | None = None
        self.nodes: dict[str, Node] = {}
        self.versions: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self._sha: dict[str, str] = {}
        self._closed = False
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self._admin = httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False)
        atexit.register(self.close)

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- objects ----------------------------------------------------------------------------
    def add_object(self, path: str, size: int) -> str:
        """Write ``path`` (version 0, ``size`` bytes) under the origin's root; returns ``path``."""
        if not path.startswith("/") or ".." in path:
            raise ValueError(f"object path must be absolute and plain: {path!r}")
        self.sizes[path] = size
        self.versions[path] = -1
        self.rewrite(path)
        return path

    def add_objects(self, prefix: str, count: int, size: int | Sequence[int]) -> list[str]:
        """``count`` objects ``{prefix}/obj-NNNN.bin``; ``size`` one size or one per object (cycled)."""
        sizes = [size] if isinstance(size, int) else list(size)
        return [self.add_object(f"{prefix}/obj-{i:04d}.bin", sizes[i % len(sizes)]) for i in range(count)]

    def rewrite(self, path: str) -> str:
        """Replace ``path`` at the origin with its next version (atomically); its new sha256."""
        version = self.versions[path] + 1
        body = object_bytes(path, version, self.sizes[path])
        file = self.root / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, file)
        self.versions[path] = version
        self._sha[path] = hashlib.sha256(body).hexdigest()
        return self._sha[path]

    def sha256(self, path: str, version: int | None = None) -> str:
        """The sha256 of ``path``'s current body (or of ``version``)."""
        if version is None:
            return self._sha[path]
        return hashlib.sha256(object_bytes(path, version, self.sizes[path])).hexdigest()

    def url_of(self, path: str) -> str:
        """The URL nodes key ``path`` by (what a purge names)."""
        return f"http://{self.host}{path}"

    # -- processes ----------------------------------------------------------------------------
    def _popen(self, argv: list[str], log: Path, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else out,
                stderr=out,
                env=self.env,
                start_new_session=True,
            )

    def start_origin(self, timeout: float = READY_TIMEOUT) -> Origin:
        """Start the origin on the objects written so far (more may be added while it runs)."""
        if self.origin is not None:
            raise FleetError("the origin is already started")
        port = free_port()
        log = self.dir / "origin.log"
        argv = [
            sys.executable,
            "-m",
            "origin",
            "serve",
            "--root",
            str(self.root),
            "--listen",
            f"127.0.0.1:{port}",
        ]
        proc = self._popen(argv, log, stdout_pipe=True)
        self.origin = Origin(self.root, port, proc, log)
        self.origin.start_reader()

        def up() -> bool:
            if _exited(proc):
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                raise FleetError(f"origin exited with {proc.returncode}: {_tail(log)}")
            return _tcp_accepts(port)

        deadline_poll(up, "origin answers", timeout)
        return self.origin

    def origin_command(self) -> str:
        assert self.origin is not None
        return f"python -m origin serve --root {self.root} --listen 127.0.0.1:{self.origin.port}"

    def shield_spec(self, name: str, **kw: Any) -> NodeSpec:
        return NodeSpec(name, "shield", **kw)

    def edge_spec(self, name: str, shields: Sequence[Node] | Sequence[str] = (), **kw: Any) -> NodeSpec:
        options = {"shield-probe-min": "0.2", "shield-probe-max": "1", **kw.pop("options", {})}
        return NodeSpec(name, "edge", shields=shields, options=options, **kw)

    def _argv(self, spec: NodeSpec, port: int, admin_port: int, quic_port: int | None) -> list[str]:
        upstream = spec.upstream
        if upstream is None:
            if self.origin is None:
                raise FleetError("start the origin first (or give the node an upstream)")
            upstream = self.origin.url
        argv = [
            sys.executable, "-m", "edge.cli", "serve",
            "--name", spec.name, "--node-id", spec.name,
            "--upstream", upstream,
            "--listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin_port}", "--admin-token", self.token, "--access-log", "off",
            "--cache-size", "64MiB",
            "--workers", str(spec.workers),
            "--connect-timeout", "1", "--read-timeout", "10",
        ]  # fmt: skip
        if spec.shields:
            argv += ["--shields", ",".join(s.url if isinstance(s, Node) else s for s in spec.shields)]
        if spec.purge_peers:
            argv += ["--purge-peers", ",".join(p.admin_url for p in spec.purge_peers)]
        if quic_port is not None:
            cert, key = self._certificate()
            argv += [
                "--cert",
                str(cert),
                "--key",
                str(key),
                "--tls-listen",
                "",
                "--quic-listen",
                f"127.0.0.1:{quic_port}",
            ]
        else:
            argv += ["--tls-listen", "", "--quic-listen", ""]
        for flag, value in spec.options.items():
            argv += [f"--{flag}", value]
        return argv

    def _certificate(self) -> tuple[Path, Path]:
        if self.cert is None or self.key is None:
            from edge.wiring.devcert import ensure_dev_cert

            made = ensure_dev_cert(self.dir / "certs")
            self.cert, self.key, self.ca = made.cert, made.key, made.ca
        return self.cert, self.key

    def start_node(self, spec: NodeSpec, timeout: float = READY_TIMEOUT) -> Node:
        """Start one node and wait until it answers (see :meth:`wait_ready`)."""
        return self.start_nodes([spec], timeout)[0]

    def start_nodes(self, specs: Sequence[NodeSpec], timeout: float = READY_TIMEOUT) -> list[Node]:
        """Start several nodes at once (their imports overlap), then wait until all answer."""
        nodes = []
        for spec in specs:
            if spec.name in self.nodes:
                raise FleetError(f"a node is already named {spec.name!r}: give every node its own name")
            port = spec.port or free_port()
            admin_port = spec.admin_port or free_port()
            quic_port = free_port(udp=True) if spec.h3 else None
            node = Node(
                spec.name, spec.role, port, admin_port, quic_port, spec.workers,
                self._argv(spec, port, admin_port, quic_port), self.dir / f"{spec.name}.log",
            )  # fmt: skip
            self.nodes[spec.name] = node
            self._spawn(node)
            nodes.append(node)
        self.wait_ready(nodes, timeout)
        return nodes

    def _spawn(self, node: Node) -> None:
        node.proc = self._popen(node.argv, node.log)
        node.starts += 1

    def wait_ready(self, nodes: Sequence[Node], timeout: float = READY_TIMEOUT) -> None:
        """Wait until each node's admin API answers /stats with all its workers and its public port accepts.

        A node that exits meanwhile is a FleetError with the end of its log; one that
        exited because a port was still busy (a restart) is started again, at most 5
        times, within the same deadline.
        """
        end = time.monotonic() + timeout
        for node in nodes:
            while True:
                if time.monotonic() > end:
                    raise FleetError(f"{node.name} not ready within {timeout:g} s: {node.log_tail()}")
                assert node.proc is not None
                if _exited(node.proc):
                    _signal_group(node.proc, signal.SIGKILL)  # whatever of its group is left
                    code = node.proc.wait()
                    tail = node.log_tail()
                    last = tail.splitlines()[-1] if tail else ""
                    if "cannot listen" in last and node.starts < 5:
                        time.sleep(0.2)
                        self._spawn(node)
                        continue
                    raise FleetError(f"{node.name} exited with {code}: {tail}")
                if self._answers(node):
                    break
                time.sleep(POLL)

    def _answers(self, node: Node) -> bool:
        try:
            stats = self.stats(node, timeout=1.0)
        except (httpx.HTTPError, FleetError, ValueError):
            return False
        workers = stats.get("workers")
        if node.workers > 1 and (
            not isinstance(workers, list)
            or len(workers) != node.workers
            or any("error" in w for w in workers)
        ):
            return False
        return _tcp_accepts(node.port)

    def kill(self, node: Node, timeout: float = STOP_GRACE) -> None:
        """SIGKILL the node's process group (a crash: no draining, no goodbye) and reap it."""
        if node.proc is None:
            return
        _signal_group(node.proc, signal.SIGKILL)
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise FleetError(
                f"{node.name} (pid {node.proc.pid}) still there {timeout:g} s after SIGKILL"
            ) from None
        # its workers (same group) got the same signal; wait until its public port is closed
        deadline_poll(lambda: not _tcp_accepts(node.port), f"{node.name}'s port closed", timeout)

    def restart(self, node: Node, timeout: float = READY_TIMEOUT) -> None:
        """Start a stopped or killed node again, same arguments and ports, and wait until it answers."""
        if node.running:
            raise FleetError(f"{node.name} is still running: kill or stop it first")
        self._spawn(node)
        self.wait_ready([node], timeout)

    def stop_node(self, node: Node, grace: float = STOP_GRACE) -> None:
        """SIGTERM the node's process group, SIGKILL after ``grace`` seconds; forget the node."""
        _stop([node.proc] if node.proc is not None else [], grace)
        self.nodes.pop(node.name, None)

    def close(self) -> None:
        """Stop every process this fleet started (nodes first, then the origin); idempotent."""
        if self._closed:
            return
        self._closed = True
        procs = [n.proc for n in self.nodes.values() if n.proc is not None]
        _stop(procs, STOP_GRACE)
        if self.origin is not None:
            _stop([self.origin.proc], STOP_GRACE)
            if self.origin.proc.stdout is not None:
                self.origin.proc.stdout.close()
        self._admin.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- admin API ------------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stats(self, node: Node, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """GET /stats of ``node``'s admin API."""
        resp = self._admin.get(node.admin_url + "/stats", headers=self._auth(), timeout=timeout)
        if resp.status_code != 200:
            raise FleetError(f"{node.name} /stats: {resp.status_code} {resp.text[:200]}")
        answer: dict[str, Any] = resp.json()
        return answer

    def upstream(self, node: Node, upstream: Node | str) -> dict[str, Any]:
        """The /stats ``upstreams`` entry of ``node`` for ``upstream`` (a node, or a URL)."""
        url = upstream.url if isinstance(upstream, Node) else upstream
        for entry in self.stats(node).get("upstreams", []):
            if entry.get("name") == url:
                return dict(entry)
        raise FleetError(f"{node.name} lists no upstream {url}")

    def purge(self, node: Node, path: str, **extra: Any) -> dict[str, Any]:
        """POST /purge ``{"url": http://HOST/path}`` to ``node``'s admin API; its JSON answer."""
        body = {"url": self.url_of(path), **extra}
        resp = self._admin.post(node.admin_url + "/purge", json=body, headers=self._auth(), timeout=60)
        if resp.status_code != 200:
            raise FleetError(f"{node.name} /purge: {resp.status_code} {resp.text[:200]}")
        answer: dict[str, Any] = resp.json()
        return answer

    # -- clients -------------------------------------------------------------------------------------
    def get(
        self,
        node: Node,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
        method: str = "GET",
    ) -> Reply:
        """One request to ``node``'s public port on a new connection (closed after it)."""
        began = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Host": self.host, "Connection": "close", **(headers or {})})
            resp = conn.getresponse()
            body = resp.read()
            return Reply(resp.status, list(resp.getheaders()), body, time.monotonic() - began)
        finally:
            conn.close()


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has exited, without reaping it.

    An unreaped child keeps its PID (as a zombie), so its process group id cannot be
    given to another process meanwhile: signalling the group stays safe until we reap.
    """
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group ``proc`` leads (id ``proc.pid``: it was started in a session of its own).

    Only while ``proc`` is not reaped (see :func:`_exited`): after that its id may name
    someone else's group, and nothing is sent.
    """
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM each group, wait up to ``grace`` seconds for the leaders, then SIGKILL the groups and reap."""
    for proc in procs:
        if not _exited(proc):
            _signal_group(proc, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and not all(_exited(p) for p in procs):
        time.sleep(POLL)
    for proc in procs:
        # a leader that exited may leave workers of its group behind: the group gets SIGKILL either way
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


# -- bounded load -----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One request of a load run."""

    node: str
    path: str
    status: int
    ok: bool
    cache_status: str
    started: float
    """Seconds since the run began."""
    error: str = ""

    @property
    def members(self) -> list[tuple[str, str]]:
        return cache_status_members(self.cache_status)


@dataclass
class LoadResult:
    planned: int
    samples: list[Sample]
    seconds: float
    stopped_early: bool
    """The run's deadline passed before every planned request was sent."""

    @property
    def errors(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]


async def run_load(
    plan: Sequence[tuple[Node, str]],
    expected: Callable[[str], str],
    *,
    host: str = HOST,
    concurrency: int = 24,
    duration_limit: float = 60.0,
    request_timeout: float = REQUEST_TIMEOUT,
    min_seconds: float = 0.0,
    on_sample: Callable[[Sample, int], None] | None = None,
) -> LoadResult:
    """Send ``plan``'s requests (node, path), ``concurrency`` in flight, over keep-alive connections.

    A request is ok when it answers 200 with a body whose sha256 is ``expected(path)``
    (looked up when the answer arrives); anything else (another status, a wrong or
    short body, a timeout, a reset) is an error with its reason. Bounded: at most
    ``len(plan)`` requests, none started after ``duration_limit`` seconds, each within
    ``request_timeout``. ``min_seconds`` paces the plan evenly over at least that long
    (so an event, a kill say, can land in the middle of it). ``on_sample`` is called
    with each sample and the count done so far.
    """
    began = time.monotonic()
    samples: list[Sample] = []
    queue = iter(enumerate(plan))
    interval = min_seconds / len(plan) if plan and min_seconds > 0 else 0.0
    stopped = False
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients: dict[str, httpx.AsyncClient] = {}

    def client(node: Node) -> httpx.AsyncClient:
        if node.name not in clients:
            clients[node.name] = httpx.AsyncClient(
                base_url=node.url, limits=limits, timeout=request_timeout, trust_env=False,
                headers={"Host": host},
            )  # fmt: skip
        return clients[node.name]

    async def one(node: Node, path: str, at: float) -> Sample:
        try:
            async with asyncio.timeout(request_timeout):
                resp = await client(node).get(path)
            body_sha = hashlib.sha256(resp.content).hexdigest()
            ok = resp.status_code == 200 and body_sha == expected(path)
            error = "" if ok else f"status {resp.status_code}, sha256 {body_sha[:12]}"
            return Sample(
                node.name, path, resp.status_code, ok, resp.headers.get("cache-status", ""), at, error
            )
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return Sample(node.name, path, 0, False, "", at, f"{type(exc).__name__}: {exc}")

    async def worker() -> None:
        nonlocal stopped
        for index, (node, path) in queue:
            now = time.monotonic() - began
            if now > duration_limit:
                stopped = True
                return
            if interval and index * interval > now:
                await asyncio.sleep(index * interval - now)
            sample = await one(node, path, time.monotonic() - began)
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample, len(samples))

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(plan))))))
    finally:
        for c in clients.values():
            await c.aclose()
    return LoadResult(len(plan), samples, time.monotonic() - began, stopped)


async def gather_gets(
    targets: Sequence[tuple[Node, str]], *, host: str = HOST, timeout: float = REQUEST_TIMEOUT
) -> list[Reply]:
    """GET every (node, path) at once, each on a new connection; the replies in ``targets`` order.

    All requests are started before any is awaited (a cold burst); each is bounded by
    ``timeout``. A request that fails raises (a burst is small: every answer counts).
    """

    async def one(node: Node, path: str) -> Reply:
        began = time.monotonic()
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(base_url=node.url, trust_env=False, timeout=timeout) as client,
        ):
            resp = await client.get(path, headers={"Host": host, "Connection": "close"})
        return Reply(
            resp.status_code, list(resp.headers.multi_items()), resp.content, time.monotonic() - began
        )

    return list(await asyncio.gather(*(one(node, path) for node, path in targets)))


async def h3_get(
    port: int, path: str, cafile: Path, *, host: str = HOST, timeout: float = REQUEST_TIMEOUT
) -> Reply:
    """One GET over HTTP/3 on a new QUIC connection, from a new UDP socket (a port of its own).

    The server's certificate is verified against ``cafile`` (its name is ``localhost``);
    the request's ``:authority`` is ``host``, so it keys like the cleartext requests.
    With ``--workers N`` the kernel spreads new source ports over the workers.
    """
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import ConnectionTerminated, QuicEvent

    loop = asyncio.get_running_loop()
    done: asyncio.Future[Reply] = loop.create_future()
    began = time.monotonic()

    class Once(QuicConnectionProtocol):
        def __init__(self, quic: QuicConnection) -> None:
            super().__init__(quic)
            self.h3 = H3Connection(quic)
            self.reply = Reply(0, [], b"")
            self.body = bytearray()

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, ConnectionTerminated) and not done.done():
                done.set_exception(FleetError(f"QUIC connection closed: {event.reason_phrase}"))
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived):
                    fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in h3_event.headers]
                    status = dict(fields).get(":status", "0")
                    if int(status) >= 200:
                        self.reply.status = int(status)
                        self.reply.headers = [(k, v) for k, v in fields if not k.startswith(":")]
                elif isinstance(h3_event, DataReceived):
                    self.body += h3_event.data
                if isinstance(h3_event, HeadersReceived | DataReceived) and h3_event.stream_ended:
                    self.reply.body = bytes(self.body)
                    self.reply.seconds = time.monotonic() - began
                    if not done.done():
                        done.set_result(self.reply)

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile=str(cafile))
    quic = QuicConnection(configuration=config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    transport, protocol = await loop.create_datagram_endpoint(lambda: Once(quic), sock=sock)
    try:
        async with asyncio.timeout(timeout):
            protocol.connect(("127.0.0.1", port))
            await protocol.wait_connected()
            stream = quic.get_next_available_stream_id()
            head = [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", host.encode()),
                (b":path", path.encode()),
            ]
            protocol.h3.send_headers(stream, head, end_stream=True)
            protocol.transmit()
            return await done
    finally:
        protocol.close()
        await asyncio.sleep(0.01)  # let the CONNECTION_CLOSE leave
        transport.close()
