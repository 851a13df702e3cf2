"""Passing a purge to the nodes further up (shields) before purging this one.

An edge that refetches an object while a purge runs must get the new one: so the
node's ``purge_peers`` (the admin APIs of its shields) are purged first, in the order
given, and this node after them. Each peer does the same with its own peers, so a
purge at an edge reaches every tier above it.

Guarantees:
- a peer that fails (unreachable, refused, timed out) does not stop the purge: the
  others and this node are still purged, and the answer names the failure;
- a purge never goes round in circles: it carries the ids of the nodes it has passed
  (``seen``), and a node that finds its own id there answers without purging or
  passing it on;
- peers are called with this node's admin token (a fleet shares one) and never
  through a proxy from the environment.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["PEER_TIMEOUT", "purge_peers"]

PEER_TIMEOUT = 30.0
"""Seconds a peer may take to purge (and to pass the purge on to its own peers)."""


async def purge_peers(peers: list[str], body: dict[str, Any], token: str) -> list[dict[str, Any]]:
    """POST ``body`` to each peer's /purge in order; one result per peer, ``purged`` or ``error``."""
    results: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=PEER_TIMEOUT, trust_env=False) as client:
        for admin in peers:
            result: dict[str, Any] = {"admin": admin}
            try:
                resp = await client.post(admin.rstrip("/") + "/purge", json=body, headers=headers)
                answer = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                result["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                results.append(result)
                continue
            if resp.status_code != 200 or not isinstance(answer, dict) or "purged" not in answer:
                reason = answer.get("error") if isinstance(answer, dict) else None
                result["error"] = f"{resp.status_code}: {reason or resp.text[:200]}"
            else:
                result["purged"] = answer["purged"]
                if answer.get("peers"):
                    result["peers"] = answer["peers"]
            results.append(result)
    return results
