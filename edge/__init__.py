"""An edge cache and static-asset CDN node.

Layers, each importing only from those before it (``lint-imports`` checks it):
``edge.config`` and ``edge.codecs`` (leaves), ``edge.http`` (header fields),
``edge.cache`` (the sans-I/O caching rules and the memory tier), ``edge.upstream``
(the pooled client and in-flight fills), ``edge.core`` (the one request handler),
``edge.fronts`` and ``edge.admin`` (protocols and the operator API), ``edge.wiring``
(processes and listeners) and ``edge.cli``. ``docs/architecture.md`` describes each.
"""

__version__ = "0.1.0"
