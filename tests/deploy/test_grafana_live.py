"""The dashboard's queries on real data: a real ``prometheus`` scrapes a gateway (with the batch queue on a real
redis-server) after known traffic, and every query of docker/grafana/dashboards/switchboard.json is evaluated by
it, the way Grafana would send it (``$__rate_interval`` and ``$__range`` replaced by durations).

Traffic: route ``r`` tries target ``bad`` (every answer a 500) and falls back to pool ``second``, where release
``good-v2`` has moved all of ``good``'s traffic to ``good2`` and pauses there (both priced: ``good2`` costs
something); each request is answered by ``good2``. ``bad``'s breaker opens and stays open (long cooldown). Two of
the requests stream, so time to first token is recorded. Every panel except vLLM's must then show a series (no vLLM
is scraped here: its metric names are checked against vLLM's list by tests/deploy/test_metric_names.py), and the
panels' figures must match what was sent. (Prometheus applies new scrape targets about 5 s after it starts: most of
this test's 11 s.)
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

REQUESTS = 8
STREAMS = 2  # after the first one
GRAFANA_RANGES = {"$__rate_interval": "1m", "$__range": "5m"}
NO_DATA_HERE = ("vLLM requests running / waiting", "vLLM KV cache usage", "vLLM time to first token p99")
PRICE = {"input_per_1k": 0.5, "output_per_1k": 1.5}
RELEASE = {"name": "good-v2", "pool": "second", "stable": "good", "canary": "good2",
           "steps": [{"setWeight": 100}, {"pause": {}}]}


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
            # Three attempts per request on bad (two retries): its breaker opens during the third request, after the
            # two first requests were scraped, so bad's attempts grow in the measured window too.
            **fast_settings(health={"error_window_s": 60,
                                    "breaker": {"error_rate_threshold": 0.5, "min_requests": 8, "cooldown_s": 600}}),
            "targets": {"bad": openai_target(bad.url, "model-bad"),
                        "good": openai_target(good.url, "model-good", price=PRICE),
                        "good2": openai_target(good.url, "model-good2", price=PRICE)},
            "pools": {"first": {"targets": {"bad": 100}}, "second": {"targets": {"good": 100, "good2": 0}}},
            "routes": {"r": {"pool": "first", "fallback": ["second"]}},
            "batch": {"redis_url": redis.url},
            "releases": [RELEASE],
            "canary": {"tick_s": 0.1, "lease_ttl_s": 1.0, "publish_s": 0.1},
        }
        gateway = RunningGateway(config).start()
        try:
            plain = {"model": "r", "messages": [{"role": "user", "content": "hello there"}]}
            stream = {**plain, "stream": True, "stream_options": {"include_usage": True}}
            with httpx.Client(base_url=gateway.url, timeout=30) as client, \
                    PrometheusServer([f"127.0.0.1:{gateway.port}"], scrape_interval_s=0.25) as prometheus:
                prometheus.wait_for('switchboard_release_canary_weight{release="good-v2"}', lambda v: v == [100.0])
                # A request of each kind first, scraped before the rest: every series then has a sample before the
                # traffic that follows, and rate() counts that traffic (a series born between two scrapes would not
                # have the two samples rate() needs).
                for first in (plain, stream):
                    assert client.post("/v1/chat/completions", json=first).status_code == 200
                prometheus.wait_for('sum(switchboard_requests_total{route="r"})', lambda v: v == [2.0])
                for n in range(2, REQUESTS):
                    answer = client.post("/v1/chat/completions", json=stream if n < 2 + STREAMS else plain)
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
    assert error_rate == {"bad": 1.0, "good2": 0.0}
    breakers = by(evaluate(prometheus, panels["Circuit breakers (worst replica)"][0]), "target")
    assert breakers["bad"] == 2.0 and breakers["good2"] == 0.0
    fallbacks = evaluate(prometheus, panels["Fallbacks/s by route and failed target"][0])
    assert {item["metric"]["from_target"] for item in fallbacks} == {"bad"}
    cost = by(evaluate(prometheus, panels["Cost over the time range (USD)"][0]), "target")
    assert cost["good2"] > 0.0 and cost.get("bad", 0.0) == 0.0
    tokens = evaluate(prometheus, panels["Tokens/s by target and direction"][0])
    assert {(i["metric"]["target"], i["metric"]["direction"]) for i in tokens} == {("good2", "input"),
                                                                                   ("good2", "output")}
    ttft = evaluate(prometheus, panels["Time to first token p50 / p99 by target"][1])
    assert by(ttft, "target").keys() == {"good2"}
    assert by(evaluate(prometheus, panels["Canary weight by release"][0]), "release") == {"good-v2": 100.0}
    arms = evaluate(prometheus, panels["Release arms: attempts/s by outcome"][0])
    assert {(i["metric"]["release"], i["metric"]["arm"]) for i in arms} == {("good-v2", "canary")}
    queue = by(evaluate(prometheus, panels["Queue depth by stream"][0]), "endpoint")
    assert queue and set(queue.values()) == {0.0}, "an empty batch queue reads 0 per stream, not no data"
