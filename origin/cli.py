"""The ``origin`` command.

::

    origin serve [--root DIR] [--listen HOST:PORT] [--rules FILE]
    origin sample-site [--dest DIR]

``serve`` runs the origin under Hypercorn (asyncio worker, uvloop when
installed). Without ``--root`` it serves the bundled sample site, materialised
by ``origin.sample.ensure_sample_site``. One access line per request goes to
stdout (format in ``origin.app.AccessLogMiddleware``); Hypercorn's own messages
go to stderr. Startup errors (bad flags, unreadable root, bad rules file, port
in use) print one line to stderr and exit non-zero, without a traceback.

``sample-site`` materialises the sample site and prints its directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:8000"


class StartupError(Exception):
    """A problem that stops the server from starting; the message is one line."""


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) → (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise StartupError(f"--listen must be HOST:PORT, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise StartupError(f"--listen port out of range: {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="origin", description="A static-asset origin server (Starlette on Hypercorn)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve a directory of static files")
    serve.add_argument(
        "--root",
        type=Path,
        help="directory to serve (default: the bundled sample site, generated on first use)",
    )
    serve.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--rules",
        type=Path,
        metavar="FILE",
        help="TOML file of [[rule]] glob/cache_control entries tried before the defaults",
    )
    sample = sub.add_parser("sample-site", help="materialise the sample site and print its path")
    sample.add_argument("--dest", type=Path, help="directory to write it to")
    return parser


def _configure_logging() -> None:
    access = logging.getLogger("origin.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def _serve(args: argparse.Namespace) -> int:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from origin.app import create_app
    from origin.rules import RulesError, load_rules
    from origin.sample import ensure_sample_site

    host, port = parse_listen(args.listen)
    try:
        rules = load_rules(args.rules) if args.rules is not None else None
    except RulesError as exc:
        raise StartupError(str(exc)) from None
    root: Path
    if args.root is None:
        try:
            root = ensure_sample_site()
        except OSError as exc:
            raise StartupError(f"cannot prepare the sample site: {exc}") from None
    else:
        root = args.root
    try:
        app = create_app(root, rules, access_log=True)
    except OSError as exc:
        raise StartupError(f"cannot serve {root}: {exc.args[0] if exc.args else exc}") from None
    except RulesError as exc:
        raise StartupError(str(exc)) from None

    # Bind here rather than inside Hypercorn so that "port in use" is reported
    # before anything else is printed, and so that port 0 reports the real port.
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {args.listen}: {reason}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound_host, bound_port = sock.getsockname()[:2]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None  # our own access line, see AccessLogMiddleware
    config.errorlog = "-"
    _configure_logging()
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(
        f"origin: serving {Path(root).resolve()} on http://{shown}:{bound_port}",
        file=sys.stderr,
        flush=True,
    )

    runner: asyncio.Runner
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(serve(app, config))  # type: ignore[arg-type]
    except KeyboardInterrupt:
        return 130
    return 0


def _sample_site(args: argparse.Namespace) -> int:
    from origin.sample import ensure_sample_site

    try:
        path = ensure_sample_site(args.dest)
    except OSError as exc:
        raise StartupError(f"cannot prepare the sample site: {exc}") from None
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``origin`` console command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        return _sample_site(args)
    except StartupError as exc:
        print(f"origin: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
