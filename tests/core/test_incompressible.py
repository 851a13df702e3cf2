"""A compressible type whose body does not shrink: identity is served, for every coding, and kept once."""

from __future__ import annotations

import os

import pytest

from tests.support.nodes import Edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

pytestmark = pytest.mark.asyncio

NOISE = os.urandom(4096)  # a stylesheet in name only: brotli, zstd and gzip all make it longer
CSS = [("Content-Type", "text/css"), ("Cache-Control", "max-age=600"), ("ETag", '"n1"')]


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
async def test_a_body_that_does_not_shrink_is_served_identity(
    origin: ScriptedOrigin, edge: Edge, coding: str
) -> None:
    origin.routes["/noise.css"] = fixed(200, NOISE, CSS)
    async with edge.client() as client:
        for i in range(3):  # the miss (it compresses, inline: 4 KiB), then hits
            resp = await client.get("/noise.css", headers={"Accept-Encoding": coding})
            assert resp.status_code == 200
            if i == 0:  # encoded as it streamed, before anyone could know it would not shrink
                assert resp.headers["content-encoding"] == coding
            else:
                assert "content-encoding" not in resp.headers
            assert resp.content == NOISE
    assert resp.headers["x-cache"] == "HIT"
    assert edge.core.compressions[coding.encode()] == 1
    assert edge.core.stats()["bytes"] < 2 * len(NOISE), "no second copy of the same bytes"
    assert origin.count("/noise.css") == 1
