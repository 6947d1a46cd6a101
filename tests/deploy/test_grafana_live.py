"""The dashboard's queries on real data: a real ``prometheus`` scrapes a gateway (with the batch queue on a real
redis-server) after known traffic, and every query of docker/grafana/dashboards/switchboard.json is evaluated by
it, the way Grafana would send it (``$__rate_interval`` and ``$__range`` replaced by durations).

Traffic: route ``r`` tries target ``bad`` (every answer a 500) and falls back to ``good`` (priced, so it costs
something); each request is answered by ``good``. ``bad``'s breaker opens and stays open (long cooldown). Two of the
requests stream, so time to first token is recorded. Every panel except the canary's and vLLM's must then show a
series (no release runs here, and no vLLM is scraped: their metric names are checked against vLLM's list by
tests/deploy/test_metric_names.py), and the panels' figures must match what was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.deploy.tools import DOCKER
from tests.gateway_harness import RunningGateway, fast_settings, openai_target
from tests.prometheus_server import PrometheusServer
from tests.redis_server import RedisServer
from tests.standins import Fault, Standin

REQUESTS = 6
STREAMS = 2
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__range": "5m"}
NO_DATA_HERE = ("Canary weight by release", "Release arms: attempts/s by outcome", "Release phase",
                "vLLM requests running / waiting", "vLLM KV cache usage", "vLLM time to first token p99")


def dashboard_queries() -> dict[str, list[str]]:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "switchboard.json").read_text())
    return {panel["title"]: [target["expr"] for target in panel["targets"]]
            for panel in dashboard["panels"] if panel["type"] != "row"}


def grafana_substituted(query: str) -> str:
    for variable, duration in GRAFANA_RANGES.items():
        query = query.replace(variable, duration)
    return query


def evaluate(prometheus: PrometheusServer, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": grafana_substituted(query)},
                       timeout=10).json()
    assert answer["status"] == "success", f"{query}: {answer}"
    return list(answer["data"]["result"])


def by(series: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {item["metric"].get(label, ""): float(item["value"][1]) for item in series}


@pytest.fixture
def scraped_gateway() -> Iterator[PrometheusServer]:
    bad, good = Standin(name="bad").start(), Standin(name="good").start()
    redis = RedisServer().start()
    try:
        bad.set_default(Fault.status(500))
        config = {
            **fast_settings(health={"error_window_s": 60,
                                    "breaker": {"error_rate_threshold": 0.5, "min_requests": 4, "cooldown_s": 600}}),
            "targets": {"bad": openai_target(bad.url, "model-bad"),
                        "good": openai_target(good.url, "model-good",
                                              price={"input_per_1k": 0.5, "output_per_1k": 1.5})},
            "pools": {"first": {"targets": {"bad": 100}}, "second": {"targets": {"good": 100}}},
            "routes": {"r": {"pool": "first", "fallback": ["second"]}},
            "batch": {"redis_url": redis.url},
        }
        gateway = RunningGateway(config).start()
        try:
            body = {"model": "r", "messages": [{"role": "user", "content": "hello there"}]}
            with httpx.Client(base_url=gateway.url, timeout=30) as client, \
                    PrometheusServer([f"127.0.0.1:{gateway.port}"], scrape_interval_s=0.25) as prometheus:
                # One request first, scraped before the rest: rate() counts what follows the series' first sample.
                assert client.post("/v1/chat/completions", json=body).status_code == 200
                prometheus.wait_for("count(switchboard_upstream_requests_total)", lambda v: v == [2.0])
                for n in range(1, REQUESTS):
                    extra = {"stream": True, "stream_options": {"include_usage": True}} if n <= STREAMS else {}
                    answer = client.post("/v1/chat/completions", json={**body, **extra})
                    assert answer.status_code == 200, answer.text
                prometheus.wait_for('sum(switchboard_requests_total{route="r"})', lambda v: v == [float(REQUESTS)])
                yield prometheus
        finally:
            gateway.stop()
    finally:
        redis.close()
        bad.stop()
        good.stop()


def test_every_dashboard_query_evaluates_and_shows_what_was_sent(scraped_gateway: PrometheusServer) -> None:
    prometheus = scraped_gateway
    panels = dashboard_queries()
    empty = []
    for title, queries in panels.items():
        results = [evaluate(prometheus, query) for query in queries]
        if title not in NO_DATA_HERE and not any(results):
            empty.append(title)
    assert empty == [], f"panels with no series after traffic: {empty}"

    error_rate = by(evaluate(prometheus, panels["Upstream error rate by target"][0]), "target")
    assert error_rate == {"bad": 1.0, "good": 0.0}
    breakers = by(evaluate(prometheus, panels["Circuit breakers (worst replica)"][0]), "target")
    assert breakers["bad"] == 2.0 and breakers["good"] == 0.0
    fallbacks = evaluate(prometheus, panels["Fallbacks/s by route and failed target"][0])
    assert {item["metric"]["from_target"] for item in fallbacks} == {"bad"}
    cost = by(evaluate(prometheus, panels["Cost over the time range (USD)"][0]), "target")
    assert cost.get("good", 0.0) > 0.0 and cost.get("bad", 0.0) == 0.0
    tokens = evaluate(prometheus, panels["Tokens/s by target and direction"][0])
    assert {(i["metric"]["target"], i["metric"]["direction"]) for i in tokens} == {("good", "input"),
                                                                                   ("good", "output")}
    ttft = evaluate(prometheus, panels["Time to first token p50 / p99 by target"][1])
    assert by(ttft, "target").keys() == {"good"}
    queue = by(evaluate(prometheus, panels["Queue depth by stream"][0]), "endpoint")
    assert queue and set(queue.values()) == {0.0}, "an empty batch queue reads 0 per stream, not no data"
