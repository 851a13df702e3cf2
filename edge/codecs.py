"""Content codings the node produces itself: brotli, zstd and gzip (RFC 9110 §8.4.1).

Pure functions over bytes. Each releases the GIL while it works (zlib for large
inputs, brotli and zstandard always), so the core can run them in a thread pool
and a big compression never stalls the event loop.
"""

from __future__ import annotations

import zlib

import brotli  # type: ignore[import-untyped]
import zstandard

CODINGS = (b"br", b"zstd", b"gzip")


def compress(coding: bytes, data: bytes, level: int) -> bytes:
    """Encode ``data`` as a complete ``coding`` stream at ``level``."""
    if coding == b"br":
        return bytes(brotli.compress(data, quality=level))
    if coding == b"zstd":
        # Content size in the frame header lets decoders allocate once.
        return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)
    if coding == b"gzip":
        encoder = zlib.compressobj(level, zlib.DEFLATED, 31)
        return encoder.compress(data) + encoder.flush()
    raise ValueError(f"unsupported coding {coding!r}")


def decompress(coding: bytes, data: bytes) -> bytes:
    """Inverse of :func:`compress`, for tests and verification."""
    if coding == b"br":
        return bytes(brotli.decompress(data))
    if coding == b"zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if coding == b"gzip":
        return zlib.decompress(data, 31)
    raise ValueError(f"unsupported coding {coding!r}")
