"""Canary releases at the gateway: a canary target replacing a stable one inside a pool, step by step.

A release lives in the control state (versioned, audited, the same on every replica) as its spec and its
status. Steps use Argo Rollouts' vocabulary (``setWeight``, ``pause``, ``analysis``) and its phases
(Progressing, Paused, Degraded, Healthy). This module is pure: the status record, the state machine that
moves a release on (:func:`advance`), the operator's actions with Argo's preconditions (:func:`act`), the
per-arm windows each replica counts, and the gates that compare the arms (:func:`evaluate`). The
controller (services.gateway.canary_controller) runs it on the replica holding the lease.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from services.admin_api import ArmStats, GateResult, ReleasePhase, ReleaseSpec, Thresholds, Transition

HISTORY_LIMIT = 30
# Upper bounds (ms) of the latency buckets the arms count in: merged across replicas, they give a p99
# within one bucket's width, as Prometheus histograms do.
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 150, 250, 400, 600, 800, 1000, 1500, 2000, 3000, 4000, 6000, 8000,
                     10_000, 15_000, 20_000, 30_000, 60_000, 120_000, 300_000, math.inf)


class ActionRefused(Exception):
    """An operator action the release's phase does not allow (Argo's preconditions): 409."""


@dataclass(frozen=True)
class ReleaseStatus:
    phase: ReleasePhase = "Progressing"
    step_index: int = 0
    step_started_at: float = 0.0  # Unix time; a resumed pause moves it on by the time spent paused
    window_started_at: float = 0.0  # Unix time the current canary weight took effect: the analysis window
    paused_at: float | None = None
    weight: int = 0  # the canary weight the router applies
    aborted: bool = False
    message: str = ""
    history: tuple[Transition, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [t.model_dump() for t in self.history]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseStatus:
        return cls(**{**data, "history": tuple(Transition.model_validate(t) for t in data.get("history", ()))})


@dataclass(frozen=True)
class Release:
    spec: ReleaseSpec
    status: ReleaseStatus

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(exclude_none=True), "status": self.status.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        return cls(ReleaseSpec.model_validate(data["spec"]), ReleaseStatus.from_dict(data["status"]))

    @property
    def step_key(self) -> str:
        """Names the analysis window: the traffic since the current canary weight took effect (a setWeight
        step, or a retry, starts counting afresh; the pauses and analyses after it look at that window)."""
        return f"{self.spec.name}:{self.status.window_started_at:.3f}"

    @property
    def desired_weight(self) -> int:
        """The canary weight the steps call for at this point: the last setWeight at or before the step."""
        weight = 0
        for step in self.spec.steps[: self.status.step_index + 1]:
            if step.setWeight is not None:
                weight = step.setWeight
        return weight

    @property
    def finished(self) -> bool:
        return self.status.phase in ("Degraded", "Healthy")


def start(spec: ReleaseSpec, now: float, actor: str) -> Release:
    status = ReleaseStatus(step_started_at=now, window_started_at=now, message="starting")
    return Release(spec, _moved(status, "Progressing", 0, now, "created", actor))


def _moved(status: ReleaseStatus, phase: ReleasePhase, step_index: int, now: float, reason: str, actor: str,
           **changes: Any) -> ReleaseStatus:
    transition = Transition(time=now, phase=phase, step_index=step_index, reason=reason, actor=actor)
    new_step = changes.pop("restart_step", False) or step_index != status.step_index
    return replace(status, phase=phase, step_index=step_index, message=reason,
                   step_started_at=now if new_step else status.step_started_at,
                   history=((transition, *status.history))[:HISTORY_LIMIT], **changes)


# ---- the arms' windows ------------------------------------------------------------------------------------


@dataclass
class ArmWindow:
    """One arm's counts over one step on one replica; merged across replicas by adding."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))
    cost: float = 0.0
    costed: int = 0
    quality_sum: float = 0.0
    judged: int = 0
    judge_errors: int = 0
    judge_dropped: int = 0

    def success(self, latency_s: float) -> None:
        self.requests += 1
        self.latency[bisect.bisect_left(LATENCY_BOUNDS_MS, latency_s * 1000)] += 1

    def failure(self) -> None:
        self.requests += 1
        self.errors += 1

    def add(self, other: ArmWindow) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.cost += other.cost
        self.costed += other.costed
        self.quality_sum += other.quality_sum
        self.judged += other.judged
        self.judge_errors += other.judge_errors
        self.judge_dropped += other.judge_dropped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmWindow:
        window = cls(**data)
        if len(window.latency) != len(LATENCY_BOUNDS_MS):  # published by a replica with other buckets
            window.latency = [0] * len(LATENCY_BOUNDS_MS)
        return window

    def p99_ms(self) -> float | None:
        total = sum(self.latency)
        if not total:
            return None
        rank = math.ceil(0.99 * total)
        seen = 0
        for bound, count in zip(LATENCY_BOUNDS_MS, self.latency, strict=True):
            seen += count
            if seen >= rank:
                return bound if bound != math.inf else LATENCY_BOUNDS_MS[-2]
        return None

    def stats(self) -> ArmStats:
        return ArmStats(
            requests=self.requests, errors=self.errors,
            error_rate=self.errors / self.requests if self.requests else None,
            p99_ms=self.p99_ms(),
            cost_per_request=self.cost / self.costed if self.costed else None,
            quality=self.quality_sum / self.judged if self.judged else None,
            judged=self.judged, judge_errors=self.judge_errors, judge_dropped=self.judge_dropped,
        )


