"""The node's Prometheus metrics, exposed through ``prometheus-client``.

The figures are read when /metrics is scraped (``NodeOps.stats()``: a node of several
workers asks every worker), not counted on the request path, so metrics cost the hit
path nothing. Each scrape builds its metric families from one snapshot, so the samples
of one scrape agree with each other.

Guarantees:
- a node of several workers labels each worker's samples ``worker="N"``: sum them for
  the node; a node of one worker has no worker label;
- every upstream (sibling worker, shield, origin) has ``edge_upstream_up``,
  ``edge_upstream_attempts_total`` and ``edge_upstream_failures_total``, labelled by
  ``upstream`` and ``kind``;
- counters end in ``_total`` and only go up over a process's life;
- a worker that does not answer leaves out its samples (``edge_worker_up`` is 0 for it),
  never the whole scrape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.cache.purge import PURGE_KINDS
from edge.core.observe import LATENCY_BUCKETS

__all__ = ["METRICS_CONTENT_TYPE", "exposition"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

_PER_WORKER: list[tuple[str, str, str, str]] = [
    ("edge_cache_entries", "gauge", "URLs held in the store.", "entries"),
    ("edge_cache_bytes", "gauge", "Bytes charged to stored responses.", "bytes"),
    ("edge_cache_capacity_bytes", "gauge", "Store capacity in bytes.", "capacity"),
    (
        "edge_cache_lookup_hits",
        "counter",
        "Store lookups that found the key (a request may look up more than once).",
        "hits",
    ),
    ("edge_cache_lookup_misses", "counter", "Store lookups that did not.", "misses"),
    ("edge_cache_inserts", "counter", "Responses stored or replaced.", "inserts"),
    ("edge_cache_evictions", "counter", "Entries evicted to stay under capacity.", "evictions"),
    ("edge_fills_in_flight", "gauge", "Upstream fills in progress.", "fills_in_flight"),
    (
        "edge_upstream_requests",
        "counter",
        "Requests sent upstream (fills, slices, validations, pass-through; each attempt).",
        "upstream_requests",
    ),
    ("edge_hit_for_pass_keys", "gauge", "Keys remembered as uncacheable.", "hit_for_pass_keys"),
    (
        "edge_compressions_pending",
        "gauge",
        "Compressions queued or running in the compression thread.",
        "compressions_pending",
    ),
    (
        "edge_compressions_skipped",
        "counter",
        "Compressions not started because the backlog was full (the request got identity).",
        "compressions_skipped",
    ),
    (
        "edge_compressions_dropped",
        "counter",
        "Queued compressions dropped because their object left the cache first.",
        "compressions_dropped",
    ),
    ("edge_disk_entries", "gauge", "Responses indexed in the disk tier.", "disk_entries"),
    ("edge_disk_bytes", "gauge", "Bytes of the disk tier's records.", "disk_bytes"),
    ("edge_disk_hits", "counter", "Memory misses answered from the disk tier.", "disk_hits"),
    ("edge_disk_writes", "counter", "Records written to the disk tier.", "disk_writes"),
    (
        "edge_disk_write_errors",
        "counter",
        "Disk tier writes that failed (the node went on from memory).",
        "disk_write_errors",
    ),
    (
        "edge_disk_corrupt",
        "counter",
        "Disk tier records found torn or corrupted when read, dropped and fetched again.",
        "disk_corrupt",
    ),
    (
        "edge_disk_degraded",
        "gauge",
        "1 while the disk tier is failing and the node serves from memory only.",
        "disk_degraded",
    ),
    ("edge_h3_connections", "counter", "HTTP/3 connections accepted.", "h3_connections"),
    (
        "edge_access_log_dropped_lines",
        "counter",
        "Access-log lines dropped because the destination did not keep up.",
        "access_log_dropped",
    ),
    ("edge_reloads", "counter", "Configuration reloads applied (SIGHUP).", "reloads"),
    (
        "edge_refused_connections",
        "counter",
        "TCP connections refused: their client address held max_client_connections.",
        "refused_connections",
    ),
    (
        "edge_rate_limited_requests",
        "counter",
        "Requests answered 429: their client address was over rate_limit.",
        "rate_limited_requests",
    ),
]
"""(name, type, help, stats key): one sample per worker."""


class _Snapshot(Collector):
    """Metric families from one reading of the node's stats."""

    def __init__(self, stats: Mapping[str, Any], purge_requests: Mapping[str, int]) -> None:
        self.stats = stats
        self.purge_requests = purge_requests

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        workers: list[Mapping[str, Any]] = [w for w in stats.get("workers") or [stats] if "error" not in w]
        labelled = "workers" in stats
        worker_label = ["worker"] if labelled else []
        for name, kind, text, key in _PER_WORKER:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, text, labels=worker_label
            )
            for worker in workers:
                if key in worker:
                    family.add_metric([str(worker["worker"])] if labelled else [], worker[key])
            yield family
        labels = ["upstream", "kind", *worker_label]
        up = GaugeMetricFamily("edge_upstream_up", "1 while an upstream's circuit is closed.", labels=labels)
        attempts = CounterMetricFamily(
            "edge_upstream_attempts",
            "Requests sent to each upstream (sibling worker, shield, origin).",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "edge_upstream_failures", "Failures counted against each upstream's health.", labels=labels
        )
        for worker in workers:
            for upstream in worker.get("upstreams", []):
                values = [upstream["name"], upstream["kind"], *([str(worker["worker"])] if labelled else [])]
                up.add_metric(values, 1 if upstream["up"] else 0)
                attempts.add_metric(values, upstream["requests"])
                failures.add_metric(values, upstream["failures_total"])
        yield up
        yield attempts
        yield failures
        yield from _traffic(workers, labelled)
        if labelled:
            answered = {str(w.get("worker")) for w in workers}
            worker_up = GaugeMetricFamily(
                "edge_worker_up", "1 when a worker answered this scrape.", labels=["worker"]
            )
            for i, w in enumerate(stats["workers"]):
                index = str(w.get("worker", i))
                worker_up.add_metric([index], 1 if index in answered and "error" not in w else 0)
            yield worker_up
        purges = CounterMetricFamily(
            "edge_purge_requests", "Purge requests answered, by kind.", labels=["kind"]
        )
        for kind in PURGE_KINDS:
            purges.add_metric([kind], self.purge_requests.get(kind, 0))
        yield purges
        yield CounterMetricFamily(
            "edge_purged_objects", "Stored responses purged or marked stale.", value=stats["purged_objects"]
        )


