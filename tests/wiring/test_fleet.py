"""A fleet of real processes on loopback: origin, two shields, three edges, a node of two workers.

Each node is ``python -m edge.cli serve`` started by ``benchmarks/fleet.py`` (its own
name, ports, shared admin token; every client request says ``Host: cdn.test``, so all
nodes key an object alike). The origin's access log, read line by line, counts the
requests it served per path. Tests that do not disturb each other share one topology
(module scope) and each uses objects of its own; a test that kills a shield starts it
again and waits until every edge sees it up before it returns. Waits are polls with
deadlines, never sleeps.

Tiers in one process (no kill, no HTTP/3 per worker) are in tests/core/test_tiers.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator

import pytest

from benchmarks.fleet import (
    Fleet,
    Node,
    Reply,
    Sample,
    deadline_poll,
    gather_gets,
    h3_get,
    run_load,
)
from edge.wiring.devcert import DevCert

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(os, "waitid"), reason="process groups and waitid (Linux)"
)

WAIT = 20.0
"""Seconds to wait for something that should happen within about one (only a failing test waits so long)."""


class Topology:
    """The shared fleet: origin, shield-1 and shield-2, edge-1..3 (edge-1 with --purge-peers)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.shields = fleet.start_nodes([fleet.shield_spec("shield-1"), fleet.shield_spec("shield-2")])
        self.edges = fleet.start_nodes(
            [
                fleet.edge_spec("edge-1", self.shields, purge_peers=self.shields),
                fleet.edge_spec("edge-2", self.shields),
                fleet.edge_spec("edge-3", self.shields),
            ]
        )

    def requests(self, path: str) -> int:
        """Origin requests for ``path`` so far (after every finished one was counted)."""
        assert self.fleet.origin is not None
        self.fleet.origin.sync()
        return self.fleet.origin.requests(path)

    def shield(self, name: str) -> Node:
        return next(s for s in self.shields if s.name == name)

    def shield_state(self, edge: Node, shield: Node) -> dict[str, object]:
        return self.fleet.upstream(edge, shield)

    def wait_up_everywhere(self, shield: Node) -> None:
        """Poll every edge's /stats until it marks ``shield`` up (its probes found it again)."""
        for edge in self.edges:
            deadline_poll(
                lambda edge=edge: bool(self.shield_state(edge, shield)["up"]),
                f"{edge.name} sees {shield.name} up",
                WAIT,
            )

    def revive(self, shield: Node) -> None:
        """Restore a killed shield: same ports, then every edge sees it up."""
        if not shield.running:
            self.fleet.restart(shield)
        self.wait_up_everywhere(shield)


