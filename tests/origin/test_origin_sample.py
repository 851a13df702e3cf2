"""The bundled sample site: committed files, generated large files, idempotence."""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import zlib
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import httpx
import pytest
import zstandard
from origin_testsite import ServerThread  # type: ignore[import-not-found]

from origin import create_app, ensure_sample_site
from origin.rules import FINGERPRINT_CACHE_CONTROL, is_fingerprinted
from origin.sample import DATASET_SIZE, HERO_SIZE, SAMPLE_SITE, default_sample_dir


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_sample_site(tmp_path_factory.mktemp("sample") / "site")


def test_large_files_generated_with_expected_sizes(sample: Path) -> None:
    assert (sample / "downloads" / "dataset-20MiB.bin").stat().st_size == DATASET_SIZE == 20 * 2**20
    hero = sample / "img" / "hero.png"
    assert hero.stat().st_size == HERO_SIZE
    assert 1.8 * 2**20 < HERO_SIZE < 2.2 * 2**20


def test_large_files_not_committed() -> None:
    assert not (SAMPLE_SITE / "downloads").exists()
    assert not (SAMPLE_SITE / "img" / "hero.png").exists()
    assert sum(p.stat().st_size for p in SAMPLE_SITE.rglob("*") if p.is_file()) < 256 * 1024


def test_hero_is_a_valid_png(sample: Path) -> None:
    data = (sample / "img" / "hero.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width) and (depth, colour) == (8, 2)
    assert b"IEND" in chunks


def test_generated_files_are_deterministic_and_incompressible(sample: Path, tmp_path: Path) -> None:
    other = ensure_sample_site(tmp_path / "again")
    for rel in ("img/hero.png", "downloads/dataset-20MiB.bin"):
        a = hashlib.sha256((sample / rel).read_bytes()).digest()
        assert a == hashlib.sha256((other / rel).read_bytes()).digest()
    head = (sample / "downloads" / "dataset-20MiB.bin").read_bytes()[: 4 * 2**20]
    assert len(zstandard.ZstdCompressor(level=3).compress(head)) > 0.99 * len(head)


def test_idempotent(sample: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in sample.rglob("*") if p.is_file()}
    assert ensure_sample_site(sample) == sample
    after = {p: p.stat().st_mtime_ns for p in sample.rglob("*") if p.is_file()}
    assert after == before


def test_repairs_damage(tmp_path: Path) -> None:
    site = ensure_sample_site(tmp_path / "site")
    (site / "index.html").write_text("tampered")
    (site / "downloads" / "dataset-20MiB.bin").write_bytes(b"short")
    ensure_sample_site(site)
    assert (site / "index.html").read_bytes() == (SAMPLE_SITE / "index.html").read_bytes()
    assert (site / "downloads" / "dataset-20MiB.bin").stat().st_size == DATASET_SIZE


def test_default_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_sample_dir() == tmp_path / "edge-cdn" / "sample-site"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_sample_dir() == tmp_path / "home" / ".local" / "state" / "edge-cdn" / "sample-site"


def test_committed_assets_are_consistent() -> None:
    """Fingerprints match content; siblings decompress to the original; the page links them."""
    index = (SAMPLE_SITE / "index.html").read_text()
    assets = sorted((SAMPLE_SITE / "assets").glob("*.js")) + sorted((SAMPLE_SITE / "assets").glob("*.css"))
    assert {p.suffix for p in assets} == {".js", ".css"}
    for asset in assets:
        data = asset.read_bytes()
        digest = re.fullmatch(r"[a-z]+\.([0-9a-f]{8})\.(js|css)", asset.name)
        assert digest and hashlib.sha256(data).hexdigest()[:8] == digest.group(1)
        assert is_fingerprinted(asset.name)
        assert f"/assets/{asset.name}" in index
        assert brotli.decompress(asset.with_name(asset.name + ".br").read_bytes()) == data
        assert gzip.decompress(asset.with_name(asset.name + ".gz").read_bytes()) == data
        zst = asset.with_name(asset.name + ".zst").read_bytes()
        assert zstandard.ZstdDecompressor().decompress(zst, max_output_size=len(data)) == data
    js = next(p for p in assets if p.suffix == ".js")
    assert js.stat().st_size > 16 * 1024
    for ref in ("/img/logo.svg", "/img/hero.png", "/downloads/dataset-20MiB.bin", ".woff2"):
        assert ref in index


def test_sample_site_served(sample: Path) -> None:
    server = ServerThread(create_app(sample)).start()
    try:
        with httpx.Client(base_url=server.url) as c:
            page = c.get("/")
            assert page.status_code == 200 and "Driftwood Static" in page.text
            js = re.search(r'src="(/assets/app\.[0-9a-f]+\.js)"', page.text)
            assert js
            r = c.get(js.group(1), headers={"Accept-Encoding": "br"})
            assert r.headers["content-encoding"] == "br"
            assert r.headers["cache-control"] == FINGERPRINT_CACHE_CONTROL
            assert c.get("/img/logo.svg").headers["content-type"] == "image/svg+xml; charset=utf-8"
            assert c.get("/fonts/driftwood-placeholder.woff2").headers["content-type"] == "font/woff2"
            assert c.get("/data/manifest.json").json()["assets"]
            assert c.head("/img/hero.png").headers["content-type"] == "image/png"
            assert c.get("/.sample-site.json").status_code == 404  # the stamp file is hidden
    finally:
        server.stop()