def _traffic(workers: list[Mapping[str, Any]], labelled: bool) -> Iterator[Metric]:
    """Answered requests (``edge.core.observe``): counts, bytes, latency, collapsing."""
    worker_label = ["worker"] if labelled else []
    requests = CounterMetricFamily(
        "edge_requests",
        "Requests answered, by protocol (h1, h2, h3), status and cache result (hit, or the "
        "Cache-Status fwd reason: miss, stale, bypass, ...; none for refusals and errors).",
        labels=["protocol", "status", "cache", *worker_label],
    )
    sent = CounterMetricFamily(
        "edge_response_body_bytes",
        "Response body bytes sent, by protocol.",
        labels=["protocol", *worker_label],
    )
    duration = HistogramMetricFamily(
        "edge_request_duration_seconds",
        "Time from a request to the end of its response; hits answered where they were parsed count as 0.",
        labels=worker_label,
    )
    upstream = HistogramMetricFamily(
        "edge_upstream_duration_seconds",
        "Time from sending a request upstream to its response head (requests that went upstream).",
        labels=worker_label,
    )
    collapsed = CounterMetricFamily(
        "edge_collapsed_requests", "Requests that joined a fill another request started.", labels=worker_label
    )
    for worker in workers:
        traffic = worker.get("traffic")
        if not traffic:
            continue
        which = [str(worker["worker"])] if labelled else []
        for protocol, status, cache, count in traffic["requests"]:
            requests.add_metric([protocol, str(status), cache, *which], count)
        for protocol, count in sorted(traffic["response_bytes"].items()):
            sent.add_metric([protocol, *which], count)
        for family, data in ((duration, traffic["duration"]), (upstream, traffic["upstream_duration"])):
            family.add_metric(which, _buckets(data["counts"]), data["sum"])
        collapsed.add_metric(which, traffic["collapsed"])
    yield requests
    yield sent
    yield duration
    yield upstream
    yield collapsed


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts → the cumulative ``le`` buckets Prometheus expects, ``+Inf`` last."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out


def exposition(stats: Mapping[str, Any], purge_requests: Mapping[str, int]) -> bytes:
    """The Prometheus text exposition of one stats snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats, purge_requests))
    return generate_latest(registry)