@pytest.fixture(scope="module")
def fleet(dev_cert: DevCert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with Fleet(tmp_path_factory.mktemp("fleet"), cert=dev_cert.cert, key=dev_cert.key, ca=dev_cert.ca) as f:
        f.start_origin()
        yield f


@pytest.fixture(scope="module")
def tiers(fleet: Fleet) -> Topology:
    return Topology(fleet)


def body_ok(fleet: Fleet, reply: Reply, path: str, version: int | None = None) -> bool:
    return reply.status == 200 and reply.sha256 == fleet.sha256(path, version)


def names(reply: Reply | Sample) -> list[str]:
    return [name for name, _ in reply.members]


# -- cold burst and Cache-Status --------------------------------------------------------------------


def test_a_cold_burst_through_every_edge_reaches_the_origin_once(tiers: Topology) -> None:
    """30 concurrent requests for one new object, 10 per edge: one origin request, one body."""
    fleet = tiers.fleet
    path = fleet.add_object("/burst/one.bin", 256 * 1024)
    targets = [(tiers.edges[i % 3], path) for i in range(30)]

    replies = asyncio.run(gather_gets(targets, host=fleet.host))

    assert [r.status for r in replies] == [200] * 30
    assert {r.sha256 for r in replies} == {fleet.sha256(path)}, "every client got the origin's bytes"
    assert tiers.requests(path) == 1, "three edges, two shields, thirty clients: one origin request"
    shields = {names(r)[0] for r in replies}
    assert len(shields) == 1, f"every edge asked the key's one shield, not {shields}"


def test_cache_status_of_a_second_tier_hit_shows_the_shield_then_the_edge(tiers: Topology) -> None:
    fleet = tiers.fleet
    path = fleet.add_object("/tier/second.bin", 8 * 1024)
    edge_1, edge_2 = tiers.edges[0], tiers.edges[1]

    first = fleet.get(edge_1, path)
    shield = names(first)[0]
    assert first.cache_status == (
        f"{shield}; fwd=uri-miss; fwd-status=200; stored, edge-1; fwd=uri-miss; fwd-status=200; stored"
    )
    second_tier = fleet.get(edge_2, path)  # edge-2 never had it; its shield has
    assert body_ok(fleet, second_tier, path)
    assert names(second_tier) == [shield, "edge-2"], second_tier.cache_status
    (_, shield_params), (_, edge_params) = second_tier.members
    assert shield_params.startswith("hit; ttl="), second_tier.cache_status
    assert edge_params == "fwd=uri-miss; fwd-status=200; stored", second_tier.cache_status
    hit = fleet.get(edge_2, path)
    assert names(hit) == [shield, "edge-2"] and hit.members[1][1].startswith("hit; ttl="), hit.cache_status
    assert tiers.requests(path) == 1


# -- a shield crashes, and comes back ---------------------------------------------------------------


def test_a_shield_killed_mid_run_costs_no_client_error_and_its_keys_move(tiers: Topology) -> None:
    """SIGKILL shield-1 a quarter into 240 requests: 60 objects, each asked of every edge, then once more."""
    fleet = tiers.fleet
    victim, survivor = tiers.shield("shield-1"), tiers.shield("shield-2")
    paths = fleet.add_objects("/kill", 60, [2048, 8192])
    # Pass 1 fills each object through one edge (and its shield); the kill comes as pass 1
    # ends, with pass 2 in flight; passes 2 and 3 ask the other edges, which miss and go to
    # the key's shield (the survivor, for the dead one's keys); pass 4 hits.
    plan = [(tiers.edges[(j + n) % 3], path) for n in range(4) for j, path in enumerate(paths)]
    before = {e.name: tiers.shield_state(e, survivor)["requests"] for e in tiers.edges}
    killed_at: list[float] = []

    async def run() -> list[Sample]:
        began = time.monotonic()
        quarter = asyncio.Event()

        def progress(sample: Sample, done: int) -> None:
            if done >= len(plan) // 4:
                quarter.set()

        async def killer() -> None:
            async with asyncio.timeout(WAIT):
                await quarter.wait()
            await asyncio.to_thread(fleet.kill, victim)
            killed_at.append(time.monotonic() - began)

        task = asyncio.create_task(killer())
        try:
            result = await run_load(
                plan, fleet.sha256, host=fleet.host, concurrency=16, duration_limit=60, min_seconds=1.5,
                on_sample=progress,
            )  # fmt: skip
        finally:
            await task
        return result.samples

    try:
        samples = asyncio.run(run())

        assert killed_at, "the shield was killed during the run"
        assert len(samples) == len(plan)
        errors = [f"{s.node} {s.path}: {s.error}" for s in samples if not s.ok]
        assert errors == [], "a dead shield must cost clients nothing"
        kill = killed_at[0]
        assert any(s.started > kill for s in samples), "the kill landed inside the run"
        victims_keys = {s.path for s in samples if s.started < kill and names(s)[:1] == [victim.name]}
        misses_after = [s for s in samples if s.started > kill and not s.members[-1][1].startswith("hit")]
        assert misses_after and all(names(s)[0] == survivor.name for s in misses_after), (
            "every edge miss after the kill went through the surviving shield"
        )
        assert {s.path for s in misses_after} & victims_keys, "keys of the dead shield moved to the survivor"
        for edge in tiers.edges:
            dead, alive = tiers.shield_state(edge, victim), tiers.shield_state(edge, survivor)
            assert dead["up"] is False, f"{edge.name} marks the killed shield down: {dead}"
            assert alive["up"] is True
            assert int(alive["requests"]) > int(before[edge.name]), f"{edge.name} sent the survivor requests"
    finally:
        tiers.revive(victim)


def test_a_shield_that_comes_back_gets_its_keys_again(tiers: Topology) -> None:
    fleet = tiers.fleet
    shield, other = tiers.shield("shield-2"), tiers.shield("shield-1")
    fleet.kill(shield)
    try:
        # Each edge learns it is gone from real traffic (3 failures in a row), never from a client error.
        for edge in tiers.edges:
            for i in range(30):
                path = fleet.add_object(f"/back/{edge.name}-down-{i}.bin", 1024)
                reply = fleet.get(edge, path)
                assert body_ok(fleet, reply, path) and names(reply)[0] == other.name, reply.cache_status
                if tiers.shield_state(edge, shield)["up"] is False:
                    break
            else:
                raise AssertionError(f"{edge.name} never marked {shield.name} down")

        fleet.restart(shield)  # same port, empty cache
        tiers.wait_up_everywhere(shield)  # the edges' probes found it

        before = {e.name: int(tiers.shield_state(e, shield)["requests"]) for e in tiers.edges}
        found: str | None = None
        for i in range(40):  # about half the keys are its: 40 misses is 2**-40 bad luck
            path = fleet.add_object(f"/back/up-{i}.bin", 1024)
            edge = tiers.edges[i % 3]
            reply = fleet.get(edge, path)
            assert body_ok(fleet, reply, path)
            if names(reply)[0] == shield.name:
                found = path
                assert reply.members[0][1] == "fwd=uri-miss; fwd-status=200; stored", reply.cache_status
                assert int(tiers.shield_state(edge, shield)["requests"]) > before[edge.name]
                break
        assert found is not None, f"no new object went through {shield.name} after it came back"
        # its keys are its own again on every edge: another edge gets it from the same shield's cache
        other_edge = tiers.edges[(i + 1) % 3]
        again = fleet.get(other_edge, found)
        assert names(again) == [shield.name, other_edge.name] and again.members[0][1].startswith("hit")
        assert tiers.requests(found) == 1
    finally:
        tiers.revive(shield)


# -- purge across tiers -----------------------------------------------------------------------------


def fill_everywhere(tiers: Topology, path: str) -> Node:
    """GET ``path`` through every edge; the shield that holds it (the key's first choice)."""
    fleet = tiers.fleet
    replies = [fleet.get(edge, path) for edge in tiers.edges]
    assert all(body_ok(fleet, r, path, 0) for r in replies)
    owners = {names(r)[0] for r in replies}
    assert len(owners) == 1
    return tiers.shield(owners.pop())


def assert_every_tier_has_the_new_body(tiers: Topology, path: str, owner: Node) -> None:
    fleet = tiers.fleet
    for node in [*tiers.edges, owner]:
        reply = fleet.get(node, path)
        assert reply.status == 200
        assert reply.sha256 != fleet.sha256(path, 0), (
            f"{node.name} served the purged body: {reply.cache_status}"
        )
        assert reply.sha256 == fleet.sha256(path, 1), f"{node.name}: {reply.cache_status}"


def test_a_purge_through_an_edge_with_purge_peers_leaves_no_stale_copy(tiers: Topology) -> None:
    fleet = tiers.fleet
    path = fleet.add_object("/purge/peers.bin", 8 * 1024)
    owner = fill_everywhere(tiers, path)
    fleet.rewrite(path)  # the origin changed meanwhile

    # A purge reaches the node it is sent to and that node's purge_peers, no further. edge-1
    # lists both shields, so one call purges the shields (first) and then edge-1; edge-2 and
    # edge-3 hold their own copies and are purged next (the shields are already clean, so
    # whatever they refetch is the new body).
    answer = fleet.purge(tiers.edges[0], path)
    for edge in tiers.edges[1:]:
        fleet.purge(edge, path)

    assert_every_tier_has_the_new_body(tiers, path, owner)
    assert answer.get("ok") is True and [p["admin"] for p in answer.get("peers", [])] == [
        s.admin_url for s in tiers.shields
    ], answer


def test_a_purge_of_every_node_shields_first_leaves_no_stale_copy(tiers: Topology) -> None:
    """The same purge done by hand, node by node (what --purge-peers should do for the first edge)."""
    fleet = tiers.fleet
    path = fleet.add_object("/purge/by-hand.bin", 8 * 1024)
    owner = fill_everywhere(tiers, path)
    fleet.rewrite(path)

    purged = {node.name: fleet.purge(node, path)["purged"] for node in [*tiers.shields, *tiers.edges]}

    assert purged == {s.name: int(s is owner) for s in tiers.shields} | {e.name: 1 for e in tiers.edges}
    assert_every_tier_has_the_new_body(tiers, path, owner)
    assert tiers.requests(path) == 2, "one fill before the purge, one refetch after"


# -- one node, two workers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_w2(fleet: Fleet) -> Iterator[Node]:
    """A node of two workers in front of the origin, HTTP/3 on every worker."""
    node = fleet.start_node(fleet.edge_spec("node-w2", workers=2, h3=True))
    yield node
    fleet.stop_node(node)


def test_two_workers_purge_as_one_node_and_both_serve_http3(fleet: Fleet, node_w2: Node) -> None:
    node = node_w2
    assert fleet.origin is not None
    path = fleet.add_object("/workers/object.bin", 64 * 1024)
    fills = [fleet.get(node, path) for _ in range(10)]  # new connections: both workers answer some
    assert all(body_ok(fleet, r, path, 0) for r in fills)
    fleet.origin.sync()
    assert fleet.origin.requests(path) == 1, "one fetch per object per node"

    fleet.rewrite(path)
    answer = fleet.purge(node, path)
    assert [w.get("error") for w in answer["workers"]] == [None, None], answer

    after = [fleet.get(node, path) for _ in range(20)]
    assert [r.sha256 == fleet.sha256(path, 0) for r in after] == [False] * 20, "never the purged body"
    assert all(body_ok(fleet, r, path, 1) for r in after)
    fleet.origin.sync()
    assert fleet.origin.requests(path) == 2, "after the purge, exactly one refetch for the node"

    # HTTP/3: new QUIC connections, each from its own UDP port, until both workers served one.
    assert node.quic_port is not None and fleet.ca is not None
    h3_path = fleet.add_object("/workers/h3.bin", 16 * 1024)
    quic_port, ca = node.quic_port, fleet.ca

    def per_worker() -> list[int]:
        return [int(w["h3_connections"]) for w in fleet.stats(node)["workers"]]

    async def four() -> list[Reply]:
        return list(
            await asyncio.gather(*(h3_get(quic_port, h3_path, ca, host=fleet.host) for _ in range(4)))
        )

    opened = 0
    while not all(n > 0 for n in per_worker()):
        assert opened < 32, f"{opened} QUIC connections and only some workers served one: {per_worker()}"
        replies = asyncio.run(four())
        opened += len(replies)
        assert all(body_ok(fleet, r, h3_path) for r in replies)
    fleet.origin.sync()
    assert fleet.origin.requests(h3_path) == 1


def test_an_http3_handshake_is_prompt_and_logs_no_connection_failure(fleet: Fleet, node_w2: Node) -> None:
    """aioquic pads its first datagram with zeros after the Initial packet; qh3 counted only the
    packet toward the amplification budget and failed the first flight (edge/fronts/qh3_io.py)."""
    assert node_w2.quic_port is not None and fleet.ca is not None
    path = fleet.add_object("/workers/h3-prompt.bin", 1024)
    quic_port, ca = node_w2.quic_port, fleet.ca
    logged = node_w2.log.stat().st_size

    async def three() -> list[Reply]:
        return list(await asyncio.gather(*(h3_get(quic_port, path, ca, host=fleet.host) for _ in range(3))))

    replies = asyncio.run(three())

    assert all(body_ok(fleet, r, path) for r in replies)
    with node_w2.log.open("rb") as log:
        log.seek(logged)
        failures = log.read().count(b"QUIC connection failed")
    seconds = sorted(r.seconds for r in replies)
    assert failures == 0 and seconds[1] < 0.3, (
        f"{failures} connection failures logged; request times {seconds}"
    )


# -- loops ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", ["origin", "error"], ids=["fallback-origin", "fallback-error"])
@pytest.mark.parametrize("shape", ["own-shield", "two-listing-each-other"])
def test_a_request_loop_is_refused_with_508(fleet: Fleet, shape: str, fallback: str) -> None:
    from benchmarks.fleet import free_port

    assert fleet.origin is not None
    options = {"shield-fallback": fallback}
    if shape == "own-shield":
        port = free_port()
        specs = [
            fleet.edge_spec(f"loop-self-{fallback}", [f"http://127.0.0.1:{port}"], port=port, options=options)
        ]
    else:
        a, b = free_port(), free_port()
        specs = [
            fleet.edge_spec(f"loop-a-{fallback}", [f"http://127.0.0.1:{b}"], port=a, options=options),
            fleet.edge_spec(f"loop-b-{fallback}", [f"http://127.0.0.1:{a}"], port=b, options=options),
        ]
    nodes = fleet.start_nodes(specs)
    try:
        path = fleet.add_object(f"/loop/{shape}-{fallback}.bin", 1024)
        began = time.monotonic()
        reply = fleet.get(nodes[0], path)
        took = time.monotonic() - began
        fleet.origin.sync()
        seen = fleet.origin.requests(path)
        assert (reply.status, seen) == (508, 0), (
            f"{reply.status} after {took:.2f} s, origin requests {seen}, Cache-Status {reply.cache_status}"
        )
        assert took < 5.0, f"a loop is refused at once, not after {took:.2f} s"
    finally:
        for node in nodes:
            fleet.stop_node(node)
