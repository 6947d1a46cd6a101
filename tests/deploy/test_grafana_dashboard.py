"""docker/grafana: the dashboard JSON parses, lays out without overlaps, uses the provisioned datasource, covers what
an on-call engineer looks at, and every query is PromQL that Prometheus accepts; the error-rate and latency panels
are the expressions services/promql.py renders. (Whether every metric a query names is one the gateway or vLLM
exports is checked for manifests/ and docker/ together by tests/deploy/test_metric_names.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import promql
from tests.deploy.tools import DOCKER, run_tool

DASHBOARD = DOCKER / "grafana" / "dashboards" / "switchboard.json"
RATE_WINDOW = "$__rate_interval"
# Grafana substitutes these before the query reaches Prometheus; any valid durations stand in for them here.
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__range": "1h"}
# What the issue asks the dashboard to show, by the metric each needs.
COVERAGE = {
    "latency percentiles": "switchboard_upstream_latency_seconds_bucket",
    "error rates by target": "switchboard_upstream_requests_total",
    "fallbacks": "switchboard_fallbacks_total",
    "breaker state": "switchboard_breaker_state",
    "canary arms": "switchboard_release_requests_total",
    "queue depth": "switchboard_batch_queue_length",
    "tokens": "switchboard_tokens_total",
    "cost": "switchboard_cost_usd_total",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside it


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def panel_exprs(dashboard: dict[str, Any], title: str) -> list[str]:
    found = [p for p in panels(dashboard) if p["title"] == title]
    assert len(found) == 1, f"one panel titled {title!r} expected"
    return [target["expr"] for target in found[0]["targets"]]


def test_the_dashboard_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    source = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = source["datasources"][0]["uid"]
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert all(target["datasource"]["uid"] == uid for target in panel["targets"]), panel["title"]


def test_every_panel_has_queries_with_distinct_ids(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("topic", sorted(COVERAGE))
def test_the_dashboard_shows(dashboard: dict[str, Any], topic: str) -> None:
    metric = COVERAGE[topic]
    assert any(metric in query for query in queries(dashboard)), f"no panel for {topic} ({metric})"


def test_error_rate_and_latency_panels_are_the_shared_promql(dashboard: dict[str, Any]) -> None:
    assert panel_exprs(dashboard, "Upstream attempts/s by target") == [promql.request_rate(RATE_WINDOW)]
    assert panel_exprs(dashboard, "Upstream error rate by target") == [promql.error_rate(RATE_WINDOW)]
    assert panel_exprs(dashboard, "Upstream latency p50 / p99 by target") == [
        promql.latency_quantile(0.5, RATE_WINDOW), promql.latency_quantile(0.99, RATE_WINDOW)]
    assert panel_exprs(dashboard, "Time to first token p50 / p99 by target") == [
        promql.latency_quantile(q, RATE_WINDOW, histogram=promql.TTFT_BUCKET) for q in (0.5, 0.99)]
    assert panel_exprs(dashboard, "Gateway overhead p99 by route") == [promql.latency_quantile(
        0.99, RATE_WINDOW, by=("route",), histogram="switchboard_gateway_overhead_seconds_bucket")]


def test_every_percentile_is_taken_over_buckets_summed_across_replicas(dashboard: dict[str, Any]) -> None:
    for query in queries(dashboard):
        if "histogram_quantile" in query:
            assert "sum by (le" in query and "avg" not in query, query


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana's range variables replaced by durations)."""
    rules = []
    for n, query in enumerate(queries(dashboard)):
        for variable, duration in GRAFANA_RANGES.items():
            query = query.replace(variable, duration)
        assert "$" not in query, f"an unknown Grafana variable in {query}"
        rules.append({"record": f"dashboard:query_{n}", "expr": query})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_tool("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr


def test_the_provider_loads_the_dashboard_folder_read_only() -> None:
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/switchboard.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    assert DASHBOARD.parent.name == Path(provider["options"]["path"]).name
