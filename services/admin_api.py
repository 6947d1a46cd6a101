"""Request and response models of the gateway's admin API.

The one module both sides import: the gateway serves these shapes and the console reads them,
so the console never needs the gateway's internals.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

TargetStatus = Literal["healthy", "half_open", "open", "cooling_down", "drained", "disabled"]
BreakerName = Literal["closed", "half_open", "open"]


class TargetState(BaseModel):
    name: str
    provider: str
    model: str
    status: TargetStatus
    enabled: bool
    drained: bool
    breaker: BreakerName
    cooldown_until: float | None  # Unix time
    cooldown_left_s: float | None
    cooldown_reason: str | None
    ema_latency_ms: float | None
    error_rate: float
    window_requests: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None


class PoolState(BaseModel):
    name: str
    weights: dict[str, int]
    available: bool


class GatewayState(BaseModel):
    started_at: float
    config_source: str
    ready: bool
    ready_reason: str
    in_flight: int
    routes: list[str]
    targets: list[TargetState]
    pools: list[PoolState]
