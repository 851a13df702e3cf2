"""An edge cache and static-asset CDN node.

The package is split the way DESIGN.md describes: ``edge.http`` parses header
fields, ``edge.cache`` holds the sans-I/O caching rules and the store wrapper,
``edge.upstream`` talks to the shield or origin, ``edge.serve`` holds the
protocol adapters, and ``edge.core`` is the one protocol-neutral request
handler every adapter calls.
"""

__version__ = "0.1.0"
