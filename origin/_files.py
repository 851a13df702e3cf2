"""Mapping request targets to files under the root, safely; content types; ETags.

Everything that decides *which file* a request may read lives here. Guarantees:

* The request path is taken from the raw (still percent-encoded) target, so an
  encoded ``/`` (``%2F``) or ``\\`` (``%5C``) can never act as a separator.
* Malformed targets → ``BadTarget`` (400): bad percent-escapes, invalid UTF-8,
  NUL or other control characters, backslashes (raw or encoded), encoded slashes.
* Hidden targets → ``None`` (404): any segment that is ``.``, ``..`` or starts
  with a dot (after decoding, so ``%2e%2e`` is caught too), anything whose real
  path (symlinks resolved) lies outside the root or passes through a dot-named
  component, and anything that is not a regular file or a directory with an
  ``index.html``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "BadTarget",
    "EtagCache",
    "Resolved",
    "Root",
    "content_type_for",
    "resolve_target",
    "split_target",
]

_TEXT = "; charset=utf-8"

CONTENT_TYPES: dict[str, str] = {
    "html": "text/html" + _TEXT,
    "htm": "text/html" + _TEXT,
    "js": "text/javascript" + _TEXT,
    "mjs": "text/javascript" + _TEXT,
    "css": "text/css" + _TEXT,
    "txt": "text/plain" + _TEXT,
    "csv": "text/csv" + _TEXT,
    "xml": "application/xml" + _TEXT,
    "svg": "image/svg+xml" + _TEXT,
    "json": "application/json",
    "map": "application/json",
    "webmanifest": "application/manifest+json",
    "wasm": "application/wasm",
    "woff2": "font/woff2",
    "woff": "font/woff",
    "ttf": "font/ttf",
    "otf": "font/otf",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "ico": "image/x-icon",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mp3": "audio/mpeg",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "bin": "application/octet-stream",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def content_type_for(name: str) -> str:
    """Content-Type by file extension (case-insensitive); octet-stream if unknown."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return DEFAULT_CONTENT_TYPE
    return CONTENT_TYPES.get(base.rsplit(".", 1)[1].lower(), DEFAULT_CONTENT_TYPE)


class BadTarget(ValueError):
    """The request target is malformed (→ 400)."""


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _decode_segment(raw: bytes) -> str:
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # '%'
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise BadTarget("bad percent-escape")
            c = int(pair, 16)
            if c == 0x2F:
                raise BadTarget("encoded slash")
            i += 3
        else:
            i += 1
        if c < 0x20 or c == 0x7F:
            raise BadTarget("control character")
        if c == 0x5C:
            raise BadTarget("backslash")
        out.append(c)
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget("invalid UTF-8") from None


def split_target(raw_path: bytes) -> list[str] | None:
    """Decode a raw path into segments; ``None`` for hidden ones (→ 404).

    Raises ``BadTarget`` for malformed targets (→ 400).
    """
    if not raw_path.startswith(b"/"):
        raise BadTarget("target must start with '/'")
    segments: list[str] = []
    for raw in raw_path[1:].split(b"/"):
        seg = _decode_segment(raw)
        if seg == "":
            continue  # "//" and a trailing "/" add nothing
        if seg.startswith("."):
            return None
        segments.append(seg)
    return segments


@dataclass(frozen=True, slots=True)
class Resolved:
    """A regular file under the root that a request may read."""

    path: str
    """Real (symlink-free) absolute path of the file."""
    rel: str
    """Path relative to the root as requested, ``/``-separated (for rules, types)."""


class Root:
    """The served directory, with containment checks against its real path."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.real = os.path.realpath(root)
        self._prefix = self.real.rstrip(os.sep) + os.sep

    def contains(self, real: str) -> bool:
        """True when ``real`` is inside the root and passes no dot-named component."""
        if real == self.real:
            return True
        if not real.startswith(self._prefix):
            return False
        return not any(part.startswith(".") for part in real[len(self._prefix) :].split(os.sep))

    def real_file(self, candidate: str) -> str | None:
        """The real path of ``candidate`` if it is a regular file inside the root."""
        real = os.path.realpath(candidate)
        if not self.contains(real):
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        return real if stat.S_ISREG(st.st_mode) else None


def resolve_target(root: Root, raw_path: bytes) -> Resolved | None:
    """The file a request for ``raw_path`` is answered from, or ``None`` (→ 404)."""
    segments = split_target(raw_path)
    if segments is None:
        return None
    candidate = os.path.join(root.real, *segments) if segments else root.real
    real = os.path.realpath(candidate)
    if not root.contains(real):
        return None
    try:
        st = os.stat(real)
    except OSError:
        return None
    rel = "/".join(segments)
    if stat.S_ISDIR(st.st_mode):
        index = root.real_file(os.path.join(real, "index.html"))
        if index is None:
            return None
        return Resolved(index, f"{rel}/index.html" if rel else "index.html")
    if not stat.S_ISREG(st.st_mode):
        return None
    return Resolved(real, rel)


def hash_fd(fd: int, size: int) -> str:
    """A strong entity tag from the SHA-256 of ``size`` bytes of an open file."""
    h = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
    return f'"sha256-{h.hexdigest()[:32]}"'


class EtagCache:
    """ETags keyed by (path, inode, size, mtime) so files are hashed once per version."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._map: OrderedDict[tuple[str, int, int, int, int], str] = OrderedDict()

    @staticmethod
    def key(path: str, st: os.stat_result) -> tuple[str, int, int, int, int]:
        return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def get(self, key: tuple[str, int, int, int, int]) -> str | None:
        etag = self._map.get(key)
        if etag is not None:
            self._map.move_to_end(key)
        return etag

    def put(self, key: tuple[str, int, int, int, int], etag: str) -> None:
        self._map[key] = etag
        self._map.move_to_end(key)
        while len(self._map) > self._max:
            self._map.popitem(last=False)

    def __len__(self) -> int:
        return len(self._map)
