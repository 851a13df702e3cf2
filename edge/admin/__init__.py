"""The admin API on its own port: purge, stats, health, readiness, Prometheus metrics.

``create_admin_app`` builds the Starlette app, ``serve_admin`` runs it under
Hypercorn in the node's event loop, and ``purge_main`` is ``edge purge``.
"""

from edge.admin.app import create_admin_app
from edge.admin.server import bind_admin, serve_admin

__all__ = ["bind_admin", "create_admin_app", "serve_admin"]
