"""services.promql: the expressions name what the gateway really exports, merge histograms across replicas, and
parse and evaluate in a real Prometheus (canary templates once Argo's placeholders are filled in)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from services import promql
from services.gateway.metrics import GatewayMetrics
from tests.prometheus_server import GaugeExporter, PrometheusServer


def _exported_series() -> str:
    metrics = GatewayMetrics()
    metrics.child("attempts", "pool", "t", "openai", "5xx").inc()
    metrics.child("upstream_latency", "t", "openai").observe(0.1)
    metrics.child("ttft", "t", "openai").observe(0.1)
    return metrics.render().decode()


def test_the_metric_names_and_labels_are_the_ones_the_gateway_exports() -> None:
    exported = _exported_series()
    assert re.search(r'^switchboard_upstream_requests_total\{[^}]*status_class="5xx"[^}]*target="t"', exported, re.M)
    assert re.search(r'^switchboard_upstream_latency_seconds_bucket\{le="0.1",[^}]*target="t"', exported, re.M)
    for expression in (promql.request_rate(), promql.error_rate(), promql.p50(), promql.p99(),
                       promql.canary_error_rate(), promql.canary_p99_ms(),
                       promql.latency_quantile(0.99, histogram=promql.TTFT_BUCKET)):
        names = set(re.findall(r"\b(switchboard_[a-z_]+)", expression))
        assert names, expression
        for name in names:
            assert re.search(rf"^{name}\{{", exported, re.M), f"{name} is not exported by the gateway"


def test_percentiles_merge_buckets_across_replicas_per_target() -> None:
    assert promql.p99("2m") == ("histogram_quantile(0.99, sum by (le, target) "
                                "(rate(switchboard_upstream_latency_seconds_bucket[2m])))")
    assert promql.p50().startswith("histogram_quantile(0.5, sum by (le, target) (")
    for expression in (promql.p50(), promql.p99(), promql.canary_p99_ms()):
        assert "avg" not in expression and "quantile_over_time" not in expression


def test_error_rate_counts_5xx_and_transport_errors_over_all_attempts_and_reads_zero_without_failures() -> None:
    every = "sum by (target) (rate(switchboard_upstream_requests_total[1m]))"
    failed = 'sum by (target) (rate(switchboard_upstream_requests_total{status_class=~"5xx|none"}[1m]))'
    assert promql.error_rate() == f"({failed} or {every} * 0) / {every}"


def test_canary_expressions_are_one_arm_with_argo_placeholders() -> None:
    error_rate = promql.canary_error_rate()
    assert '{target="{{args.target}}", status_class=~"5xx|none"}[5m]' in error_rate
    assert "by (" not in error_rate  # one number: Argo reads result[0]
    p99 = promql.canary_p99_ms(arg="canary-hash", label="rollouts_pod_template_hash")
    assert p99 == ('histogram_quantile(0.99, sum by (le) (rate(switchboard_upstream_latency_seconds_bucket'
                   '{rollouts_pod_template_hash="{{args.canary-hash}}"}[5m]))) * 1000')


def test_a_quantile_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        promql.latency_quantile(99)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    with GaugeExporter() as gauges, PrometheusServer([gauges.target]) as running:
        yield running


@pytest.mark.parametrize("expression", [
    promql.request_rate(), promql.error_rate(), promql.p50(), promql.p99(),
    promql.request_rate("30s", 'pool="primary"', by=("pool", "target")),
    promql.latency_quantile(0.5, histogram=promql.TTFT_BUCKET),
    promql.canary_error_rate().replace("{{args.target}}", "canary"),
    promql.canary_p99_ms().replace("{{args.target}}", "canary"),
])
def test_every_expression_parses_and_evaluates_in_a_real_prometheus(prometheus: PrometheusServer,
                                                                    expression: str) -> None:
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expression}, timeout=10).json()
    assert answer["status"] == "success", answer
    assert answer["data"]["resultType"] == "vector"


def test_the_real_prometheus_refuses_a_broken_expression(prometheus: PrometheusServer) -> None:
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql.p99()[:-1]}, timeout=10).json()
    assert answer["status"] == "error"
