"""Argo Rollouts as ``kubectl argo rollouts get rollout`` shows them: a pure view model, no Textual, no I/O.

From a Rollout, its AnalysisRuns and its ReplicaSets (the server's JSON, as the kube snapshot holds them) it
works out what the Releases pane draws and the CLI prints (pkg/kubectl-argo-rollouts/info/rollout_info.go and
utils/rollout/rolloututil.go ``GetRolloutPhase``):

- the phase (icon + word): ``observedGeneration != generation`` is Progressing "waiting for rollout spec update
  to be observed"; ``controllerPause`` without pause conditions is Progressing "waiting for rollout to unpause";
  else ``status.phase`` and ``status.message``;
- ``Step: i/n`` with i the current step index (the plugin prints the index, so ``10/10`` once every step ran);
- SetWeight (desired): the last setWeight at or before the current step, 0 while aborted, 100 when the steps
  are done; ActualWeight: 100 when the steps are done, else with traffic routing
  ``status.canary.weights.canary.weight``, without it the canary set's available pods ÷ all available x 100;
- the current step's AnalysisRun (else the background one) per metric: ✔ ✖ ? ⚠ counts, phase and message;
- the revision of the current ReplicaSet; pending while the controller has not observed a change.

``status.observedGeneration`` is a string in Argo's status (metadata.generation an integer): compared as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

REVISION_ANNOTATION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"
PHASE_ICONS = {"Progressing": "◌", "Paused": "॥", "Healthy": "✔", "Degraded": "✖", "Error": "⚠",
               "InvalidSpec": "⚠"}
UNKNOWN_ICON = "?"
WAITING_FOR_SPEC = "waiting for rollout spec update to be observed"
WAITING_FOR_UNPAUSE = "waiting for rollout to unpause"
METRIC_VERDICTS = {"Successful": "pass", "Failed": "fail", "Error": "fail", "Inconclusive": "inconclusive",
                   "Running": "running", "Pending": "running"}


def _status(rollout: Obj) -> Obj:
    return rollout.get("status") or {}


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _canary(rollout: Obj) -> Obj | None:
    canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary")
    return canary if isinstance(canary, dict) else None


def steps(rollout: Obj) -> list[Obj]:
    return list((_canary(rollout) or {}).get("steps") or [])


def step_index(rollout: Obj) -> int:
    try:
        return int(_status(rollout).get("currentStepIndex") or 0)
    except (TypeError, ValueError):
        return 0


def observed(rollout: Obj) -> bool:
    """Whether the controller has seen the latest spec (observedGeneration is a string; generation an integer)."""
    generation = _meta(rollout).get("generation")
    return generation is None or str(_status(rollout).get("observedGeneration") or "") == str(generation)


def phase(rollout: Obj) -> tuple[str, str]:
    """(phase, message) by ``GetRolloutPhase``."""
    status = _status(rollout)
    if not observed(rollout):
        return "Progressing", WAITING_FOR_SPEC
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "Progressing", WAITING_FOR_UNPAUSE
    return str(status.get("phase") or "Progressing"), str(status.get("message") or "")


def phase_icon(name: str) -> str:
    return PHASE_ICONS.get(name, UNKNOWN_ICON)


def _current_step(rollout: Obj) -> Obj | None:
    """``GetCurrentCanaryStep``: None without steps or once every step ran."""
    all_steps, index = steps(rollout), step_index(rollout)
    return all_steps[index] if 0 <= index < len(all_steps) else None


def desired_weight(rollout: Obj) -> int:
    """``GetCurrentSetWeight``: 0 while aborted, 100 when the steps are done, else the last setWeight so far."""
    if _status(rollout).get("abort"):
        return 0
    if _current_step(rollout) is None:
        return 100
    for step in reversed(steps(rollout)[:step_index(rollout) + 1]):
        if step.get("setWeight") is not None:
            return int(step["setWeight"])
    return 0


def _hash(replicaset: Obj) -> str | None:
    return (_meta(replicaset).get("labels") or {}).get(HASH_LABEL)


def _available(replicaset: Obj) -> int:
    return int((replicaset.get("status") or {}).get("availableReplicas") or 0)


def owned(rollout: Obj, replicasets: list[Obj]) -> list[Obj]:
    """The ReplicaSets whose controller is this Rollout."""
    uid = _meta(rollout).get("uid")
    return [rs for rs in replicasets
            if any(ref.get("controller") and ref.get("uid") == uid for ref in _meta(rs).get("ownerReferences") or [])]


def actual_weight(rollout: Obj, replicasets: list[Obj]) -> int:
    """The plugin's ActualWeight: 100 when done; the traffic router's weight; else the canary's share of the
    available pods (integer division, as Go does)."""
    if _current_step(rollout) is None:
        return 100
    status = _status(rollout)
    if (_canary(rollout) or {}).get("trafficRouting"):
        weights = (status.get("canary") or {}).get("weights") or {}
        return int((weights.get("canary") or {}).get("weight") or 0)
    total = int(status.get("availableReplicas") or 0)
    current, stable = status.get("currentPodHash"), status.get("stableRS")
    if total <= 0 or current is None or current == stable:
        return 0
    canary = next((rs for rs in replicasets if _hash(rs) == current), None)
    return 0 if canary is None else _available(canary) * 100 // total


def revision(rollout: Obj, replicasets: list[Obj]) -> int | None:
    """The current ReplicaSet's ``rollout.argoproj.io/revision`` (the rollout's own annotation before it exists)."""
    current = _status(rollout).get("currentPodHash")
    found = next((rs for rs in replicasets if current is not None and _hash(rs) == current), None)
    raw = (_meta(found or rollout).get("annotations") or {}).get(REVISION_ANNOTATION)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def step_kind(step: Obj | None) -> str:
    """The step as the plugin's tree names it: ``setWeight 10``, ``pause 1h``, ``pause``, ``analysis``."""
    if step is None:
        return "complete"
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause {duration}" if duration not in (None, "") else "pause (until promoted)"
    for kind in ("analysis", "experiment", "setCanaryScale", "setHeaderRoute", "setMirrorRoute", "plugin"):
        if kind in step:
            return kind
    return "step"


