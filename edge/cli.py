"""The ``edge`` command: ``edge serve`` runs a node, ``edge demo`` a whole site on one machine.

Startup problems (bad config, busy port, missing upstream) print one line and
exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edge import config as edge_config
from edge.config import Config, ConfigError


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for f in edge_config.settings():
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_text = f"{f.metadata['help']} (env EDGE_{f.name.upper()}; default {default!r})"
        if f.metadata["kind"] == "bool":
            # ``--dev-cert`` alone means true; ``--dev-cert false`` also works.
            parser.add_argument(flag, dest=f.name, default=None, nargs="?", const="true", help=help_text)
        elif f.metadata.get("repeat"):
            parser.add_argument(flag, dest=f.name, default=None, action="append", help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="Edge cache / CDN node.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run an edge node in front of an upstream",
        description="Run an edge node. Settings come from --config (TOML), then EDGE_* "
        "environment variables, then these flags; flags win.",
    )
    serve.add_argument("--config", type=Path, help="TOML file with settings (top level or [edge])")
    _add_setting_flags(serve)

    sub.add_parser(
        "purge",
        help="purge cached objects through a node's admin API (edge purge --help)",
        add_help=False,
    )

    demo = sub.add_parser(
        "demo", help="run an origin with the bundled sample site and an edge in front of it"
    )
    demo.add_argument("--origin-listen", default="127.0.0.1:8000")
    demo.add_argument("--listen", default="127.0.0.1:8080")
    demo.add_argument("--admin-listen", default="127.0.0.1:9090", help="admin API; empty disables it")
    demo.add_argument("--cache-size", default="512MiB")
    demo.add_argument(
        "--tls-port", type=int, default=8443, help="HTTPS and HTTP/3 port on 127.0.0.1 and ::1; 0 disables"
    )
    return parser


def _fail(message: str) -> int:
    print(f"edge: error: {message}", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    flags: dict[str, Any] = {f.name: getattr(args, f.name) for f in edge_config.settings()}
    try:
        config = edge_config.load(args.config, os.environ, flags)
    except ConfigError as exc:
        return _fail(str(exc))
    return _run(config, source=edge_config.ConfigSource(args.config, flags))


def _run(config: Config, banner: str | None = None, source: edge_config.ConfigSource | None = None) -> int:
    from edge.wiring.process import StartupError, run

    def ready() -> None:
        print(banner or f"edge: serving http://{config.listen}/ from {config.upstream}", flush=True)

    try:
        run(config, ready, source)
    except StartupError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot listen on {config.listen}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo

    return run_demo(
        args.origin_listen, args.listen, args.admin_listen, args.cache_size, _fail, _run, args.tls_port
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["purge"]:
        from edge.admin.client import purge_main

        return purge_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    return cmd_demo(args)


if __name__ == "__main__":
    sys.exit(main())
