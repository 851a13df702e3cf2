"""A real browser over HTTP/3 and HTTP/2: Debian's headless Chromium, driven by Playwright's Python package.

Chromium is forced onto QUIC for the edge's origin (``--origin-to-force-quic-on``)
and trusts the dev certificate by its SPKI hash only, so the page, its
assets and a script ``fetch`` all travel over our HTTP/3 adapter; the test
reads ``nextHopProtocol`` from the page's performance entries and checks a
fetched asset's length and SHA-256 computed in the page (``crypto.subtle``).

Never downloads a browser: it uses ``/usr/bin/chromium`` (``apt-get install
chromium``; ``.ci/run`` does it) and skips with the reason when it is absent.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edge.wiring.devcert import DevCert
from tests.support.nodes import SecureEdge, start_secure_edge

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian package chromium is not installed"),
]


PAGE_CHECK = """
async (asset) => {
  const response = await fetch(asset);
  const bytes = await response.arrayBuffer();
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  await new Promise((r) => setTimeout(r, 50));  // let the fetch's resource entry land
  return {
    navigation: performance.getEntriesByType("navigation")[0].nextHopProtocol,
    resources: performance.getEntriesByType("resource").map((e) => [e.name, e.nextHopProtocol]),
    status: response.status,
    length: bytes.byteLength,
    sha256: hex,
    xcache: response.headers.get("x-cache"),
  };
}
"""


@pytest.fixture(scope="module")
def sample_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from origin.sample import ensure_sample_site

    return ensure_sample_site(tmp_path_factory.mktemp("sample-site"))


@pytest_asyncio.fixture
async def site_origin(sample_site: Path) -> AsyncIterator[str]:
    """The real origin package serving the bundled sample site, in this event loop."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from edge.wiring.tls import bind_many
    from origin import create_app

    sock = bind_many("127.0.0.1:0", __import__("socket").SOCK_STREAM, reuse_port=False)[0]
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve(create_app(sample_site), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    stop.set()
    await asyncio.wait_for(task, 10)


BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def load_demo_page(edge: SecureEdge, dev_cert: DevCert, protocol_args: list[str]) -> dict[str, Any]:
    """Chromium loads the demo page from ``edge``, then fetches an asset from a script."""
    playwright_api = pytest.importorskip("playwright.async_api")
    origin = f"127.0.0.1:{edge.port}"
    args = [*BROWSER_ARGS, *protocol_args, f"--ignore-certificate-errors-spki-list={dev_cert.spki}"]
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = await browser.new_page()
            response = await page.goto(f"https://{origin}/index.html", wait_until="load")
            assert response is not None and response.status == 200
            result: dict[str, Any] = await page.evaluate(PAGE_CHECK, "/img/hero.png?fetched-by-script")
        finally:
            await browser.close()
    return result


def check_demo_page(result: dict[str, Any], origin: str, sample_site: Path, protocol: str) -> None:
    hero = (sample_site / "img" / "hero.png").read_bytes()
    assert result["navigation"] == protocol, result
    resources = dict(result["resources"])
    loaded = [name for name in resources if name.startswith(f"https://{origin}/")]
    assert any(name.endswith(".css") for name in loaded) and any(name.endswith(".js") for name in loaded)
    assert all(resources[name] == protocol for name in loaded), resources
    assert result["status"] == 200 and result["length"] == len(hero)
    assert result["sha256"] == hashlib.sha256(hero).hexdigest()
    assert result["xcache"] == "MISS"  # a URL the page had not loaded: filled through the edge
    assert resources[f"https://{origin}/img/hero.png?fetched-by-script"] == protocol


# qh3 (2.1.0) needs edge.fronts.qh3_io's zero-length connection ID fix for Chromium: without
# it the handshake never completes (Chromium sends an empty Source Connection ID; qh3 replies
# to the wrong one and rejects the empty initial_source_connection_id). This case is its test.
@pytest.mark.parametrize("backend", ["aioquic", "qh3"])
async def test_chromium_loads_the_demo_page_over_h3(
    site_origin: str, dev_cert: DevCert, sample_site: Path, backend: str
) -> None:
    edge: SecureEdge = await start_secure_edge(site_origin, dev_cert, backend)
    origin = f"127.0.0.1:{edge.port}"
    try:
        result = await load_demo_page(edge, dev_cert, [f"--origin-to-force-quic-on={origin}"])
    finally:
        await edge.stop()
    check_demo_page(result, origin, sample_site, "h3")


@pytest.mark.usefixtures("h2_engine")
async def test_chromium_loads_the_demo_page_over_h2(
    site_origin: str, dev_cert: DevCert, sample_site: Path
) -> None:
    """The HTTPS front as a browser uses it: a browser's field blocks (HPACK with its
    dynamic table, many fields) through the one-pass request check, and responses in
    the front's stateless HPACK, decoded by Chromium's own HPACK."""
    edge: SecureEdge = await start_secure_edge(site_origin, dev_cert, "qh3", tls_front="own")
    origin = f"127.0.0.1:{edge.port}"
    try:
        result = await load_demo_page(edge, dev_cert, ["--disable-quic"])
    finally:
        await edge.stop()
    check_demo_page(result, origin, sample_site, "h2")
