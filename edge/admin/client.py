"""``edge purge``: ask one node's admin API, or a whole fleet's, to purge, from a shell or a script.

Nodes come from ``--admin URL`` (repeatable, or comma-separated) and ``--peers FILE``,
in the order given on the command line, and are purged one after another in that
order. List origin shields before the edges behind them: an edge that refetches
while the purge runs then gets the new object from an already purged shield.

What this module guarantees:

- one node: stdout is exactly the number of purged responses, first word
  (``3 purged``, ``3 marked stale``), for scripts; a failure is one line on stderr.
- several nodes: one stdout line per node as soon as it answers (``NAME: 3 purged``,
  ``NAME: error: reason``), then ``total: N purged on K of M nodes``; when a node
  failed, one line on stderr says which. ``--json`` prints one JSON object instead
  of the lines (for any number of nodes).
- a node that fails (unreachable, refused token, timeout, 5xx, unexpected answer)
  never stops the others: every node is tried. Exit status 0 when every node
  purged, 2 when any failed.
- each node gets at most ``--timeout`` seconds, connect to last byte, so a run
  ends within M x timeout.
- the node list is checked whole before anything is purged: a bad URL, a
  malformed peers line or a missing token variable is a usage error (one line,
  exit 2) and no node is asked.
- never a traceback; the token goes only to the admin URLs given, never through
  a proxy from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "DEFAULT_ADMIN",
    "Node",
    "Outcome",
    "UsageError",
    "build_purge_parser",
    "nodes_from_args",
    "purge_main",
    "purge_node",
    "purge_nodes",
    "read_peers",
]

DEFAULT_ADMIN = "http://127.0.0.1:9090"
TOKEN_ENV = "EDGE_ADMIN_TOKEN"

_EPILOG = """\
several nodes:
  --admin may be repeated or take a comma-separated list; --peers FILE reads one
  node a line: URL [NAME] [token=ENVVAR] (blank lines and # comments ignored;
  NAME defaults to the URL; token=ENVVAR sends that node the token from $ENVVAR
  instead of --token). Nodes are purged one after another in the order given,
  --admin and --peers alike: list origin shields before the edges behind them.

output and exit status:
  one node prints "N purged" (or "N marked stale"); several print one line per
  node ("NAME: N purged", "NAME: error: reason") and "total: N purged on K of M
  nodes". A node that fails does not stop the others: they are still purged,
  and the exit status is 2 (0 when every node purged). --timeout bounds each
  node, so the run ends within nodes x timeout. A bad URL or peers line is a
  usage error (exit 2) reported before any node is asked.
"""


class UsageError(Exception):
    """The command line or a peers file is wrong; nothing has been purged."""


@dataclass(frozen=True)
class Node:
    """One admin API to purge: its name in the output, base URL and bearer token ("" sends none)."""

    name: str
    admin: str
    token: str


@dataclass(frozen=True)
class Outcome:
    """What one node answered: ``purged`` (and ``soft``) on success, else ``error``."""

    node: Node
    purged: int = 0
    soft: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _InOrder(argparse.Action):
    """Collect ``--admin`` and ``--peers`` in one list, in command-line order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sources = [*(getattr(namespace, self.dest) or []), (self.const, values)]
        setattr(namespace, self.dest, sources)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_purge_parser(prog: str = "edge purge") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Purge cached responses on edge nodes through their admin APIs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("url", nargs="?", help="purge this URL, all its variants (no scheme: http and https)")
    what.add_argument(
        "--prefix", metavar="P", help="purge every URL starting with P (e.g. http://host/assets/)"
    )
    what.add_argument("--tag", metavar="T", help="purge responses tagged T by Surrogate-Key or Cache-Tag")
    what.add_argument("--all", action="store_true", help="purge everything")
    parser.add_argument(
        "--soft",
        action="store_true",
        help="mark stale instead of removing (kept for revalidation and stale-if-error)",
    )
    parser.add_argument(
        "--admin",
        action=_InOrder,
        const="admin",
        dest="sources",
        metavar="URL[,URL...]",
        help=f"admin API base URL; repeat or comma-separate for several nodes (default {DEFAULT_ADMIN})",
    )
    parser.add_argument(
        "--peers",
        action=_InOrder,
        const="peers",
        dest="sources",
        metavar="FILE",
        help="read admin URLs from FILE, one a line: URL [NAME] [token=ENVVAR]",
    )
    parser.add_argument("--token", help=f"admin bearer token (default: env {TOKEN_ENV})")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds to wait for each node (default 30)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"nodes": [...], "purged": N, "soft": bool, "ok": bool}',
    )
    return parser


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an admin base URL, or None."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return str(exc)
    if parsed.scheme not in ("http", "https"):
        return "use http:// or https://"
    if not parsed.host:
        return "no host"
    return None


