"""``edge purge``: ask a node's admin API to purge, from a shell or a deploy script.

Prints the number of purged responses on stdout (first word, for scripts).
Any failure (unreachable admin port, refused token, bad request) is one line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx

__all__ = ["DEFAULT_ADMIN", "build_purge_parser", "purge_main"]

DEFAULT_ADMIN = "http://127.0.0.1:9090"


def build_purge_parser(prog: str = "edge purge") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Purge cached responses on an edge node through its admin API.",
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
        "--admin", default=DEFAULT_ADMIN, metavar="URL", help=f"admin API base URL (default {DEFAULT_ADMIN})"
    )
    parser.add_argument("--token", help="admin bearer token (default: env EDGE_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    return parser


def _fail(message: str) -> int:
    print(f"edge purge: error: {message}", file=sys.stderr)
    return 2


def purge_main(argv: list[str]) -> int:
    """Run ``edge purge`` with ``argv`` (without the subcommand); returns the exit status."""
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
    token = args.token if args.token is not None else os.environ.get("EDGE_ADMIN_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = args.admin.rstrip("/") + "/purge"
    try:
        # trust_env=False: the admin port is local; a proxy from the environment must not see the token.
        with httpx.Client(timeout=args.timeout, trust_env=False) as client:
            resp = client.post(url, json=body, headers=headers)
    except httpx.InvalidURL as exc:
        return _fail(f"bad --admin URL {args.admin!r}: {exc}")
    except httpx.UnsupportedProtocol:
        return _fail(f"bad --admin URL {args.admin!r}: use http:// or https://")
    except httpx.ConnectError as exc:
        return _fail(f"cannot reach the admin API at {args.admin}: {_reason(exc)}")
    except httpx.TimeoutException:
        return _fail(f"admin API at {args.admin} did not answer within {args.timeout:g}s")
    except httpx.HTTPError as exc:
        return _fail(f"admin API at {args.admin}: {_reason(exc)}")
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code != 200:
        reason = answer.get("error") if isinstance(answer, dict) else None
        message = f"admin API refused ({resp.status_code}): {reason or resp.text.strip()[:200]}"
        if resp.status_code == 401 and not token:
            message += " (pass --token or set EDGE_ADMIN_TOKEN)"
        return _fail(message)
    if not isinstance(answer, dict) or not isinstance(answer.get("purged"), int):
        return _fail(f"unexpected answer from {url}: {resp.text.strip()[:200]}")
    if answer.get("soft"):
        print(f"{answer['purged']} marked stale")
    else:
        print(f"{answer['purged']} purged")
    return 0


def _reason(exc: Exception) -> str:
    text = str(exc)
    # httpx wraps OSError text like "[Errno 111] Connection refused"; keep the words.
    if "] " in text:
        text = text.split("] ", 1)[1]
    return text or type(exc).__name__
