"""Request and response models of the gateway's admin API.

The one module both sides import: the gateway serves these shapes and the console reads them,
so the console never needs the gateway's internals.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

OPERATOR_HEADER = "x-switchboard-operator"

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
    version: int  # the control-state version a write must name as its base_version
    updated_at: float | None
    updated_by: str | None
    store: Literal["sqlite", "redis"]
    degraded: str | None  # why the state store is unreachable; writes are refused meanwhile
    started_at: float
    config_source: str
    ready: bool
    ready_reason: str
    in_flight: int
    routes: list[str]
    targets: list[TargetState]
    pools: list[PoolState]


def _reason(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("a reason is required")
    return value


class WeightsChange(BaseModel):
    """``PUT /admin/pools/{pool}/weights``: weights of some or all of the pool's targets."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[str, Annotated[StrictInt, Field(ge=0, le=100)]] = Field(min_length=1)
    base_version: StrictInt = Field(ge=0, description="the state version this change was based on")
    reason: str = Field(max_length=500)

    _check_reason = field_validator("reason")(_reason)


class DrainChange(BaseModel):
    """``POST /admin/targets/{target}/drain`` and ``/undrain``."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(max_length=500)
    base_version: StrictInt | None = Field(None, ge=0, description="omit to apply on the current version")

    _check_reason = field_validator("reason")(_reason)


class AuditRecord(BaseModel):
    version: int
    time: float
    actor: str  # the admin token's name
    operator: str | None  # user@host from the x-switchboard-operator header
    action: Literal["set_weights", "drain", "undrain"]
    target: str
    reason: str
    before: Any
    after: Any


class AuditPage(BaseModel):
    entries: list[AuditRecord]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ConflictResponse(BaseModel):
    """409: the base version was stale; ``current`` is the state to review before retrying."""

    error: ErrorDetail
    current: GatewayState
