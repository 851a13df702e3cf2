"""What the admin API asks of a node, whether it runs one worker or several.

The admin API never reaches into the core: it calls :class:`NodeOps`. One worker is
:class:`LocalNode` (the core's own ``purge()`` and ``stats()``); a node of several
workers is ``edge.wiring.workers.WorkerGroup``, which asks every worker over its
private control socket and adds up the answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from edge.cache.purge import PurgeKind
from edge.core import EdgeCore

__all__ = ["LocalNode", "NodeOps"]


class NodeOps(Protocol):
    """Purge and stats for a whole node."""

    name: str
    node_id: str
    """The node's id (CDN-Loop): a purge passed round a loop of peers stops where it was."""

    async def purge(self, kind: PurgeKind, target: str, soft: bool) -> dict[str, Any]:
        """``{"purged": N, ...}``: N stored responses purged (or marked stale) on the node.

        Raises ``edge.cache.purge.PurgeError`` for a target no key could be.
        """
        ...

    async def stats(self) -> dict[str, Any]:
        """The node's counters (``EdgeCore.stats()`` keys, summed over workers). One worker
        also gives ``upstreams`` (health and counters of each upstream), ``worker`` and
        ``pid``; several give ``workers``, each worker's own figures in that form (a worker
        that did not answer: ``{"error": ...}``)."""
        ...


class LocalNode:
    """A node of one worker: the core in this process."""

    def __init__(
        self, core: EdgeCore, worker: int = 0, fronts: Callable[[], dict[str, int]] | None = None
    ) -> None:
        """``fronts`` adds the protocol fronts' own counters (e.g. HTTP/3 connections)."""
        self.core = core
        self.worker = worker
        self.fronts = fronts
        self.name = core.config.name
        self.node_id = core.node_id

    async def purge(self, kind: PurgeKind, target: str, soft: bool) -> dict[str, Any]:
        purged = self.core.purge(kind, target, soft=soft)
        await self.core.flush_purges()  # the disk tier's purge log: a restart does not undo it
        return {"purged": purged}

    async def stats(self) -> dict[str, Any]:
        return {
            **self.core.stats(),
            **(self.fronts() if self.fronts is not None else {}),
            "upstreams": self.core.upstreams(),
            "worker": self.worker,
            "pid": os.getpid(),
        }
