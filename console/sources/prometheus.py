"""Per-target traffic, errors and latency from Prometheus: every gateway replica at once, not the one the console asks.

``PrometheusClient.figures`` runs the expressions of ``services.promql`` (the ones the AnalysisTemplates, alert
rules and dashboards use) through the official ``prometheus-api-client`` and answers a ``PrometheusFigures``.
``ProvidersView`` lays those figures over the gateway's own snapshot, so the Providers pane keeps its one view model
(``GatewayState``): breaker, status and cooldown from the gateway; Req/s, Err and the percentiles from Prometheus.

The client is synchronous (requests); each query runs in a worker thread with the context's timeout and no retries
(the poller polls again anyway), so a slow Prometheus holds a thread for at most that timeout and never the UI.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from console.sources.poller import Health, Observed, describe
from services import promql
from services.admin_api import GatewayState, TargetState

SOURCE = "prometheus"


class PrometheusDown(Exception):
    """Prometheus could not be reached, timed out, or refused a query."""


@dataclass(frozen=True)
class TargetFigures:
    requests_per_s: float = 0.0
    error_rate: float = 0.0  # 5xx and transport errors over all attempts (services.promql.error_rate)
    total_p50_ms: float | None = None  # None: no successful answer in the window
    total_p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None


@dataclass(frozen=True)
class PrometheusFigures:
    window: str
    targets: Mapping[str, TargetFigures]

    def target(self, name: str) -> TargetFigures:
        """A target Prometheus has no series for had no traffic in the window."""
        return self.targets.get(name, TargetFigures())


QUERIES: Mapping[str, Any] = {  # TargetFigures field -> (expression for a window, scale)
    "requests_per_s": (promql.request_rate, 1.0),
    "error_rate": (promql.error_rate, 1.0),
    "total_p50_ms": (lambda w: promql.latency_quantile(0.5, w), 1000.0),
    "total_p99_ms": (lambda w: promql.latency_quantile(0.99, w), 1000.0),
    "ttft_p50_ms": (lambda w: promql.latency_quantile(0.5, w, histogram=promql.TTFT_BUCKET), 1000.0),
    "ttft_p99_ms": (lambda w: promql.latency_quantile(0.99, w, histogram=promql.TTFT_BUCKET), 1000.0),
}


class PrometheusClient:
    def __init__(self, url: str, timeout_s: float = 2.0, window: str = promql.CONSOLE_WINDOW) -> None:
        self.url, self.timeout_s, self.window = url.rstrip("/"), timeout_s, window
        # No retries; read=False lets a read timeout surface as requests' Timeout rather than a ConnectionError.
        self._client = PrometheusConnect(url=self.url, retry=Retry(total=0, read=False), timeout=timeout_s)

    def _query(self, expression: str) -> dict[str, float]:
        """One instant query: its per-target values (NaN, from 0/0 or an empty histogram, is left out)."""
        try:
            result = self._client.custom_query(expression)
        except requests.Timeout as exc:
            raise PrometheusDown(f"{self.url} timed out") from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise PrometheusDown(f"{self.url} unreachable: {_os_reason(exc)}") from exc
        except PrometheusApiClientException as exc:
            raise PrometheusDown(f"{self.url} refused the query: {describe(exc)[:200]}") from exc
        values: dict[str, float] = {}
        for sample in result:
            target = sample.get("metric", {}).get("target")
            value = float(sample["value"][1])
            if target is not None and not math.isnan(value):
                values[target] = value
        return values

    async def figures(self) -> PrometheusFigures:
        names = list(QUERIES)
        answers = await asyncio.gather(
            *(asyncio.to_thread(self._query, QUERIES[name][0](self.window)) for name in names))
        targets = {target for answer in answers for target in answer}
        return PrometheusFigures(self.window, {
            target: TargetFigures(**{
                name: answer[target] * QUERIES[name][1]
                for name, answer in zip(names, answers, strict=True) if target in answer
            })
            for target in sorted(targets)
        })

    def close(self) -> None:
        self._client.close()


def _os_reason(exc: Exception) -> str:
    """``[Errno 111] Connection refused`` out of requests' long wrapped message, else the exception's type."""
    found = re.search(r"\[Errno -?\d+\] [^'\")]*", str(exc))
    return found.group(0).strip() if found else type(exc).__name__


def overlay(state: GatewayState, figures: PrometheusFigures) -> GatewayState:
    """The gateway's state with every target's traffic, errors and percentiles replaced by Prometheus' figures."""
    return state.model_copy(update={"targets": [_overlay_target(t, figures.target(t.name)) for t in state.targets]})


def _overlay_target(target: TargetState, figures: TargetFigures) -> TargetState:
    return target.model_copy(update={
        "requests_per_s": figures.requests_per_s, "error_rate": figures.error_rate,
        "total_p50_ms": figures.total_p50_ms, "total_p99_ms": figures.total_p99_ms,
        "p50_ms": figures.total_p50_ms, "p99_ms": figures.total_p99_ms,
        "ttft_p50_ms": figures.ttft_p50_ms, "ttft_p99_ms": figures.ttft_p99_ms,
    })


class ProvidersView:
    """What the Providers pane shows: the gateway's snapshot, or (a context with ``prometheus_url``) that snapshot
    with Prometheus' figures laid over it. Prometheus failing shows as the pane's STALE (last figures, aging) or
    DOWN (no figures, the reason in the body); it never raises. The last answer is kept, so an unchanged pair of
    snapshots gives the very same object and the pane is not redrawn."""

    def __init__(self) -> None:
        self._last: tuple[Observed[GatewayState], Observed[PrometheusFigures] | None, Observed[GatewayState]] | None
        self._last = None

    def view(self, gateway: Observed[GatewayState],
             prometheus: Observed[PrometheusFigures] | None) -> Observed[GatewayState]:
        if prometheus is None:
            return gateway
        if self._last is not None and self._last[0] is gateway and self._last[1] is prometheus:
            return self._last[2]
        shown = _combine(gateway, prometheus)
        self._last = (gateway, prometheus, shown)
        return shown


HEALTH_RANK = {Health.LIVE: 0, Health.WAITING: 1, Health.STALE: 2, Health.DOWN: 3}


def _combine(gateway: Observed[GatewayState], prometheus: Observed[PrometheusFigures]) -> Observed[GatewayState]:
    if gateway.data is None:  # no targets to show: the gateway's own waiting or failure
        return gateway
    if prometheus.data is None or prometheus.health is Health.DOWN:
        waiting = prometheus.health is Health.WAITING
        return replace(gateway, data=None, health=prometheus.health,
                       error=f"waiting for {SOURCE}" if waiting else f"{SOURCE}: {prometheus.error}")
    fetched = [t for t in (gateway.fetched_at, prometheus.fetched_at) if t is not None]
    data = overlay(gateway.data, prometheus.data)
    if HEALTH_RANK[prometheus.health] > HEALTH_RANK[gateway.health]:
        return replace(gateway, data=data, fetched_at=min(fetched, default=None), health=prometheus.health,
                       error=f"{SOURCE}: {prometheus.error}")
    return replace(gateway, data=data, fetched_at=min(fetched, default=None))
