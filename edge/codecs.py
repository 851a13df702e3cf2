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

STREAM_LEVELS = {b"br": 4, b"zstd": 3, b"gzip": 4}
"""Levels for a body encoded as it streams (on the event loop): about 3 ms for 200 KiB of
JavaScript each, within 5 % of the stored variants' size at brotli 9 / zstd 19 / gzip 9."""


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


class StreamEncoder:
    """Encodes a body piece by piece as it arrives; every piece's output is flushed, so a
    decoder can read all of it at once and no piece waits for the next one."""

    __slots__ = ("_encode", "_finish", "_flush")

    def __init__(self, coding: bytes, level: int) -> None:
        if coding == b"br":
            brotli_encoder = brotli.Compressor(quality=level)
            self._encode, self._flush, self._finish = (
                brotli_encoder.process,
                brotli_encoder.flush,
                brotli_encoder.finish,
            )
        elif coding == b"zstd":
            zstd_encoder = zstandard.ZstdCompressor(level=level).compressobj()
            self._encode, self._finish = zstd_encoder.compress, zstd_encoder.flush
            self._flush = lambda: zstd_encoder.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        elif coding == b"gzip":
            gzip_encoder = zlib.compressobj(level, zlib.DEFLATED, 31)
            self._encode, self._finish = gzip_encoder.compress, gzip_encoder.flush
            self._flush = lambda: gzip_encoder.flush(zlib.Z_SYNC_FLUSH)
        else:
            raise ValueError(f"unsupported coding {coding!r}")

    def encode(self, data: bytes | memoryview) -> bytes:
        """The encoded bytes of ``data``, flushed."""
        return bytes(self._encode(data)) + bytes(self._flush())

    def finish(self) -> bytes:
        """The end of the stream."""
        return bytes(self._finish())
