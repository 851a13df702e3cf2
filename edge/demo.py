"""``edge demo``: the bundled sample site behind an origin, and an edge in front of it."""

from __future__ import annotations

import atexit
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge import config as edge_config
from edge.config import Config, ConfigError, parse_listen


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (a bind test, as the origin will bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _sample_urls(root: Path, base: str) -> list[str]:
    wanted = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue  # the generator's stamp file; the origin never serves dotfiles
        if path.is_file() and not path.name.endswith((".br", ".gz", ".zst")):
            wanted.append(base + "/" + relative.as_posix())
    return wanted


def _loopbacks(port: int) -> str:
    """``127.0.0.1:PORT`` plus ``[::1]:PORT`` where IPv6 loopback exists (browsers try ::1 first)."""
    listen = [f"127.0.0.1:{port}"]
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        listen.append(f"[::1]:{port}")
    except OSError:
        pass
    return ",".join(listen)


def run_demo(
    origin_listen: str,
    listen: str,
    admin_listen: str,
    cache_size: str,
    fail: Callable[[str], int],
    run: Callable[[Config, str], int],
    tls_port: int = 8443,
) -> int:
    """Start the origin as a child process, then run the edge in this one."""
    from origin.sample import ensure_sample_site

    try:
        origin_host, origin_port = parse_listen(origin_listen)
        parse_listen(listen)
        root = ensure_sample_site()
    except (ConfigError, OSError) as exc:
        return fail(str(exc))
    if not _port_free(origin_host, origin_port):
        # Another server there would answer _wait_for_port and be cached in the origin's place.
        return fail(f"cannot listen on {origin_listen} for the origin: the port is in use (--origin-listen)")
    origin = subprocess.Popen(
        [sys.executable, "-c", "import sys; from origin.cli import main; sys.exit(main())",
         "serve", "--root", str(root), "--listen", origin_listen],
    )  # fmt: skip
    atexit.register(origin.terminate)
    if not _wait_for_port(origin_host, origin_port, origin, timeout=15):
        origin.terminate()
        return fail(f"the origin did not start on {origin_listen} (is the port in use?)")
    token = secrets.token_urlsafe(18)
    try:
        flags = {
            "upstream": f"http://{origin_listen}",
            "listen": listen,
            "cache_size": cache_size,
            "admin_listen": admin_listen,
            "admin_token": token,
        }
        if tls_port:
            secure = _loopbacks(tls_port)
            flags.update(tls_listen=secure, quic_listen=secure, dev_cert="true")
        else:
            flags.update(tls_listen="", quic_listen="")
        config = edge_config.load(None, {}, flags)
    except ConfigError as exc:
        origin.terminate()
        return fail(str(exc))
    base = f"http://{listen}"
    lines = [
        f"origin: http://{origin_listen}/ serving {root}",
        f"edge:   {base}/  (cache {cache_size}; Ctrl-C stops both)",
        "open:",
        *(f"  {url}" for url in _sample_urls(root, base)),
        f"try:    curl -sI {base}/robots.txt | grep -i -e x-cache -e cache-status  (twice: MISS, then HIT)",
    ]
    if tls_port:
        from edge.wiring.devcert import ensure_dev_cert

        spki = ensure_dev_cert().spki
        https = f"https://localhost:{tls_port}"
        lines += [
            f"https:  {https}/index.html  (HTTP/2; HTTP/3 on udp {tls_port}, advertised by Alt-Svc)",
            f"chrome: chromium --user-data-dir=$(mktemp -d) --origin-to-force-quic-on=localhost:{tls_port} "
            f"--ignore-certificate-errors-spki-list={spki} {https}/index.html",
            f"curl:   curl --cacert {ensure_dev_cert().ca} -sI {https}/index.html",
        ]
    if admin_listen:
        lines += [
            f"admin:  http://{admin_listen}/stats (Authorization: Bearer {token})",
            f"purge:  edge purge --admin http://{admin_listen} --token {token} {base}/robots.txt",
        ]
    try:
        return run(config, "\n".join(lines))
    finally:
        origin.terminate()
        try:
            origin.wait(timeout=5)
        except subprocess.TimeoutExpired:
            origin.kill()
