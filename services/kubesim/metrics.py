"""The simulated metrics pipeline. Sources (a scenario's timeline, the real gateway's /metrics, a real Redis key's
length, a real Prometheus query) write the latest value of each series onto a board; the HPA controller reads it
as the metrics API would answer, and KEDA's triggers and AnalysisRuns read it too. Everything runs on kubesim's
loop: sources are coroutines that await their I/O there, controllers read the board synchronously in their tick.

A workload series (``Series.workload`` set) holds the workload's *total*: cores of CPU, bytes of memory, requests
per second. The HPA controller spreads it evenly over the workload's Running pods, so adding pods lowers the
per-pod value the way adding real replicas would. An External series (``workload`` empty) is one value, as the
external metrics API returns for a KEDA trigger."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Series:
    namespace: str
    metric: str  # "cpu" (cores), "memory" (bytes), a Pods/Object metric name, or an External metric name
    workload: str = ""  # the scale target's name for a workload's totals; "" for an External metric


@dataclass(frozen=True)
class Sample:
    value: float
    at: float  # the runner's clock when the source read it
    source: str  # who wrote it ("timeline", "gateway", "redis", "prometheus"): shown in events and messages


class MetricBoard:
    """The latest sample of each series. A source that can no longer read its series clears it, so the HPA
    sees the metric as unavailable (FailedGetResourceMetric / ScalingActive False), as with a real outage."""

    def __init__(self) -> None:
        self._samples: dict[Series, Sample] = {}

    def set(self, series: Series, value: float, at: float, source: str) -> None:
        self._samples[series] = Sample(float(value), at, source)

    def clear(self, series: Series) -> None:
        self._samples.pop(series, None)

    def get(self, series: Series) -> Sample | None:
        return self._samples.get(series)

    def snapshot(self) -> dict[Series, Sample]:
        return dict(self._samples)
