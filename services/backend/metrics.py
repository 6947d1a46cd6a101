"""Reads a vLLM ``/metrics`` page into the numbers an operator looks at.

Shared by ``switchboard backend status`` and the console (no textual imports here). Names are matched
exactly, never by prefix (``vllm:num_requests_waiting`` is a prefix of
``vllm:num_requests_waiting_by_reason``). Current names come first; the older ones are read when the
current ones are absent:

- KV-cache usage: ``vllm:kv_cache_usage_perc`` (a 0-1 fraction despite the name), formerly
  ``vllm:gpu_cache_usage_perc``.
- Inter-token latency: ``vllm:inter_token_latency_seconds``, formerly (same value, misleading name)
  ``vllm:time_per_output_token_seconds``.
- Prefix cache: counters ``vllm:prefix_cache_hits_total`` / ``vllm:prefix_cache_queries_total``
  (tokens), formerly ``vllm:gpu_prefix_cache_hits_total`` / ``..._queries_total``, or the V0 gauge
  ``vllm:gpu_prefix_cache_hit_rate``.

Every engine metric carries ``model_name`` and ``engine`` labels; values are summed over label sets
(gauges of usage are averaged), so data-parallel engines read as one backend.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREFIX_COUNTERS = (
    ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
    ("vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"),
)
PREFIX_HIT_RATE_GAUGE = "vllm:gpu_prefix_cache_hit_rate"
TTFT = ("vllm:time_to_first_token_seconds",)
ITL = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
E2E = ("vllm:e2e_request_latency_seconds",)
PROMPT_TOKENS = ("vllm:prompt_tokens_total",)
GENERATION_TOKENS = ("vllm:generation_tokens_total",)
REQUEST_SUCCESS = ("vllm:request_success_total",)
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Histogram:
    """Cumulative buckets (upper bound, count), sorted, the last one +Inf; summed over label sets."""

    name: str
    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass(frozen=True)
class LatencySummary:
    name: str  # the metric it came from
    count: float
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True)
class EngineMetrics:
    """One scrape. ``None``: the page did not have it."""

    running: float | None
    waiting: float | None
    kv_cache_usage: float | None  # fraction 0-1
    prefix_cache_hit_rate: float | None  # fraction 0-1, since the engine started
    prefix_cache_hits: float | None
    prefix_cache_queries: float | None
    ttft: LatencySummary | None
    itl: LatencySummary | None
    e2e: LatencySummary | None
    prompt_tokens: float | None
    generation_tokens: float | None
    requests_finished: float | None
    models: tuple[str, ...]


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` on cumulative (upper bound, count) pairs.

    Linear interpolation inside the bucket that holds the rank; the first bucket's lower bound is 0
    (when its upper bound is positive); a rank in the +Inf bucket answers the largest finite bound.
    ``None`` when there are no observations.
    """
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0 or math.isnan(total):
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for index, (bound, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(bound):
                return ordered[-2][0]
            if index == 0 and bound <= 0:
                return bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return ordered[-2][0]


class _Samples:
    """Sample values by exact sample name, plus the histogram buckets by family name."""

    def __init__(self, text: str) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)
        self.buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        self.models: set[str] = set()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                model = sample.labels.get("model_name")
                if model and sample.name.startswith("vllm:"):
                    self.models.add(model)
                if family.type == "histogram" and sample.name == family.name + "_bucket":
                    self.buckets[family.name][float(sample.labels["le"])] += sample.value
                else:
                    self.values[sample.name].append(sample.value)

    def first(self, names: Iterable[str]) -> tuple[str, list[float]] | None:
        for name in names:
            if self.values.get(name):
                return name, self.values[name]
        return None

    def total(self, names: Iterable[str]) -> float | None:
        found = self.first(names)
        return sum(found[1]) if found else None

    def average(self, names: Iterable[str]) -> float | None:
        found = self.first(names)
        return sum(found[1]) / len(found[1]) if found else None

    def histogram(self, names: Iterable[str]) -> Histogram | None:
        for name in names:
            if name in self.buckets:
                return Histogram(
                    name=name,
                    buckets=tuple(sorted(self.buckets[name].items())),
                    total=sum(self.values.get(name + "_sum", [0.0])),
                    count=sum(self.values.get(name + "_count", [0.0])),
                )
        return None


def _summary(hist: Histogram | None) -> LatencySummary | None:
    if hist is None:
        return None
    p50, p90, p99 = (hist.quantile(q) for q in QUANTILES)
    return LatencySummary(name=hist.name, count=hist.count, mean=hist.mean, p50=p50, p90=p90, p99=p99)


def parse(text: str) -> EngineMetrics:
    """Parses the text exposition format of a vLLM ``/metrics`` page."""
    samples = _Samples(text)
    hits = queries = hit_rate = None
    for hits_name, queries_name in PREFIX_COUNTERS:
        if samples.first([hits_name]) and samples.first([queries_name]):
            hits, queries = samples.total([hits_name]), samples.total([queries_name])
            hit_rate = hits / queries if queries else None
            break
    else:
        hit_rate = samples.average([PREFIX_HIT_RATE_GAUGE])
    return EngineMetrics(
        running=samples.total(RUNNING),
        waiting=samples.total(WAITING),
        kv_cache_usage=samples.average(KV_USAGE),
        prefix_cache_hit_rate=hit_rate,
        prefix_cache_hits=hits,
        prefix_cache_queries=queries,
        ttft=_summary(samples.histogram(TTFT)),
        itl=_summary(samples.histogram(ITL)),
        e2e=_summary(samples.histogram(E2E)),
        prompt_tokens=samples.total(PROMPT_TOKENS),
        generation_tokens=samples.total(GENERATION_TOKENS),
        requests_finished=samples.total(REQUEST_SUCCESS),
        models=tuple(sorted(samples.models)),
    )
