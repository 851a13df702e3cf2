"""Which peers a node believes about the request they pass on (``trusted_proxies``).

A peer in ``trusted_proxies`` (the edges in front of a shield, a TLS-terminating load
balancer) is believed on X-Forwarded-Proto (the scheme the front keys by,
``edge.fronts.request``) and on X-Forwarded-For (the chain the gateway extends,
``edge.core.gateway``); anybody else's are replaced by what the node itself saw.
Sans-I/O: addresses in, verdicts out.
"""

from __future__ import annotations

import ipaddress

__all__ = ["PEER_CACHE_SIZE", "TrustedProxies"]

PEER_CACHE_SIZE = 4096
"""Verdicts remembered; a node sees few peers, so the memo is simply emptied when full."""


class TrustedProxies:
    """The peers (CIDRs in ``trusted_proxies``) whose X-Forwarded-Proto and -For a node believes."""

    __slots__ = ("networks", "seen")

    def __init__(self, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.networks = networks
        self.seen: dict[str, bool] = {}
        """Address -> verdict; a node sees few peers, so this stays small (emptied when full)."""

    @classmethod
    def of(cls, spec: str) -> TrustedProxies | None:
        networks = [
            ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
        ]
        return cls(networks) if networks else None

    def trusts(self, client: str) -> bool:
        verdict = self.seen.get(client)
        if verdict is None:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                verdict = False
            else:
                verdict = any(address in network for network in self.networks)
            if len(self.seen) >= PEER_CACHE_SIZE:
                self.seen.clear()
            self.seen[client] = verdict
        return verdict
