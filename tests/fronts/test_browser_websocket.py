"""A real browser's WebSocket through the edge over HTTP/2 (RFC 8441): Debian's headless
Chromium, driven by Playwright, loads a page from the edge over HTTPS (HTTP/2, the dev
certificate trusted by its SPKI hash as in test_browser_chromium) and the page opens
``new WebSocket("wss://...")`` on the same origin. Chromium takes an existing HTTP/2
connection for a WebSocket only when the server sent SETTINGS_ENABLE_CONNECT_PROTOCOL, so
the tunnel counted under h2 with status 200 proves the extended CONNECT path; the origin (a
`websockets` server that also serves the page) pushes three messages and echoes one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from edge.wiring.devcert import DevCert
from tests.fronts.test_browser_chromium import BROWSER_ARGS, CHROMIUM, pytestmark  # noqa: F401
from tests.support.nodes import start_secure_edge
from tests.support.waiting import eventually

PAGE = b"""<!doctype html><meta charset="utf-8"><title>live</title>
<script>
window.live = new Promise((resolve, reject) => {
  const ws = new WebSocket(`wss://${location.host}/push?from=page`);
  const got = [];
  ws.onmessage = (event) => {
    got.push(event.data);
    if (got.length === 3) ws.send("hello from the page");
    if (got.length === 4) { ws.close(); resolve(got); }
  };
  ws.onerror = () => reject(new Error("websocket error"));
});
</script>"""

CHECK = """
async () => ({
  messages: await window.live,
  navigation: performance.getEntriesByType("navigation")[0].nextHopProtocol,
})
"""


class PageOrigin:
    def __init__(self) -> None:
        self.websockets: list[tuple[str, dict[str, str]]] = []
        self.server: Server | None = None

    def page(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None  # the handshake goes on
        headers = Headers({"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(PAGE)),
                           "Cache-Control": "no-store"})  # fmt: skip
        return Response(200, "OK", headers, PAGE)

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.websockets.append((ws.request.path, {k.lower(): v for k, v in ws.request.headers.raw_items()}))
        for i in range(1, 4):
            await ws.send(f"push {i}")  # pushed: the page asked for nothing
            await asyncio.sleep(0.01)
        async for message in ws:
            await ws.send(f"echo: {message!s}")

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}"


@pytest_asyncio.fixture
async def page_origin() -> AsyncIterator[PageOrigin]:
    origin = PageOrigin()
    async with serve(origin.handler, "127.0.0.1", 0, process_request=origin.page) as server:
        origin.server = server
        yield origin


@pytest.mark.usefixtures("h2_engine")  # both HTTP/2 engines of the HTTPS front
async def test_chromium_websocket_over_h2_receives_pushed_messages(
    page_origin: PageOrigin, dev_cert: DevCert
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    node = await start_secure_edge(page_origin.url, dev_cert, "qh3", tls_front="own")
    origin = f"127.0.0.1:{node.port}"
    args = [*BROWSER_ARGS, "--disable-quic", f"--ignore-certificate-errors-spki-list={dev_cert.spki}"]
    try:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            try:
                page = await browser.new_page()
                response = await page.goto(f"https://{origin}/", wait_until="load")
                assert response is not None and response.status == 200
                result: dict[str, Any] = await page.evaluate(CHECK)
            finally:
                await browser.close()
        assert result["navigation"] == "h2", result
        assert result["messages"] == ["push 1", "push 2", "push 3", "echo: hello from the page"]
        path, fields = page_origin.websockets[0]
        assert path == "/push?from=page" and fields["upgrade"] == "websocket"
        assert fields["origin"] == f"https://{origin}"  # the page's Origin, forwarded
        await eventually(lambda: node.core.clients.tunnels == 0, "the tunnel ended")
        requests = node.core.requests.snapshot()["requests"]
        assert ["h2", 200, "none", 1] in requests, requests  # extended CONNECT over HTTP/2
        assert not any(row[0] == "h1" and row[1] == 101 for row in requests), requests
    finally:
        await node.stop()