def read_peers(path: str, default_token: str) -> list[Node]:
    """The nodes listed in the peers file at ``path``, in file order; UsageError saying where it is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read peers file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read peers file {path}: not UTF-8 text") from None
    nodes: list[Node] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path} line {number}"
        url, *rest = fields
        names = [f for f in rest if not f.startswith("token=")]
        tokens = [f.removeprefix("token=") for f in rest if f.startswith("token=")]
        if len(names) > 1 or len(tokens) > 1:
            raise UsageError(f"{where}: expected URL [NAME] [token=ENVVAR], got {len(fields)} fields")
        problem = _url_problem(url)
        if problem:
            raise UsageError(f"{where}: bad admin URL {url!r}: {problem}")
        token = default_token
        if tokens:
            if not tokens[0]:
                raise UsageError(f"{where}: token= needs an environment variable name")
            token = os.environ.get(tokens[0], "")
            if not token:
                raise UsageError(f"{where}: environment variable {tokens[0]} (token=) is not set")
        nodes.append(Node(names[0] if names else url, url, token))
    if not nodes:
        raise UsageError(f"peers file {path} lists no admin URL")
    return nodes


def nodes_from_args(args: argparse.Namespace) -> list[Node]:
    """The nodes to purge, in the order given; UsageError before any is asked."""
    token: str = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    sources: list[tuple[str, str]] = args.sources or [("admin", DEFAULT_ADMIN)]
    nodes: list[Node] = []
    for kind, value in sources:
        if kind == "peers":
            nodes += read_peers(value, token)
            continue
        urls = [part.strip() for part in value.split(",") if part.strip()]
        if not urls:
            raise UsageError(f"--admin {value!r} names no URL")
        for url in urls:
            problem = _url_problem(url)
            if problem:
                raise UsageError(f"bad --admin URL {url!r}: {problem}")
            nodes.append(Node(url, url, token))
    return nodes


async def purge_node(client: httpx.AsyncClient, node: Node, body: dict[str, Any], timeout: float) -> Outcome:
    """POST ``body`` to ``node``'s /purge within ``timeout`` seconds; never raises for a node's failure."""
    headers = {"Authorization": f"Bearer {node.token}"} if node.token else {}
    url = node.admin.rstrip("/") + "/purge"

    def failed(message: str) -> Outcome:
        return Outcome(node, error=message)

    try:
        async with asyncio.timeout(timeout):
            resp = await client.post(url, json=body, headers=headers)
    except (TimeoutError, httpx.TimeoutException):
        return failed(f"admin API at {node.admin} did not answer within {timeout:g}s")
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return failed(f"bad admin URL {node.admin!r}: {exc}")
    except httpx.ConnectError as exc:
        return failed(f"cannot reach the admin API at {node.admin}: {_reason(exc)}")
    except httpx.HTTPError as exc:
        return failed(f"admin API at {node.admin}: {_reason(exc)}")
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code != 200:
        reason = answer.get("error") if isinstance(answer, dict) else None
        verb = "failed" if resp.status_code >= 500 else "refused"
        message = f"admin API {verb} ({resp.status_code}): {reason or resp.text.strip()[:200]}"
        if resp.status_code == 401 and not node.token:
            message += f" (pass --token or set {TOKEN_ENV})"
        return failed(message)
    if not isinstance(answer, dict) or type(answer.get("purged")) is not int:
        return failed(f"unexpected answer from {url}: {resp.text.strip()[:200]}")
    # The node purged itself, but a shield it passes purges to (purge_peers) or one of its
    # workers did not: the object may come back from there, so this node counts as failed.
    behind = [f"peer {p.get('admin')}: {p['error']}" for p in answer.get("peers") or [] if "error" in p]
    behind += [str(e) for e in answer.get("errors") or []]
    if behind:
        return failed(f"purged {answer['purged']} here, but not everywhere behind it: {'; '.join(behind)}")
    return Outcome(node, purged=answer["purged"], soft=bool(answer.get("soft")))


async def purge_nodes(
    nodes: Sequence[Node],
    body: dict[str, Any],
    timeout: float,
    done: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Purge ``nodes`` one after another, in order; ``done`` hears each outcome as it comes."""
    outcomes: list[Outcome] = []
    # trust_env=False: admin ports are internal; a proxy from the environment must not see the token.
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        for node in nodes:
            outcome = await purge_node(client, node, body, timeout)
            done(outcome)
            outcomes.append(outcome)
    return outcomes


