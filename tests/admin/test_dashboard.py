"""The Grafana dashboard (docker/grafana/edge-dashboard.json) uses only metrics a node exports.

The dashboard's PromQL is read for every ``edge_*`` name, and a real edge and its admin API
(on loopback, with a little traffic and a purge) are scraped: each name must be a sample of
that scrape. Two metrics are special:
- ``edge_h3_connections_total`` and ``edge_access_log_dropped_lines_total`` are counted by
  the fronts and the access log, which ``edge serve`` wires to the admin API and the
  in-process test node does not: the scrape declares the family (HELP/TYPE) with no
  sample, so for them a declared family is enough;
- ``edge_worker_up`` exists only on a node of several workers, so it is checked against the
  exposition of the same node's stats laid out as a node of two workers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.admin.metrics import exposition
from tests.admin.conftest import Admin
from tests.support.nodes import Edge
from tests.support.scripted_origin import ScriptedOrigin, fixed

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "edge-dashboard.json"
METRIC = re.compile(r"\bedge_[a-z0-9_]+")
SEVERAL_WORKERS_ONLY = {"edge_worker_up"}
"""Metrics a node of one worker does not export (see edge/admin/metrics.py)."""
FRONTS_ONLY = {"edge_h3_connections_total", "edge_access_log_dropped_lines_total"}
"""Metrics whose samples come from the fronts (edge/wiring/process.py), not the core."""


def load() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return model


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in model["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and template variable queries."""
    exprs = [t["expr"] for p in panels(model) for t in p.get("targets", [])]
    for var in model["templating"]["list"]:
        query = var.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else str(query))
    return exprs


def used_metrics(model: dict[str, Any]) -> set[str]:
    return {name for expr in expressions(model) for name in METRIC.findall(expr)}


def exported(text: str) -> set[str]:
    """Names of the samples in an exposition (counters as ``..._total``)."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def declared(text: str) -> set[str]:
    """Names an exposition declares (HELP/TYPE), with or without samples."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(text)
    }


def test_the_dashboard_is_a_valid_model() -> None:
    model = load()
    assert model["uid"] and len(model["uid"]) <= 40
    assert model["title"]
    assert model["schemaVersion"] >= 36
    assert [i["name"] for i in model["__inputs"]] == ["DS_PROMETHEUS"]
    assert {v["name"] for v in model["templating"]["list"]} >= {"instance", "upstream"}
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [p for p in panels(model) if p["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["title"] and panel["targets"], panel.get("title")
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_uses_metrics_of_every_family_asked_for() -> None:
    used = used_metrics(load())
    assert used >= {
        "edge_cache_lookup_hits_total", "edge_cache_lookup_misses_total", "edge_cache_bytes",
        "edge_cache_capacity_bytes", "edge_cache_evictions_total", "edge_upstream_requests_total",
        "edge_fills_in_flight", "edge_upstream_up", "edge_upstream_failures_total",
        "edge_purge_requests_total", "edge_h3_connections_total", "edge_worker_up",
        "edge_requests_total", "edge_request_duration_seconds_bucket",
        "edge_upstream_duration_seconds_bucket", "edge_response_body_bytes_total",
        "edge_collapsed_requests_total",
    }  # fmt: skip


@pytest.mark.asyncio
async def test_every_metric_the_dashboard_uses_is_exported(
    origin: ScriptedOrigin, edge: Edge, admin: Admin
) -> None:
    origin.routes["/app.js"] = fixed(200, b"js" * 100, [("Cache-Control", "max-age=600")])
    async with edge.client() as client:
        for _ in range(3):  # a miss, then hits
            assert (await client.get("/app.js")).status_code == 200
    async with admin.client() as client:
        assert (await client.post("/purge", json={"url": f"{edge.url}/app.js"})).status_code == 200
        scrape = await client.get("/metrics")
        stats = (await client.get("/stats")).json()
    assert scrape.status_code == 200
    names = exported(scrape.text)

    used = used_metrics(load())
    assert used, "the dashboard's expressions name edge metrics"
    missing = sorted(used - SEVERAL_WORKERS_ONLY - FRONTS_ONLY - names)
    assert not missing, f"the dashboard uses metrics the node does not export: {missing}"
    missing = sorted((used & FRONTS_ONLY) - declared(scrape.text))
    assert not missing, f"the dashboard uses metrics the node does not declare: {missing}"

    # The same node's figures as a node of two workers: adds the worker-only metrics.
    workers = [{**stats, "worker": 0}, {**stats, "worker": 1}]
    several = exported(exposition({**stats, "workers": workers}, {}).decode())
    missing = sorted((used & SEVERAL_WORKERS_ONLY) - several)
    assert not missing, f"not exported even by a node of several workers: {missing}"
