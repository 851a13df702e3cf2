"""One node, several workers: where each worker listens for its siblings, and the node's admin view.

With ``--workers N`` every worker serves the public ports (SO_REUSEPORT, HTTP/3 too) and
keeps its own memory cache, and the workers act as one cache towards the outside:

- each key has one owning worker (rendezvous over the workers, ``edge.upstream.router``);
  another worker that misses asks the owner over the owner's *cache socket*, so the
  node fetches each object from its shields or origin once, whatever N is;
- each worker also answers the admin API's purge and stats on its *control socket*;
  the first worker's public admin API (:class:`WorkerGroup`) asks every worker and
  adds up the answers, so a purge reaches the whole node and /stats counts all of it.

Both sockets live in a directory made for the node (mode 0700): only the node's user
can connect, which is what lets a sibling's ``Edge-Internal`` field be believed and
the control API take a token made at start, never configured.

A purge runs twice over the workers. Once is not enough: a worker purged first may
refetch the object from its owner before the owner's own purge, and keep the old
bytes; the second pass removes what the first let back in (and discards fills under
way), at the cost of one more scan. Purges are rare; correctness is not.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edge.admin.node import LocalNode
from edge.cache.purge import PurgeError, PurgeKind

__all__ = ["WorkerGroup", "WorkerPlace", "invalidate_on_siblings", "make_run_dir"]

CONTROL_TIMEOUT = 30.0
"""Seconds a worker may take to answer a purge or stats request (a prefix scan of a big cache)."""


async def invalidate_on_siblings(place: WorkerPlace, keys: list[bytes]) -> None:
    """Drop ``keys`` on the node's other workers (after an unsafe method here): best effort,
    a worker that does not answer keeps its copy until it expires."""
    headers = {"Authorization": f"Bearer {place.control_token}"}
    for index in range(place.count):
        if index == place.index:
            continue
        transport = httpx.AsyncHTTPTransport(uds=place.control_socket(index))
        try:
            async with httpx.AsyncClient(
                transport=transport, timeout=CONTROL_TIMEOUT, trust_env=False
            ) as client:
                for key in keys:
                    await client.post(
                        "http://worker/purge", json={"url": key.decode("latin-1")}, headers=headers
                    )
        except httpx.HTTPError:
            continue


def make_run_dir() -> Path:
    """A fresh private directory (0700) for the node's worker sockets."""
    return Path(tempfile.mkdtemp(prefix="edge-node-"))


@dataclass(frozen=True)
class WorkerPlace:
    """Where one worker sits in its node."""

    index: int
    count: int
    run_dir: Path
    control_token: str

    def cache_socket(self, index: int) -> str:
        return str(self.run_dir / f"cache-{index}.sock")

    def control_socket(self, index: int) -> str:
        return str(self.run_dir / f"control-{index}.sock")

    def siblings(self) -> list[str | None]:
        """The cache socket of every worker, in order, None for this one (``EdgeCore``'s ``siblings``)."""
        return [None if i == self.index else self.cache_socket(i) for i in range(self.count)]

    def remove(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


class WorkerGroup:
    """The admin API's view of a node of several workers (``edge.admin.node.NodeOps``)."""

    def __init__(self, local: LocalNode, place: WorkerPlace) -> None:
        self.local = local
        self.place = place
        self.name = local.name
        self.node_id = local.node_id

    async def _ask(
        self, index: int, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One control request to worker ``index``; raises ``httpx.HTTPError`` or ``PurgeError``."""
        transport = httpx.AsyncHTTPTransport(uds=self.place.control_socket(index))
        headers = {"Authorization": f"Bearer {self.place.control_token}"}
        async with httpx.AsyncClient(transport=transport, timeout=CONTROL_TIMEOUT, trust_env=False) as client:
            resp = await client.request(method, "http://worker" + path, json=body, headers=headers)
        try:
            answer: dict[str, Any] = resp.json()
        except ValueError:
            raise httpx.HTTPError(f"worker {index} answered {resp.status_code} without JSON") from None
        if resp.status_code == 400:
            raise PurgeError(answer.get("error", "refused"))
        resp.raise_for_status()
        return answer

    async def _each(
        self,
        local: Callable[[], Awaitable[dict[str, Any]]],
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The same request to every worker, in worker order: ``local`` for this one, the control
        socket for the others. A worker that does not answer gives ``{"error": ...}``."""

        async def one(index: int) -> dict[str, Any]:
            if index == self.place.index:
                return await local()
            try:
                return await self._ask(index, method, path, body)
            except httpx.HTTPError as exc:
                return {"error": f"worker {index}: {exc or type(exc).__name__}"}

        return list(await asyncio.gather(*(one(i) for i in range(self.place.count))))

    async def purge(self, kind: PurgeKind, target: str, soft: bool) -> dict[str, Any]:
        body: dict[str, Any] = {kind: True if kind == "all" else target, "soft": soft}

        def local() -> Awaitable[dict[str, Any]]:
            return self.local.purge(kind, target, soft)

        first = await self._each(local, "POST", "/purge", body)
        await self._each(
            local, "POST", "/purge", body
        )  # see the module docstring: what the first let back in
        errors = [answer["error"] for answer in first if "error" in answer]
        return {
            "purged": sum(answer.get("purged", 0) for answer in first),
            "workers": [
                {"worker": i, **({"error": a["error"]} if "error" in a else {"purged": a["purged"]})}
                for i, a in enumerate(first)
            ],
            **({"errors": errors} if errors else {}),
        }

    async def stats(self) -> dict[str, Any]:
        workers = await self._each(self.local.stats, "GET", "/stats")
        totals: Counter[str] = Counter()
        for answer in workers:
            for key, value in answer.items():
                if isinstance(value, int) and not isinstance(value, bool) and key not in ("worker", "pid"):
                    totals[key] += value
        for i, answer in enumerate(workers):
            answer.setdefault("worker", i)
        return {**totals, "workers": workers}
