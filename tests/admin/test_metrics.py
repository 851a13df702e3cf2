"""The metrics exposition of a node of several workers: one sample per worker, labelled, summable.

Parsed back with prometheus-client's own parser, as a Prometheus server reads it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edge.admin.metrics import exposition


def worker(index: int, entries: int, upstream_up: bool) -> dict[str, Any]:
    return {
        "worker": index, "pid": 100 + index, "entries": entries, "bytes": 10 * entries, "capacity": 1000,
        "hits": 5, "misses": 1, "inserts": entries, "evictions": 0, "fills_in_flight": 0,
        "upstream_requests": 2, "hit_for_pass_keys": 0, "h3_connections": index + 1,
        "upstreams": [{"name": "http://s1:8080", "kind": "shield", "up": upstream_up, "requests": 2,
                       "failures_total": 0 if upstream_up else 3}],
    }  # fmt: skip


def parse(text: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_several_workers_are_labelled_and_sum_to_the_node() -> None:
    workers = [worker(0, 3, True), worker(1, 4, False)]
    stats = {"entries": 7, "workers": workers, "purged_objects": 2}
    samples = parse(exposition(stats, {"url": 1}))
    assert samples["edge_cache_entries"] == {(("worker", "0"),): 3, (("worker", "1"),): 4}
    assert sum(samples["edge_cache_entries"].values()) == stats["entries"]
    assert samples["edge_h3_connections_total"] == {(("worker", "0"),): 1, (("worker", "1"),): 2}
    up = samples["edge_upstream_up"]
    assert up[(("kind", "shield"), ("upstream", "http://s1:8080"), ("worker", "1"))] == 0
    assert up[(("kind", "shield"), ("upstream", "http://s1:8080"), ("worker", "0"))] == 1
    assert samples["edge_purge_requests_total"][(("kind", "url"),)] == 1
    assert samples["edge_purged_objects_total"] == {(): 2}


def test_one_worker_has_no_worker_label() -> None:
    samples = parse(exposition({**worker(0, 3, True), "purged_objects": 0}, {}))
    assert samples["edge_cache_entries"] == {(): 3}
    assert all("worker" not in dict(labels) for values in samples.values() for labels in values)