@dataclass(frozen=True)
class MetricResult:
    name: str
    phase: str  # Successful, Failed, Error, Inconclusive, Running, Pending
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    message: str = ""

    @property
    def verdict(self) -> str:
        return METRIC_VERDICTS.get(self.phase, "running")

    @property
    def counts(self) -> str:
        """The plugin's AnalysisRun INFO: ``✔ 2 ✖ 1`` (only the non-zero counts)."""
        parts = [f"{mark} {n}" for mark, n in (("✔", self.successful), ("✖", self.failed),
                                                ("?", self.inconclusive), ("⚠", self.error)) if n]
        return " ".join(parts) or "-"


@dataclass(frozen=True)
class AnalysisView:
    name: str
    phase: str
    message: str = ""
    metrics: tuple[MetricResult, ...] = ()
    background: bool = False  # the rollout's background analysis, not a step's


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def analysis(rollout: Obj, runs: list[Obj]) -> AnalysisView | None:
    """The current step's AnalysisRun (else the background one), by the name the rollout's status gives."""
    canary_status = _status(rollout).get("canary") or {}
    for key, background in (("currentStepAnalysisRunStatus", False), ("currentBackgroundAnalysisRunStatus", True)):
        pointer = canary_status.get(key) or {}
        name = pointer.get("name")
        if not name:
            continue
        run = next((r for r in runs if _meta(r).get("name") == name
                    and _meta(r).get("namespace") == _meta(rollout).get("namespace")), None)
        run_status = (run or {}).get("status") or {}
        metrics = tuple(MetricResult(str(m.get("name") or "?"), str(m.get("phase") or "Pending"),
                                     _int(m.get("successful")), _int(m.get("failed")), _int(m.get("inconclusive")),
                                     _int(m.get("error")), str(m.get("message") or ""))
                        for m in run_status.get("metricResults") or [])
        return AnalysisView(str(name), str(run_status.get("phase") or pointer.get("status") or "Pending"),
                            str(run_status.get("message") or pointer.get("message") or ""), metrics, background)
    return None


# ---- pending: a change sent, not yet reflected by the controller ---------------------------------------------


