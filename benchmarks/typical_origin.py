"""An origin that answers every GET with one object and the fields real origins send.

``benchmarks.h1_hit`` puts both caches in front of it, so the hit each cache sends
carries a typical header block, not a minimal one: ``Server``, ``Date``,
``Last-Modified``, ``ETag``, ``Expires``, two ``Cache-Control`` lines,
``Accept-Ranges``, ``Content-Type`` and ``Content-Length``. Run:

    python -m benchmarks.typical_origin --listen 127.0.0.1:PORT --size 1024
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time
from email.utils import formatdate


def response(body: bytes) -> bytes:
    now = time.time()
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Server: origin/2.4 (Unix)\r\n"
        b"Date: %s\r\n"
        b"Last-Modified: %s\r\n"
        b'ETag: "%s"\r\n'
        b"Expires: %s\r\n"
        b"Cache-Control: public\r\n"
        b"Cache-Control: max-age=3600\r\n"
        b"Accept-Ranges: bytes\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n"
    ) % (
        formatdate(now, usegmt=True).encode(),
        formatdate(now - 86400, usegmt=True).encode(),
        hashlib.sha256(body).hexdigest()[:24].encode(),
        formatdate(now + 3600, usegmt=True).encode(),
        len(body),
    )
    return head + body


async def serve(host: str, port: int, body: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                answer = response(body)
                if head.startswith(b"HEAD "):
                    answer = answer[: len(answer) - len(body)]
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(serve(host, int(port), os.urandom(args.size)))


if __name__ == "__main__":
    main()
