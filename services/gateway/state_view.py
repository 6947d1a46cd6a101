"""Builds the read-only ``/admin/state`` document from the live gateway."""

from __future__ import annotations

import time

from services.admin_api import GatewayState, PoolState, TargetState, TargetStatus
from services.gateway.control import ControlPlane
from services.gateway.health import BreakerState
from services.gateway.runtime import Gateway

_BREAKER_NAMES = {BreakerState.CLOSED: "closed", BreakerState.HALF_OPEN: "half_open", BreakerState.OPEN: "open"}


def _status(enabled: bool, drained: bool, breaker: BreakerState, cooling: bool) -> TargetStatus:
    if not enabled:
        return "disabled"
    if drained:
        return "drained"
    if breaker is BreakerState.OPEN:
        return "open"
    if cooling:
        return "cooling_down"
    if breaker is BreakerState.HALF_OPEN:
        return "half_open"
    return "healthy"


def gateway_state(gw: Gateway, control: ControlPlane) -> GatewayState:
    mono_now, wall_now = time.monotonic(), time.time()
    targets = []
    for name, target in gw.config.targets.items():
        snap = gw.health[name].snapshot()
        enabled, drained = name in gw.enabled, name in gw.router.drained
        left = snap.cooldown_until - mono_now if snap.cooldown_until is not None else None
        targets.append(TargetState(
            name=name,
            provider=target.provider,
            model=target.model,
            status=_status(enabled, drained, snap.breaker, left is not None),
            enabled=enabled,
            drained=drained,
            breaker=_BREAKER_NAMES[snap.breaker],
            cooldown_until=wall_now + left if left is not None else None,
            cooldown_left_s=left,
            cooldown_reason=snap.cooldown_reason,
            error_rate=snap.error_rate,
            window_requests=snap.window_requests,
            requests_per_s=snap.requests_per_s,
            # ema_latency_ms, p50_ms and p99_ms predate the split: they carry total latency.
            ema_latency_ms=snap.total_ema_ms,
            p50_ms=snap.total_p50_ms,
            p99_ms=snap.total_p99_ms,
            ttft_ema_ms=snap.ttft_ema_ms,
            ttft_p50_ms=snap.ttft_p50_ms,
            ttft_p99_ms=snap.ttft_p99_ms,
            total_ema_ms=snap.total_ema_ms,
            total_p50_ms=snap.total_p50_ms,
            total_p99_ms=snap.total_p99_ms,
        ))
    pools = [
        PoolState(name=name, weights=dict(weights), available=gw.router.pool_available(name))
        for name, weights in gw.router.weights.items()
    ]
    ready, reason = gw.ready()
    return GatewayState(
        version=control.state.version,
        updated_at=control.state.updated_at,
        updated_by=control.state.updated_by,
        store=gw.config.state.backend,
        degraded=control.degraded,
        started_at=gw.started_at,
        config_source=gw.source,
        ready=ready,
        ready_reason=reason,
        in_flight=gw.in_flight,
        routes=list(gw.config.routes),
        targets=targets,
        pools=pools,
    )
