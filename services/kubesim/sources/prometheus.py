"""Instant queries against a real Prometheus over its HTTP API (what KEDA's prometheus scaler and Argo's prometheus
provider do), for the KEDA controller and AnalysisRuns, and a Source that feeds a board series from a query."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

import httpx

from services.kubesim.metrics import MetricBoard, Series

LOG = logging.getLogger(__name__)


class QueryFailed(Exception):
    """Prometheus could not be reached, refused the query, or returned something that is not a number."""


async def instant_query(address: str, query: str, timeout_s: float = 5.0) -> list[float]:
    """``GET <address>/api/v1/query``: the values of a vector result (one per series) or a scalar's one value.
    An empty vector is an empty list; the caller decides what that means (KEDA's ignoreNullValues)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{address.rstrip('/')}/api/v1/query", params={"query": query})
    except httpx.HTTPError as exc:
        raise QueryFailed(f"cannot reach Prometheus at {address}: {exc.__class__.__name__}") from exc
    try:
        body = response.json()
    except ValueError as exc:
        raise QueryFailed(f"Prometheus at {address} answered {response.status_code} with no JSON") from exc
    if response.status_code != 200 or body.get("status") != "success":
        raise QueryFailed(f"Prometheus at {address} refused the query: {body.get('error') or response.status_code}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "vector":
            values = [float(item["value"][1]) for item in result]
        elif kind == "scalar":
            values = [float(result[1])]
        else:
            raise QueryFailed(f"Prometheus returned a {kind}; the query must give a vector or a scalar")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise QueryFailed("Prometheus returned a malformed result") from exc
    if not all(math.isfinite(value) for value in values):
        raise QueryFailed("Prometheus returned NaN or an infinite value")
    return values


class PrometheusSource:
    """Keeps ``series`` at a real Prometheus query's value, queried every ``interval_s``: the sum over a vector's
    series (so a per-pod query feeds a workload's total) or a scalar's value. A failed query, or an empty vector
    (no data), clears the series, so whoever reads it sees the metric as unavailable."""

    def __init__(self, address: str, query: str, series: Series, interval_s: float = 5.0) -> None:
        self.address, self.query, self.series, self.interval_s = address, query, series, interval_s
        self.name = f"prometheus {series.namespace}/{series.metric}"

    async def run(self, board: MetricBoard, clock: Callable[[], float]) -> None:
        while True:
            try:
                values = await instant_query(self.address, self.query)
            except QueryFailed as exc:
                LOG.warning("kubesim source %s: %s", self.name, exc)
                values = []
            if values:
                board.set(self.series, math.fsum(values), clock(), "prometheus")
            else:
                board.clear(self.series)
            await asyncio.sleep(self.interval_s)
