"""The one set of PromQL on the gateway's metrics: per-target traffic, errors and latency, and the canary gates.

Plain functions returning strings, no I/O. The console's Prometheus source, the Argo AnalysisTemplates, the alert
rules and the Grafana panels all render their queries here, so they cannot drift apart.

Metric names are the ones ``services.gateway.metrics`` exports (prometheus_client adds ``_total`` to counters):

- ``switchboard_upstream_requests_total{pool, target, provider, status_class}``: one per upstream attempt;
  ``status_class`` is ``2xx``..``5xx`` from the upstream's status, or ``none`` when no status came back
  (connect failure, timeout, cut connection).
- ``switchboard_upstream_latency_seconds_bucket{target, provider, le}``: total latency of successful answers.
- ``switchboard_time_to_first_token_seconds_bucket{target, provider, le}``: time to a stream's first chunk.

Error rate, precisely: over a window, the attempts that ended in a 5xx status or in a transport error (status class
``none``) divided by all attempts, per target. Retries and fallbacks count as attempts of the target they went to;
4xx answers (the caller's mistake, rate limits, auth) are not errors here. A target with attempts and no failures
reads 0, not "no data" (the failure series may not exist yet, hence the ``or ... * 0``).

Percentiles come from ``histogram_quantile`` over buckets summed across every replica (``sum by (le, target)``):
averaging per-replica percentiles would be wrong, so no expression here does it.
"""

from __future__ import annotations

from collections.abc import Sequence

UPSTREAM_REQUESTS = "switchboard_upstream_requests_total"
UPSTREAM_LATENCY_BUCKET = "switchboard_upstream_latency_seconds_bucket"
TTFT_BUCKET = "switchboard_time_to_first_token_seconds_bucket"
FAILED_STATUS_CLASSES = ("5xx", "none")
CONSOLE_WINDOW = "1m"
CANARY_WINDOW = "5m"
CANARY_ARG = "target"


def args_placeholder(name: str) -> str:
    """Argo Rollouts' argument placeholder, substituted before the query reaches Prometheus."""
    return "{{args." + name + "}}"


def _selector(metric: str, matchers: str) -> str:
    return f"{metric}{{{matchers}}}" if matchers else metric


def _with(matchers: str, extra: str) -> str:
    return ", ".join(part for part in (matchers, extra) if part)


def _sum(expression: str, by: Sequence[str]) -> str:
    return f"sum by ({', '.join(by)}) ({expression})" if by else f"sum({expression})"


def _failed_matcher() -> str:
    return f'status_class=~"{"|".join(FAILED_STATUS_CLASSES)}"'


def request_rate(window: str = CONSOLE_WINDOW, matchers: str = "", by: Sequence[str] = ("target",)) -> str:
    """Upstream attempts per second, summed over every replica."""
    return _sum(f"rate({_selector(UPSTREAM_REQUESTS, matchers)}[{window}])", by)


def error_rate(window: str = CONSOLE_WINDOW, matchers: str = "", by: Sequence[str] = ("target",)) -> str:
    """Share (0..1) of upstream attempts that failed with a 5xx or a transport error (see the module docstring)."""
    failed = request_rate(window, _with(matchers, _failed_matcher()), by)
    every = request_rate(window, matchers, by)
    return f"({failed} or {every} * 0) / {every}"


def latency_quantile(quantile: float, window: str = CONSOLE_WINDOW, matchers: str = "",
                     by: Sequence[str] = ("target",), histogram: str = UPSTREAM_LATENCY_BUCKET) -> str:
    """The ``quantile`` in seconds of ``histogram`` (default: successful answers' total latency; ``TTFT_BUCKET`` for
    time to first token), from buckets summed across replicas."""
    if not 0 < quantile < 1:
        raise ValueError(f"a quantile is between 0 and 1, not {quantile}")
    buckets = _sum(f"rate({_selector(histogram, matchers)}[{window}])", ("le", *by))
    return f"histogram_quantile({quantile}, {buckets})"


def p50(window: str = CONSOLE_WINDOW, matchers: str = "") -> str:
    return latency_quantile(0.5, window, matchers)


def p99(window: str = CONSOLE_WINDOW, matchers: str = "") -> str:
    return latency_quantile(0.99, window, matchers)


def _arm_matcher(label: str, arg: str) -> str:
    return f'{label}="{args_placeholder(arg)}"'


def canary_error_rate(arg: str = CANARY_ARG, label: str = "target", window: str = CANARY_WINDOW) -> str:
    """An AnalysisTemplate's error-rate query for one arm: a one-element vector, 0..1 (gate: ``result[0] < 0.01``).

    ``label`` is the series label that tells the arm apart (``target`` for a target; a pod label such as
    ``rollouts_pod_template_hash`` for gateway pods), ``arg`` the AnalysisTemplate argument holding its value."""
    return error_rate(window, _arm_matcher(label, arg), by=())


def canary_p99_ms(arg: str = CANARY_ARG, label: str = "target", window: str = CANARY_WINDOW) -> str:
    """An AnalysisTemplate's p99 latency query for one arm, in milliseconds (gate: ``result[0] < 3000``)."""
    return f"{latency_quantile(0.99, window, _arm_matcher(label, arg), by=())} * 1000"
