"""The bundled sample site, and the large files it needs but git should not hold.

``origin/sample_site/`` (committed) has the page, fingerprinted JS and CSS with
their ``.br``/``.zst``/``.gz`` siblings, an SVG, a placeholder font and a small
JSON manifest. ``ensure_sample_site()`` copies it into a per-user state
directory and generates, deterministically and idempotently:

* ``img/hero.png`` — a real 1024x680 RGB PNG (a noisy dusk gradient), ≈2 MiB,
  stored uncompressed inside the PNG so its size is exact and it does not
  shrink under compression;
* ``downloads/dataset-20MiB.bin`` — exactly 20 MiB of SHAKE-256 output.

Both are pure functions of a version string, so every machine produces the
same bytes. A stamp file (a dotfile, hence never served) records what was
generated so a second call does no work.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "DATASET_SIZE",
    "HERO_SIZE",
    "SAMPLE_SITE",
    "default_sample_dir",
    "ensure_sample_site",
    "hero_png_chunks",
    "write_precompressed",
]

SAMPLE_SITE = Path(__file__).resolve().parent / "sample_site"
GENERATOR_VERSION = "edge-cdn sample v1"
STAMP = ".sample-site.json"

HERO_WIDTH, HERO_HEIGHT = 1024, 680
_HERO_RAW = HERO_HEIGHT * (1 + 3 * HERO_WIDTH)
_STORED_BLOCK = 65535
_HERO_BLOCKS = -(-_HERO_RAW // _STORED_BLOCK)
#: Exact size of img/hero.png: signature, IHDR, one IDAT of stored deflate blocks, IEND.
HERO_SIZE = 8 + (12 + 13) + (12 + 2 + 5 * _HERO_BLOCKS + _HERO_RAW + 4) + 12
DATASET_SIZE = 20 * 1024 * 1024


def default_sample_dir() -> Path:
    """``$XDG_STATE_HOME/edge-cdn/sample-site`` or ``~/.local/state/edge-cdn/sample-site``."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "edge-cdn" / "sample-site"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _hero_rows() -> Iterator[bytes]:
    """Scanlines (filter byte 0 + RGB) of a dusk gradient with per-pixel noise."""
    top, bottom = (24, 32, 78), (236, 140, 72)
    for y in range(HERO_HEIGHT):
        t = y / (HERO_HEIGHT - 1)
        noise = hashlib.shake_256(f"{GENERATOR_VERSION} hero {y}".encode()).digest(3 * HERO_WIDTH)
        row = bytearray(1 + 3 * HERO_WIDTH)
        for channel in range(3):
            base = round(top[channel] + (bottom[channel] - top[channel]) * t) - 24
            table = bytes(min(255, max(0, base + (v >> 2))) for v in range(256))
            part = noise[channel * HERO_WIDTH : (channel + 1) * HERO_WIDTH]
            row[1 + channel :: 3] = part.translate(table)
        yield bytes(row)


def hero_png_chunks() -> Iterator[bytes]:
    """The bytes of img/hero.png, in pieces (``HERO_SIZE`` in total)."""
    yield b"\x89PNG\r\n\x1a\n"
    yield _png_chunk(b"IHDR", struct.pack(">IIBBBBB", HERO_WIDTH, HERO_HEIGHT, 8, 2, 0, 0, 0))
    raw = b"".join(_hero_rows())
    # zlib stream of stored (uncompressed) deflate blocks: byte-exact on every zlib.
    parts = [b"\x78\x01"]
    for offset in range(0, len(raw), _STORED_BLOCK):
        block = raw[offset : offset + _STORED_BLOCK]
        final = 1 if offset + _STORED_BLOCK >= len(raw) else 0
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    parts.append(struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF))
    yield _png_chunk(b"IDAT", b"".join(parts))
    yield _png_chunk(b"IEND", b"")


def _dataset_chunks() -> Iterator[bytes]:
    mib = 1024 * 1024
    for i in range(DATASET_SIZE // mib):
        yield hashlib.shake_256(f"{GENERATOR_VERSION} dataset {i}".encode()).digest(mib)


GENERATED: dict[str, tuple[int, Callable[[], Iterator[bytes]]]] = {
    "img/hero.png": (HERO_SIZE, hero_png_chunks),
    "downloads/dataset-20MiB.bin": (DATASET_SIZE, _dataset_chunks),
}


def _write_atomic(path: Path, chunks: Iterator[bytes] | list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _committed_files() -> Iterator[Path]:
    for path in sorted(SAMPLE_SITE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


def ensure_sample_site(dest: Path | None = None) -> Path:
    """Materialise the sample site in ``dest`` (default ``default_sample_dir()``).

    Copies the committed files that are missing or differ, and generates the
    large files if they are missing or the wrong size. Calling it again changes
    nothing (no file is rewritten, so mtimes and ETags stay put). Returns the
    directory.
    """
    dest = Path(dest) if dest is not None else default_sample_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for src in _committed_files():
        target = dest / src.relative_to(SAMPLE_SITE)
        data = src.read_bytes()
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        _write_atomic(target, [data])

    stamp_path = dest / STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    changed = stamp.get("version") != GENERATOR_VERSION
    for rel, (size, produce) in GENERATED.items():
        target = dest / rel
        try:
            fresh = not changed and target.stat().st_size == size
        except FileNotFoundError:
            fresh = False
        if not fresh:
            _write_atomic(target, produce())
            changed = True
    if changed:
        record = {"version": GENERATOR_VERSION, "files": {k: v[0] for k, v in GENERATED.items()}}
        _write_atomic(stamp_path, [json.dumps(record, indent=2).encode() + b"\n"])
    return dest


def write_precompressed(path: Path) -> list[Path]:
    """Write ``path.br``, ``path.zst`` and ``path.gz`` beside ``path`` (maintainer tool).

    Deterministic output: brotli quality 11, zstd level 19, gzip level 9 with
    mtime 0 and no file name, so re-running it does not churn the repository.
    """
    import brotli  # type: ignore[import-untyped]
    import zstandard

    data = path.read_bytes()
    outputs = {
        ".br": brotli.compress(data, quality=11),
        ".zst": zstandard.ZstdCompressor(level=19).compress(data),
        ".gz": gzip.compress(data, compresslevel=9, mtime=0),
    }
    written = []
    for suffix, blob in outputs.items():
        target = path.with_name(path.name + suffix)
        target.write_bytes(blob)
        written.append(target)
    return written