def assign_arm(release_name: str, sticky: str | None, canary_weight: int, draw: float) -> str:
    """``canary`` or ``stable``. A sticky key (client key or session) always lands on the same side of the
    weight, so a conversation does not flip when the weight changes except to follow it; without one,
    ``draw`` (uniform in [0, 1)) decides."""
    if sticky is None:
        point = draw
    else:
        digest = hashlib.blake2b(f"{release_name}\0{sticky}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64
    return "canary" if point * 100 < canary_weight else "stable"


# ---- the gates ----------------------------------------------------------------------------------------------


def evaluate(spec: ReleaseSpec, stable: ArmWindow, canary: ArmWindow) -> list[GateResult]:
    """Compare the arms over the step's window; a gate short of its minimum sample is inconclusive."""
    t: Thresholds = spec.thresholds
    s, c = stable.stats(), canary.stats()
    requests = {"stable": s.requests, "canary": c.requests}
    results = []

    enough = c.requests >= t.min_requests
    rate = c.error_rate
    results.append(GateResult(
        gate="error_rate", value=rate, threshold=t.max_error_rate, samples=requests,
        verdict=("fail" if rate is not None and rate > t.max_error_rate else "pass") if enough else "inconclusive",
        detail=f"canary {c.errors}/{c.requests} failed" if c.requests else "no canary requests yet"))

    both = min(s.requests - s.errors, c.requests - c.errors) >= t.min_requests
    ratio = c.p99_ms / s.p99_ms if s.p99_ms and c.p99_ms is not None else None
    results.append(GateResult(
        gate="p99_latency", value=ratio, threshold=t.max_p99_ratio, samples=requests,
        verdict=("fail" if ratio is not None and ratio > t.max_p99_ratio else "pass") if both and ratio is not None
        else "inconclusive",
        detail=f"p99 canary {_ms(c.p99_ms)} vs stable {_ms(s.p99_ms)}"))

    costed = min(stable.costed, canary.costed) >= t.min_requests
    cost_ratio = _cost_ratio(s.cost_per_request, c.cost_per_request)
    results.append(GateResult(
        gate="cost", value=cost_ratio, threshold=t.max_cost_ratio,
        samples={"stable": stable.costed, "canary": canary.costed},
        verdict=("fail" if cost_ratio is not None and cost_ratio > t.max_cost_ratio else "pass") if costed
        else "inconclusive",
        detail=f"per request canary ${_usd(c.cost_per_request)} vs stable ${_usd(s.cost_per_request)}"))

    if spec.judge is not None:
        judged = {"stable": s.judged, "canary": c.judged}
        have = min(s.judged, c.judged) >= t.min_judged
        drop = (s.quality - c.quality) / s.quality if have and s.quality and c.quality is not None else None
        if have and drop is None:  # stable scored 0: only a canary scoring 0 too is no drop
            drop = 0.0 if c.quality == 0 else -1.0
        results.append(GateResult(
            gate="quality", value=drop, threshold=t.max_quality_drop, samples=judged,
            verdict=("fail" if drop is not None and drop > t.max_quality_drop else "pass") if have
            else "inconclusive",
            detail=f"judge score canary {_score(c.quality)} vs stable {_score(s.quality)} "
                   f"({c.judge_errors + s.judge_errors} judge errors, {c.judge_dropped + s.judge_dropped} dropped)"))
        if t.min_quality is not None:
            floor_ok = c.judged >= t.min_judged
            results.append(GateResult(
                gate="quality_floor", value=c.quality, threshold=t.min_quality, samples=judged,
                verdict=("fail" if c.quality is not None and c.quality < t.min_quality else "pass") if floor_ok
                else "inconclusive",
                detail=f"canary judge score {_score(c.quality)}, floor {t.min_quality:.2f}"))
    return results


def _cost_ratio(stable: float | None, canary: float | None) -> float | None:
    if stable is None or canary is None:
        return None
    if stable == 0:
        return 1.0 if canary == 0 else math.inf
    return canary / stable


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def describe_failure(gates: list[GateResult]) -> str | None:
    """'gate error_rate failed: 0.052 > 0.01 (canary 26/500 failed)' for the first failed gate, else None."""
    for gate in gates:
        if gate.verdict == "fail":
            value = "-" if gate.value is None else f"{gate.value:.3g}"
            sign = "<" if gate.gate == "quality_floor" else ">"
            return f"gate {gate.gate} failed: {value} {sign} {gate.threshold:g} ({gate.detail})"
    return None


def describe_inconclusive(gates: list[GateResult], t: Thresholds) -> str:
    waiting = [f"{g.gate} ({', '.join(f'{arm} {n}' for arm, n in g.samples.items())}; needs "
               f"{t.min_judged if g.gate.startswith('quality') else t.min_requests})"
               for g in gates if g.verdict == "inconclusive"]
    return "analysis inconclusive, too few samples: " + "; ".join(waiting)


# ---- the state machine ---------------------------------------------------------------------------------------


def advance(release: Release, now: float, gates: list[GateResult] | None) -> Release | None:
    """What the controller does next, or None when nothing changes. ``gates`` is the current analysis
    (None when it was not evaluated this time): a failed gate aborts at once, in any running phase."""
    status = release.status
    if release.finished:
        return None
    failure = describe_failure(gates) if gates else None
    if failure is not None:
        return replace(release, status=_moved(status, "Degraded", status.step_index, now, f"rolled back: {failure}",
                                              "controller", weight=0, aborted=True))
    if status.phase != "Progressing":
        return None
    steps = release.spec.steps
    if status.step_index >= len(steps):
        return replace(release, status=_moved(status, "Healthy", status.step_index, now, "fully promoted",
                                              "controller", weight=100))
    step = steps[status.step_index]
    if step.setWeight is not None:
        return replace(release, status=_moved(status, "Progressing", status.step_index + 1, now,
                                              f"canary weight {step.setWeight}%", "controller",
                                              weight=step.setWeight, window_started_at=now))
    if step.pause is not None:
        if step.pause.duration_s is None:
            return replace(release, status=_moved(status, "Paused", status.step_index, now,
                                                  "paused: waiting for promote", "controller", paused_at=now))
        if now - status.step_started_at >= step.pause.duration_s:
            return replace(release, status=_moved(status, "Progressing", status.step_index + 1, now,
                                                  f"pause of {step.pause.duration_s:g}s done", "controller"))
        return None
    if gates is None:
        return None
    if all(g.verdict == "pass" for g in gates):
        return replace(release, status=_moved(status, "Progressing", status.step_index + 1, now,
                                              "analysis passed", "controller"))
    return replace(release, status=_moved(status, "Paused", status.step_index, now,
                                          describe_inconclusive(gates, release.spec.thresholds), "controller",
                                          paused_at=now))


def act(release: Release, action: str, now: float, actor: str, reason: str) -> Release:
    """An operator's action, with Argo Rollouts' preconditions; raises ActionRefused when the phase forbids it."""
    status, phase = release.status, release.status.phase
    why = f"{action} by {actor}: {reason}"
    if action == "promote":
        if phase not in ("Paused", "Progressing") or status.aborted:
            raise ActionRefused(f"cannot promote a release that is {phase}: promote works while Paused or "
                                "Progressing and not aborted")
        following = min(status.step_index + 1, len(release.spec.steps))  # skips the pause or analysis it waits on
        return replace(release, status=_moved(status, "Progressing", following, now, why, actor, paused_at=None))
    if action == "promote-full":
        if phase == "Healthy":
            raise ActionRefused("the release is already fully promoted")
        steps = release.spec.steps
        return replace(release, status=_moved(status, "Healthy", len(steps), now, why, actor, weight=100,
                                              paused_at=None, aborted=False))
    if action == "pause":
        if phase != "Progressing":
            raise ActionRefused(f"cannot pause a release that is {phase}: pause works while Progressing")
        return replace(release, status=_moved(status, "Paused", status.step_index, now, why, actor, paused_at=now))
    if action == "resume":
        if phase != "Paused":
            raise ActionRefused(f"cannot resume a release that is {phase}: resume works while Paused")
        held = now - status.paused_at if status.paused_at is not None else 0.0
        resumed = _moved(status, "Progressing", status.step_index, now, why, actor, paused_at=None)
        return replace(release, status=replace(resumed, step_started_at=status.step_started_at + held))
    if action == "abort":
        if phase in ("Degraded", "Healthy"):
            raise ActionRefused(f"cannot abort a release that is {phase}")
        return replace(release, status=_moved(status, "Degraded", status.step_index, now, why, actor, weight=0,
                                              aborted=True, paused_at=None))
    if action == "retry":
        if phase != "Degraded":
            raise ActionRefused(f"cannot retry a release that is {phase}: retry works once it is Degraded")
        return replace(release, status=_moved(status, "Progressing", 0, now, why, actor, weight=0, aborted=False,
                                              paused_at=None, restart_step=True, window_started_at=now))
    raise ActionRefused(f"unknown action '{action}'")
