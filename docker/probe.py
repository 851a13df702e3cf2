"""Client side of the container checks (run on the host, or in the image with --network host).

    python docker/probe.py http URL [HOST]          -> prints "status x-cache | cache-status"
    python docker/probe.py h3 HOST PORT PATH CAFILE -> GETs PATH twice, prints "status length | cache-status"

Standard library only for http; HTTP/3 uses the project's test client (tests/support/h3client.py,
aioquic), which verifies the server's chain against the dev CA.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from pathlib import Path


def http(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            status, headers = resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, exc.headers
    # Cache-Status may come as several field lines (one member per cache): join them in order.
    print(status, headers.get("X-Cache", "-"), "|", ", ".join(headers.get_all("Cache-Status") or ["-"]))
    return 0


async def _h3(host: str, port: int, path: str, cafile: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.h3client import h3_client

    ok = True
    for _ in range(2):  # two connections: the first request fills https://..., the second hits
        async with asyncio.timeout(15):
            async with h3_client(host, port, cafile) as client:
                resp = await client.request(path)
        print(resp.status, len(resp.body), "|", resp.header("cache-status") or "-")
        ok = ok and resp.status == 200
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if argv[0] == "http":
        return http(argv[1], argv[2] if len(argv) > 2 else None)
    if argv[0] == "h3":
        return asyncio.run(_h3(argv[1], int(argv[2]), argv[3], argv[4]))
    raise SystemExit(f"unknown probe {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