@dataclass(frozen=True)
class PendingMark:
    """What the console sent and what the rollout looked like then; ``settled`` says when the controller caught up."""

    action: str  # promote, promote-full, abort, retry, undo
    generation: int  # metadata.generation when the patch was sent
    step_index: int
    pause_conditions: int
    spec_patched: bool  # a spec patch bumps metadata.generation


def mark(action: str, rollout: Obj, spec_patched: bool) -> PendingMark:
    status = _status(rollout)
    return PendingMark(action, _int(_meta(rollout).get("generation")), step_index(rollout),
                       len(status.get("pauseConditions") or []), spec_patched)


def settled(pending: PendingMark, rollout: Obj) -> bool:
    """Whether the controller has reflected the change: a spec patch once the generation moved on and was observed;
    a status patch once the controller acted on it (the step moved or the pause cleared; abortedAt stamped; the
    abort cleared; promoteFull reset or the canary stable)."""
    status, generation = _status(rollout), _int(_meta(rollout).get("generation"))
    if pending.spec_patched and (generation <= pending.generation or not observed(rollout)):
        return False
    if not observed(rollout):
        return False
    if pending.action == "promote":
        return (step_index(rollout) != pending.step_index
                or len(status.get("pauseConditions") or []) < pending.pause_conditions
                or pending.spec_patched) and not (status.get("controllerPause") and not status.get("pauseConditions"))
    if pending.action == "promote-full":
        return not status.get("promoteFull") or status.get("currentPodHash") == status.get("stableRS")
    if pending.action == "abort":
        return bool(status.get("abort") and status.get("abortedAt"))
    if pending.action == "retry":
        return not status.get("abort") and not status.get("abortedAt")
    return True


# ---- the row ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutRow:
    key: str  # "rollout:<namespace>/<name>": what the Releases pane hands back as its selection
    namespace: str
    name: str
    phase: str
    icon: str
    message: str
    step: int  # the plugin's "Step: i/n": the current step index
    steps_total: int
    step_kind: str
    desired_weight: int
    actual_weight: int
    traffic_routing: bool
    aborted: bool
    revision: int | None
    pending: bool
    analysis: AnalysisView | None = None
    strategy: str = "Canary"
    replicas: tuple[int, int, int, int] = (0, 0, 0, 0)  # desired, updated, ready, available

    @property
    def phase_label(self) -> str:
        return f"{self.icon} {self.phase}"


def rollout_key(namespace: str, name: str) -> str:
    return f"rollout:{namespace}/{name}"


def row(rollout: Obj, runs: list[Obj], replicasets: list[Obj], pending: PendingMark | None = None) -> RolloutRow:
    meta, status, spec = _meta(rollout), _status(rollout), rollout.get("spec") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    mine = owned(rollout, replicasets)
    name_phase, message = phase(rollout)
    waiting = not observed(rollout) or (pending is not None and not settled(pending, rollout))
    return RolloutRow(
        key=rollout_key(namespace, name), namespace=namespace, name=name, phase=name_phase,
        icon=phase_icon(name_phase), message=message, step=min(step_index(rollout), len(steps(rollout))),
        steps_total=len(steps(rollout)), step_kind=step_kind(_current_step(rollout)),
        desired_weight=desired_weight(rollout), actual_weight=actual_weight(rollout, mine),
        traffic_routing=bool((_canary(rollout) or {}).get("trafficRouting")), aborted=bool(status.get("abort")),
        revision=revision(rollout, mine), pending=waiting, analysis=analysis(rollout, runs),
        strategy="Canary" if _canary(rollout) is not None else "BlueGreen",
        replicas=(_int(spec.get("replicas") if spec.get("replicas") is not None else 1),
                  _int(status.get("updatedReplicas")), _int(status.get("readyReplicas")),
                  _int(status.get("availableReplicas"))),
    )


def rows(rollouts: list[Obj], runs: list[Obj], replicasets: list[Obj],
         marks: dict[str, PendingMark] | None = None) -> list[RolloutRow]:
    marks = marks or {}
    out = []
    for rollout in rollouts:
        meta = _meta(rollout)
        key = rollout_key(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        out.append(row(rollout, runs, replicasets, marks.get(key)))
    return out
