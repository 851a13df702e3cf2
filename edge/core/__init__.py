"""The protocol-neutral request handler every adapter calls.

It joins the sans-I/O rules in ``edge.cache`` with the I/O of ``edge.upstream``.
``EdgeCore`` is assembled from one module per concern: ``base`` (shared state
and response helpers), ``codings`` (compression), ``filling`` (fills,
collapsing, revalidation), ``slicing`` (large objects) and ``node`` (the hit
path and the request dispatcher).
"""

from edge.core.node import EdgeCore

__all__ = ["EdgeCore"]
