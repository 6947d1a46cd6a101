"""The real gateway's load as a simulated workload's metrics: its request rate and its CPU, read from its
Prometheus ``/metrics`` (open, no token) and written onto the board as the workload's totals.

Every interval the source scrapes the gateway and, from the change since the previous scrape, writes
``Series(namespace, "http_requests_per_second", workload)`` (the sum of every ``switchboard_requests_total`` child,
per second) and ``Series(namespace, "cpu", workload)`` (cores: the change of ``process_cpu_seconds_total`` per
second). The first scrape, and the first after a counter went backwards (the gateway restarted), only primes. A
gateway that cannot be read clears both series, so the HPA sees the metric as unavailable, as it would in an outage.

``multiplier`` is a scenario knob: each real request (and each real CPU second) stands for ``multiplier`` of them in
the simulation, so a handful of requests from a laptop can push the seed's HPA (100 requests/s per pod) through its
scale-up policies."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.kubesim.metrics import MetricBoard, Series

LOG = logging.getLogger(__name__)

# services/gateway/metrics.py: client requests by route and status class; the process collector's CPU seconds.
REQUESTS_FAMILY, REQUESTS = "switchboard_requests", "switchboard_requests_total"
CPU_FAMILY, CPU_SECONDS = "process_cpu_seconds", "process_cpu_seconds_total"
RATE_METRIC = "http_requests_per_second"
SOURCE = "gateway"


class ScrapeFailed(Exception):
    """The gateway's /metrics could not be read or parsed."""


@dataclass(frozen=True)
class Totals:
    """The counters of one scrape: requests served so far and CPU seconds used (None when not exported)."""

    requests: float
    cpu_seconds: float | None
    at: float  # time.monotonic() when read: rates are per real second, whatever the runner's clock does


@dataclass(frozen=True)
class Rates:
    requests_per_second: float
    cores: float | None


def parse_totals(text: str, at: float) -> Totals:
    """The counters in a Prometheus text exposition; ScrapeFailed when it does not parse or lacks the request
    counter (then it is not a gateway's /metrics)."""
    requests: float | None = None  # None: no request counter family at all
    cpu: float | None = None
    try:
        for family in text_string_to_metric_families(text):
            if family.name == REQUESTS_FAMILY and family.type == "counter":
                # A labelled counter shows no child before its first request: an idle gateway has served none.
                requests = (requests or 0.0) + sum(s.value for s in family.samples if s.name == REQUESTS)
            elif family.name == CPU_FAMILY:
                cpu = next((s.value for s in family.samples if s.name == CPU_SECONDS), None)
    except ValueError as exc:
        raise ScrapeFailed(f"the gateway's /metrics does not parse: {exc}") from exc
    if requests is None:
        raise ScrapeFailed(f"the gateway's /metrics has no {REQUESTS}")
    return Totals(requests, cpu, at)


def rates(before: Totals, after: Totals, multiplier: float) -> Rates | None:
    """The change between two scrapes per second, times the multiplier; None when a counter went backwards
    (the gateway restarted: the next scrape starts afresh) or no time passed."""
    seconds = after.at - before.at
    if seconds <= 0 or after.requests < before.requests:
        return None
    cores = None
    if before.cpu_seconds is not None and after.cpu_seconds is not None:
        if after.cpu_seconds < before.cpu_seconds:
            return None
        cores = (after.cpu_seconds - before.cpu_seconds) / seconds * multiplier
    return Rates((after.requests - before.requests) / seconds * multiplier, cores)


class GatewaySource:
    """Feeds a workload's request rate and CPU from a real gateway (the runner's Source protocol)."""

    def __init__(self, url: str, namespace: str, workload: str, multiplier: float = 1.0,
                 interval_s: float = 1.0) -> None:
        if not (math.isfinite(multiplier) and multiplier > 0):
            raise ValueError(f"multiplier must be a positive number, got {multiplier!r}")
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
        self.url = url.rstrip("/") + "/metrics"
        self.multiplier, self.interval_s = multiplier, interval_s
        self.rate_series = Series(namespace, RATE_METRIC, workload)
        self.cpu_series = Series(namespace, "cpu", workload)
        self.name = f"gateway {namespace}/{workload}"

    async def scrape(self, client: httpx.AsyncClient) -> Totals:
        try:
            response = await client.get(self.url)
        except httpx.HTTPError as exc:
            raise ScrapeFailed(f"cannot reach the gateway at {self.url}: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise ScrapeFailed(f"the gateway at {self.url} answered {response.status_code}")
        return parse_totals(response.text, time.monotonic())

    async def run(self, board: MetricBoard, clock: Callable[[], float]) -> None:
        previous: Totals | None = None
        reported = False  # an outage is logged once, not every interval
        async with httpx.AsyncClient(timeout=max(self.interval_s, 1.0)) as client:
            while True:
                try:
                    current = await self.scrape(client)
                except ScrapeFailed as exc:
                    board.clear(self.rate_series)
                    board.clear(self.cpu_series)
                    previous = None
                    if not reported:
                        LOG.warning("kubesim %s: %s; its series are cleared until it answers", self.name, exc)
                    reported = True
                else:
                    reported = False
                    if previous is not None:
                        self._write(board, rates(previous, current, self.multiplier), clock())
                    previous = current
                await asyncio.sleep(self.interval_s)

    def _write(self, board: MetricBoard, found: Rates | None, now: float) -> None:
        if found is None:
            return  # a counter reset: this scrape primed the next one
        board.set(self.rate_series, found.requests_per_second, now, SOURCE)
        if found.cores is None:
            board.clear(self.cpu_series)
        else:
            board.set(self.cpu_series, found.cores, now, SOURCE)
