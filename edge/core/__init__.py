"""The protocol-neutral request handler every front calls.

It joins the sans-I/O rules in ``edge.cache`` with the I/O of ``edge.upstream``.
``EdgeCore`` (``node``) is a facade over parts with one concern each: ``gateway``
(requests upstream), ``respond`` (writing responses), ``forward`` (pass-through),
``slices`` (large objects), ``fills`` (collapsed fetches), ``codings`` (compression);
``sink`` is the seam a front implements to receive a response.
"""

from edge.core.node import EdgeCore
from edge.core.sink import ResponseSink

__all__ = ["EdgeCore", "ResponseSink"]
