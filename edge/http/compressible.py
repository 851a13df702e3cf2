"""Which media types are worth compressing on the way out.

Rules this module guarantees:
- the decision depends on the media type alone (parameters, case and
  surrounding whitespace are ignored); an absent or unparseable type is not
  compressed, since the node cannot know what the bytes are;
- compressible: ``text/*`` (except ``text/event-stream``, where compression's
  buffering would hold events back), JavaScript, JSON and any ``+json``, XML
  and any ``+xml`` (so SVG, RSS, Atom, XHTML, ``application/manifest+json``),
  wasm, YAML, TOML, GraphQL, fonts stored uncompressed (TrueType, OpenType,
  collections, EOT), and the uncompressed image formats BMP and ICO;
- not compressible: formats that are compressed already (other images, video,
  audio, WOFF/WOFF2, zip/gzip/brotli/zstd archives, PDF), opaque binary
  (``application/octet-stream``), and ``multipart/*``, whose parts carry their
  own types. Compressing those wastes CPU and can grow the body.
"""

from __future__ import annotations

__all__ = ["is_compressible"]

_TYPES = frozenset(
    {
        b"application/javascript",
        b"application/x-javascript",
        b"application/ecmascript",
        b"application/json",
        b"application/x-ndjson",
        b"application/xml",
        b"application/wasm",
        b"application/yaml",
        b"application/x-yaml",
        b"application/toml",
        b"application/graphql",
        b"application/x-sh",
        b"application/rtf",
        b"application/x-protobuf",
        b"application/vnd.ms-fontobject",  # EOT
        b"application/x-font-ttf",
        b"application/x-font-truetype",
        b"application/x-font-otf",
        b"application/x-font-opentype",
        b"application/font-sfnt",
        b"application/ttf",
        b"application/otf",
        b"font/ttf",
        b"font/otf",
        b"font/sfnt",
        b"font/collection",
        b"image/bmp",
        b"image/x-ms-bmp",
        b"image/x-icon",
        b"image/vnd.microsoft.icon",
    }
)
_NOT_TEXT = frozenset({b"text/event-stream"})
_SUFFIXES = (b"+json", b"+xml", b"+yaml")


def is_compressible(content_type: bytes | None) -> bool:
    """True when a response of this Content-Type shrinks usefully under br/zstd/gzip."""
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip(b" \t").lower()
    top, slash, sub = media.partition(b"/")
    if not slash or not top or not sub:
        return False
    if top == b"text":
        return media not in _NOT_TEXT
    return media in _TYPES or sub.endswith(_SUFFIXES)