def _fail(message: str) -> int:
    print(f"edge purge: error: {message}", file=sys.stderr)
    return 2


def _count(purged: int, soft: bool) -> str:
    return f"{purged} marked stale" if soft else f"{purged} purged"


def _print_line(outcome: Outcome) -> None:
    result = _count(outcome.purged, outcome.soft) if outcome.ok else f"error: {outcome.error}"
    print(f"{outcome.node.name}: {result}", flush=True)


def _json_report(outcomes: list[Outcome], soft: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for o in outcomes:
        row: dict[str, Any] = {"node": o.node.name, "admin": o.node.admin}
        row.update({"purged": o.purged} if o.ok else {"error": o.error})
        rows.append(row)
    return {
        "nodes": rows,
        "purged": sum(o.purged for o in outcomes if o.ok),
        "soft": soft,
        "ok": all(o.ok for o in outcomes),
    }


def purge_main(argv: list[str]) -> int:
    """Run ``edge purge`` with ``argv`` (without the subcommand); returns the exit status.

    Synchronous: it runs its own event loop, so call it from a thread that has none.
    """
    parser = build_purge_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return exc.code if isinstance(exc.code, int) else 2
    body: dict[str, Any]
    if args.all:
        body = {"all": True}
    elif args.prefix is not None:
        body = {"prefix": args.prefix}
    elif args.tag is not None:
        body = {"tag": args.tag}
    else:
        body = {"url": args.url}
    if args.soft:
        body["soft"] = True
    try:
        nodes = nodes_from_args(args)
    except UsageError as exc:
        return _fail(str(exc))
    if len(nodes) == 1 and not args.json:
        # One node: exactly the output edge purge always had.
        (outcome,) = asyncio.run(purge_nodes(nodes, body, args.timeout))
        if outcome.error is not None:
            return _fail(outcome.error)
        print(_count(outcome.purged, outcome.soft))
        return 0
    if args.json:
        outcomes = asyncio.run(purge_nodes(nodes, body, args.timeout))
        print(json.dumps(_json_report(outcomes, args.soft)), flush=True)
    else:
        outcomes = asyncio.run(purge_nodes(nodes, body, args.timeout, _print_line))
        total = sum(o.purged for o in outcomes if o.ok)
        succeeded = sum(o.ok for o in outcomes)
        print(f"total: {_count(total, args.soft)} on {succeeded} of {len(nodes)} nodes", flush=True)
    failed = [o.node.name for o in outcomes if not o.ok]
    if failed:
        message = f"{len(failed)} of {len(nodes)} nodes failed ({', '.join(failed)})"
        if len(failed) < len(nodes):
            message += "; the others were purged"
        return _fail(message)
    return 0


def _reason(exc: Exception) -> str:
    """The OS's words for what failed under ``exc`` ("Connection refused"), else its own text."""
    cause: BaseException | None = exc
    for _ in range(10):  # httpx -> httpcore -> anyio -> the OSError; never loop on a cycle
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno is not None:
            return os.strerror(cause.errno) if cause.errno > 0 else str(cause.strerror or cause)
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    # httpx may carry OSError text like "[Errno 111] Connection refused"; keep the words.
    if "] " in text:
        text = text.split("] ", 1)[1]
    return text or type(exc).__name__
