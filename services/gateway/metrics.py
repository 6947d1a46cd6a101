"""Prometheus metrics with bounded labels: route, pool, target, provider, status class, error class.

Every label value comes from the configuration or a fixed enum, never from a request. Label
children are resolved once per (target, ...) and cached, keeping ``.labels()`` off the hot path.
"""

from __future__ import annotations

from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from services.gateway.health import BreakerState

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total and friends: kubesim's gateway source reads the CPU
        self.requests = Counter(
            "switchboard_requests", "Client requests by route and response status class",
            ["route", "status_class"], registry=r,
        )
        self.attempts = Counter(
            "switchboard_upstream_requests", "Upstream attempts by target and status class",
            ["pool", "target", "provider", "status_class"], registry=r,
        )
        self.errors = Counter(
            "switchboard_upstream_errors", "Failed upstream attempts by error class",
            ["target", "provider", "error_class"], registry=r,
        )
        # Two meanings of latency, never mixed: total (every successful answer, stream or not) and TTFT
        # (streams only; a non-stream answer has no first token the gateway could time apart from its end).
        self.upstream_latency = Histogram(
            "switchboard_upstream_latency_seconds",
            "Upstream total latency of successful answers: a whole non-stream response, or a stream to its last chunk",
            ["target", "provider"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "switchboard_time_to_first_token_seconds",
            "Upstream time to the first chunk of a stream (every stream that got one, however it ended)",
            ["target", "provider"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.overhead = Histogram(
            "switchboard_gateway_overhead_seconds", "Time spent in the gateway itself, upstream time excluded",
            ["route"], buckets=OVERHEAD_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "switchboard_tokens", "Tokens by direction (input, output)",
            ["target", "provider", "direction"], registry=r,
        )
        self.cost = Counter("switchboard_cost_usd", "Cost from the configured price table", ["target"], registry=r)
        self.fallbacks = Counter(
            "switchboard_fallbacks", "Requests moved to another target after a failed attempt",
            ["route", "from_target", "error_class"], registry=r,
        )
        self.breaker = Gauge(
            "switchboard_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["target"], registry=r,
        )
        self.cooldown = Gauge(
            "switchboard_target_cooling_down", "1 while a target is in a Retry-After or auth cooldown",
            ["target"], registry=r,
        )
        self.in_flight = Gauge("switchboard_in_flight_requests", "Requests being served", ["route"], registry=r)
        self.refused = Counter(
            "switchboard_refused_requests",
            "Requests refused before routing: body too large, body too slow, over the concurrency cap",
            ["reason"], registry=r,
        )
        self.client_write_timeouts = Counter(
            "switchboard_client_write_timeouts",
            "Streams cut because the client stopped reading; their upstream request was cancelled",
            ["route"], registry=r,
        )
        self.key_refusals = Counter(
            "switchboard_client_key_refusals",
            "Data-plane requests refused by the key checks (missing, invalid, limits...), by reason",
            ["reason"], registry=r,
        )
        self.tier_claims_ignored = Counter(
            "switchboard_tier_claims_ignored", "Tier headers ignored because they claimed more than the key's tier",
            registry=r,
        )
        self.release_weight = Gauge("switchboard_release_canary_weight", "Canary weight (%) a release applies",
                                    ["release"], registry=r)
        self.release_phase = Gauge(
            "switchboard_release_phase", "Release phase: 0 Progressing, 1 Paused, 2 Degraded, 3 Healthy",
            ["release"], registry=r,
        )
        self.release_requests = Counter(
            "switchboard_release_requests", "Upstream attempts on a release's arms by outcome",
            ["release", "arm", "outcome"], registry=r,
        )
        self.weight = Gauge("switchboard_routing_weight", "Configured weight of a target in a pool",
                            ["pool", "target"], registry=r)
        # The batch queue, read from Redis when /metrics is scraped; labelled by stream ("chat", "completions").
        self.batch_queue_length = Gauge("switchboard_batch_queue_length", "Batch requests queued and not finished",
                                        ["endpoint"], registry=r)
        self.batch_queue_pending = Gauge("switchboard_batch_queue_pending",
                                         "Batch requests delivered to a worker and not yet acknowledged",
                                         ["endpoint"], registry=r)
        self.batch_queue_oldest_age = Gauge("switchboard_batch_queue_oldest_age_seconds",
                                            "Age of the oldest unfinished batch request (0 when none)",
                                            ["endpoint"], registry=r)
        self.batch_queue_workers = Gauge("switchboard_batch_queue_workers", "Consumers in the stream's group",
                                         ["endpoint"], registry=r)
        self.batch_results_rate = Gauge("switchboard_batch_results_per_second",
                                        "Batch results written (done or failed) per second over the last minute",
                                        ["endpoint"], registry=r)
        self.batch_retries = Gauge("switchboard_batch_retries", "Batch requests tried again, since the stream began",
                                   ["endpoint"], registry=r)
        self.batch_batches = Gauge("switchboard_batch_batches",
                                   "Batches not finished or finished in the last hour, by status", ["status"],
                                   registry=r)
        self.batch_queue_readable = Gauge("switchboard_batch_queue_readable",
                                          "1 when the batch queue's Redis answered at the last scrape", registry=r)

    @cache  # noqa: B019 - one metrics object per gateway, bounded label sets
    def child(self, metric_name: str, *labels: str):  # type: ignore[no-untyped-def]
        return getattr(self, metric_name).labels(*labels)

    def set_breaker(self, target: str, state: BreakerState, cooling_down: bool) -> None:
        self.child("breaker", target).set(int(state))
        self.child("cooldown", target).set(1 if cooling_down else 0)

    def set_weights(self, weights: dict[str, dict[str, int]]) -> None:
        for pool, targets in weights.items():
            for target, weight in targets.items():
                self.child("weight", pool, target).set(weight)

    def render(self) -> bytes:
        return generate_latest(self.registry)
