"""Argo Rollouts' canary strategy (rollout/canary.go, rollout/analysis.go, rollout/pause.go, rollout/sync.go).

A Rollout owns one ReplicaSet per pod template (label ``rollouts-pod-template-hash``, annotation
``rollout.argoproj.io/revision``); the ReplicaSets controller makes their pods. The first template becomes stable
at once; a new one walks ``strategy.canary.steps`` from step 0, one step per tick: setWeight (approximated with
replica counts without trafficRouting, closest whole number and up on a tie; with trafficRouting the canary gets
ceil(replicas x weight) pods, the stable set stays full and status.canary.weights is written), pause (timed on the
runner's clock, or indefinite until promoted), analysis (an AnalysisRun from the named templates: Successful moves
on, Inconclusive pauses, Failed or Error aborts); strategy.canary.analysis runs a background AnalysisRun beside
the steps. Replica counts move per reconcile within maxSurge and maxUnavailable (CalculateReplicaCountsForBasicCanary);
with trafficRouting an old stable set waits scaleDownDelaySeconds and an aborted canary abortScaleDownDelaySeconds.
After the last step the canary is promoted once fully available: it becomes stableRS and the older sets go to 0.

It reacts to exactly what ``kubectl argo rollouts`` patches (promote, promote --full, abort, retry, undo, pause,
restart) and writes the status as Argo does: phase and message (CalculateRolloutPhase), observedGeneration as a
string, currentStepIndex, currentPodHash, stableRS, pauseConditions, controllerPause, abort, abortedAt, the counts,
HPAReplicas, selector and conditions. blueGreen and workloadRef are refused with an InvalidSpec condition.
A scenario decides an analysis through the Rollout's annotations (ANALYSIS_OUTCOME_PREFIX + step index, or
BACKGROUND_OUTCOME), which are copied onto the AnalysisRun (services/kubesim/controllers/analysis.py)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from services.kubesim.controllers.analysis import COMPLETED, OUTCOME, duration_seconds
from services.kubesim.controllers.base import (
    ANALYSIS_OUTCOME_PREFIX,
    ANNOTATION_PREFIX,
    Context,
    condition,
    is_ready,
    owned_by,
    owner_reference,
    set_condition,
    template_hash,
)
from services.kubesim.errors import ApiError
from services.kubesim.store import Obj

HASH_LABEL = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
TYPE_LABEL, STEP_TYPE, BACKGROUND_TYPE, STEP_INDEX_LABEL = "rollout-type", "Step", "Background", "step-index"
# On a Rollout, "<this>: Successful|Failed|Inconclusive|Error" decides its background AnalysisRuns (as
# ANALYSIS_OUTCOME_PREFIX + "<step>" decides a step's).
BACKGROUND_OUTCOME = ANNOTATION_PREFIX + "analysis-background"
PAUSE_STEP, PAUSE_INCONCLUSIVE = "CanaryPauseStep", "InconclusiveAnalysisRun"
MAX_WEIGHT = 100


def _replicas(obj: Obj) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _count(replicaset: Obj | None, field: str) -> int:
    return int(((replicaset or {}).get("status") or {}).get(field) or 0)


def _revision(replicaset: Obj) -> int:
    text = (replicaset["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(text) if str(text).isdigit() else 0


def _percent(value: Any, replicas: int, rounding: Any) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return int(rounding(replicas * int(value[:-1]) / 100))
    return int(value)


def fenceposts(canary: Obj, replicas: int) -> tuple[int, int]:
    """resolveFenceposts: (maxSurge, maxUnavailable) as pod counts, 25% each by default (surge rounded up,
    unavailable down); both 0 makes maxUnavailable 1, and it never exceeds the replicas."""
    surge = _percent(canary.get("maxSurge", "25%"), replicas, math.ceil)
    unavailable = _percent(canary.get("maxUnavailable", "25%"), replicas, math.floor)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


@dataclass(frozen=True)
class SetSize:
    """A ReplicaSet as the replica arithmetic sees it: spec.replicas and status.availableReplicas."""

    replicas: int
    available: int


def _delta(weight: int, canary: int, total: int) -> float:
    return abs(canary * MAX_WEIGHT / total - weight)


def _tied(weight: int, total: int) -> bool:
    fraction = total * weight / MAX_WEIGHT
    return fraction - math.floor(fraction) == 0.5


def basic_canary_counts(replicas: int, weight: int, surge: int) -> tuple[int, int]:
    """approximateWeightedCanaryStableReplicaCounts: the (canary, stable) counts closest to ``weight``, rounding up
    on a tie; a weight of 1-99 with 2+ replicas gives each side at least one pod, and the pair may use one surge."""
    if replicas == 0:
        return 0, 0
    ceil, floor = math.ceil(replicas * weight / MAX_WEIGHT), math.floor(replicas * weight / MAX_WEIGHT)
    zero_allowed = weight in (0, MAX_WEIGHT) or (replicas == 1 and surge == 0)
    options: list[tuple[int, int]] = []
    if ceil < replicas or zero_allowed:
        options.append((ceil, replicas))
    if not _tied(weight, replicas) and (floor != 0 or zero_allowed):
        options.append((floor, replicas))
    if surge > 0:
        options.append((ceil, replicas + 1))
        if not _tied(weight, replicas + 1) and (floor != 0 or zero_allowed):
            options.append((floor, replicas + 1))
    if not options:
        return 0, replicas
    best = options[0]
    for option in options[1:]:
        if _delta(weight, *option) < _delta(weight, *best):
            best = option
    return best[0], best[1] - best[0]


def _for_scale_down(size: SetSize | None, ignore_availability: bool) -> int:
    """GetReplicasForScaleDown."""
    if size is None:
        return 0
    if size.replicas < size.available or ignore_availability:
        return size.replicas
    return size.available


def _drain(size: SetSize | None, desired: int, scale_down: int, count: int) -> int:
    """calculateScaleDownReplicaCount."""
    if size is not None and size.replicas > desired:
        return max(desired, size.replicas - scale_down)
    return count


def _within_limits(drain: SetSize | None, adjust: SetSize | None, drain_count: int, adjust_count: int,
                   max_allowed: int, min_available: int) -> tuple[int, int]:
    """adjustReplicaWithinLimits: keeps the pair within maxSurge without going under the minimum available."""
    over = max(0, adjust_count + drain_count - max_allowed)
    available = min(drain.available, drain_count) if drain is not None else 0
    if adjust is not None:
        adjust_count -= over
        available += min(adjust.available, adjust_count)
        extra = max(0, adjust.available - adjust_count)
        adjust_count += min(extra, max(0, min_available - available))
        drain_count -= max(0, adjust_count + drain_count - max_allowed)
    return drain_count, adjust_count


def basic_canary_step(replicas: int, weight: int, surge: int, unavailable: int, new: SetSize | None,
                      stable: SetSize | None, older: int) -> tuple[int, int]:
    """CalculateReplicaCountsForBasicCanary: this reconcile's (canary, stable) sizes on the way to the weight's
    counts, growing within maxSurge (the stable set first) and shrinking within maxUnavailable (older sets first).
    ``stable`` is None when there is no stable set apart from the canary; ``older`` is the older sets' replicas."""
    desired_new, desired_stable = basic_canary_counts(replicas, weight, surge)
    new_count = new.replicas if new is not None else 0
    stable_count = stable.replicas if stable is not None else 0
    if stable is None:
        desired_new, desired_stable = replicas, 0
    max_allowed = replicas + surge
    scale_up = max_allowed - older - (new.replicas if new else 0) - (stable.replicas if stable else 0)
    if stable is not None and stable.replicas < desired_stable and scale_up > 0:
        if stable.replicas + scale_up < desired_stable:
            stable_count, scale_up = stable.replicas + scale_up, 0
        else:
            stable_count, scale_up = desired_stable, scale_up - (desired_stable - stable.replicas)
    if new is not None and new.replicas < desired_new and scale_up > 0:
        new_count = min(new.replicas + scale_up, desired_new)
    if older > 0:
        return new_count, stable_count
    min_available = replicas - unavailable
    increasing = new is None or desired_new >= new.replicas
    removable = _for_scale_down(new, not increasing) + _for_scale_down(stable, increasing)
    if removable <= min_available:
        return new_count, stable_count
    scale_down = removable - min_available
    if not increasing:
        new_count = _drain(new, desired_new, scale_down, new_count)
        new_count, stable_count = _within_limits(new, stable, new_count, stable_count, max_allowed, min_available)
    elif stable is not None:
        stable_count = _drain(stable, desired_stable, scale_down, stable_count)
        stable_count, new_count = _within_limits(stable, new, stable_count, new_count, max_allowed, min_available)
    return new_count, stable_count


def current_weight(steps: list[Obj], index: int) -> int:
    """GetCurrentSetWeight: the last setWeight at or before the current step (0 before any)."""
    for step in reversed(steps[: index + 1]):
        if "setWeight" in step:
            return int(step["setWeight"])
    return 0


def canary_scale(steps: list[Obj], index: int, weight: int) -> tuple[int | None, int]:
    """GetCanaryReplicasOrWeight with trafficRouting: the last setCanaryScale's replicas or weight (matchTrafficWeight
    or none: the traffic weight)."""
    for step in reversed(steps[: index + 1]):
        scale = step.get("setCanaryScale")
        if scale is None:
            continue
        if scale.get("replicas") is not None:
            return int(scale["replicas"]), weight
        if scale.get("weight") is not None:
            return None, int(scale["weight"])
        break
    return None, weight


def step_string(step: Obj) -> str:
    """CanaryStepString."""
    if "setWeight" in step:
        return f"setWeight: {step['setWeight']}"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return "pause" if duration is None else f"pause: {duration}"
    if "setCanaryScale" in step:
        scale = step["setCanaryScale"] or {}
        if scale.get("weight") is not None:
            return f"setCanaryScale{{weight: {scale['weight']}}}"
        if scale.get("matchTrafficWeight"):
            return "setCanaryScale{matchTrafficWeight: true}"
        return f"setCanaryScale{{replicas: {scale.get('replicas')}}}"
    return next(iter(step), "unknown")


def format_selector(selector: Obj) -> str:
    """metav1.FormatLabelSelector for matchLabels and matchExpressions."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def rollout_phase(spec: Obj, status: Obj) -> tuple[str, str]:
    """CalculateRolloutPhase (utils/rollout/rolloututil.go), checks in its order."""
    for item in status.get("conditions") or []:
        if item.get("type") == "InvalidSpec" or item.get("reason") in ("RolloutAborted", "ProgressDeadlineExceeded"):
            return "Degraded", f"{item.get('reason')}: {item.get('message')}"
    if spec.get("paused"):
        return "Paused", "manually paused"
    for pause in status.get("pauseConditions") or []:
        return "Paused", str(pause.get("reason"))
    if spec.get("restartAt") and spec.get("restartAt") != status.get("restartedAt"):
        return "Progressing", "rollout is restarting"
    replicas = _replicas({"spec": spec})
    if status.get("updatedReplicas", 0) < replicas:
        return "Progressing", "more replicas need to be updated"
    if status.get("availableReplicas", 0) < status.get("updatedReplicas", 0):
        return "Progressing", "updated replicas are still becoming available"
    if not ((spec.get("strategy") or {}).get("canary") or {}).get("trafficRouting") and \
            status.get("replicas", 0) > status.get("updatedReplicas", 0):
        return "Progressing", "old replicas are pending termination"
    if not status.get("stableRS") or status.get("stableRS") != status.get("currentPodHash"):
        return "Progressing", "waiting for all steps to complete"
    return "Healthy", ""


class Rollouts:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.pauses: dict[str, tuple[str, float]] = {}  # rollout uid -> (pause condition startTime, clock then)
        self.deadlines: dict[str, float] = {}  # ReplicaSet uid -> the clock at which it may be scaled down
        self._pods: list[Obj] | None = None

    def pods(self) -> list[Obj]:
        """Every pod, listed at most once a tick (only a restart needs them)."""
        if self._pods is None:
            self._pods = self.context.store.list(self.context.kinds.pods, None, lambda _: True)
        return self._pods

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        self._pods = None
        replicasets = store.list(kinds.replicasets, None, lambda _: True)
        runs = store.list(kinds.analysisruns, None, lambda _: True)
        live = set()
        for rollout in store.list(kinds.rollouts, None, lambda _: True):
            live.add(rollout["metadata"]["uid"])
            _Sync(self, rollout, [rs for rs in replicasets if owned_by(rs, rollout)],
                  [run for run in runs if owned_by(run, rollout)]).run()
        for uid in [uid for uid in self.pauses if uid not in live]:
            del self.pauses[uid]
        sets = {rs["metadata"]["uid"] for rs in replicasets}
        for uid in [uid for uid in self.deadlines if uid not in sets]:
            del self.deadlines[uid]


class _Sync:
    """One Rollout's reconcile."""

    def __init__(self, controller: Rollouts, rollout: Obj, owned: list[Obj], runs: list[Obj]) -> None:
        self.controller, self.context = controller, controller.context
        self.rollout, self.owned, self.runs = rollout, owned, runs
        self.meta, self.spec = rollout["metadata"], rollout.get("spec") or {}
        self.status: Obj = copy.deepcopy(rollout.get("status") or {})
        self.old: Obj = rollout.get("status") or {}
        self.stamp = self.context.timestamp()
        self.canary: Obj = (self.spec.get("strategy") or {}).get("canary") or {}
        self.steps: list[Obj] = self.canary.get("steps") or []
        self.replicas = _replicas(self.rollout)
        self.abort_message = ""
        self.invalid = ""
        self.delayed: set[str] = set()  # ReplicaSets whose scale-down waits on a delay this reconcile
        self.keep: set[str] = set()  # the AnalysisRuns this reconcile still wants running

    # --- the reconcile, in Argo's order ----------------------------------------------------------------------

    def run(self) -> None:
        strategy = self.spec.get("strategy") or {}
        if "canary" not in strategy:
            kind = "blueGreen" if "blueGreen" in strategy else "a strategy"
            self.invalid = f"kubesim simulates the canary strategy only; {kind} is not simulated"
            self._finish(None)
            return
        template = self.spec.get("template") or {}
        if not template:
            self.invalid = ("kubesim does not simulate spec.workloadRef" if self.spec.get("workloadRef")
                            else "Rollout has missing field 'spec.template'")
            self._finish(None)
            return
        digest = template_hash(template)
        new = self._new_replicaset(template, digest)
        self.revision = _revision(new)
        self._annotate_revision()
        status, steps = self.status, self.steps
        step_hash = template_hash({"steps": steps})
        stable = status.get("stableRS") or ""
        changed = status.get("currentPodHash") != digest or status.get("currentStepHash") != step_hash
        index = min(max(int(status.get("currentStepIndex") or 0), 0), len(steps))
        if not stable:  # the first template: no steps to walk
            stable, index = digest, len(steps)
        elif changed:
            if status.get("currentPodHash") not in (None, digest):
                self._cancel_runs()
                self.context.event(self.rollout, "RolloutUpdated", f"Rollout updated to revision {self.revision}")
            self._reset()
            index = len(steps) if digest == stable else 0
        status.update(currentPodHash=digest, currentStepHash=step_hash, stableRS=stable)
        status.setdefault("canary", {})
        if status.get("promoteFull"):
            status["pauseConditions"], status["abort"] = [], False
            index = len(steps)
        self.index = index
        self.digest, self.new = digest, new
        if not changed and not status.get("abort") and not self.spec.get("paused") and digest != stable \
                and index < len(steps):
            self._step()
        if not changed:
            self._background_analysis()
        self._abort()
        if not status.get("abort") and self._current_run() is None:
            status["canary"].pop("currentStepAnalysisRunStatus", None)
        self.keep.add(str(self._current_run()))
        self._cancel_runs(keep=set() if status.get("abort") else self.keep)
        self._promote()
        self._scale()
        self._restart()
        self._finish(new)

    def _reset(self) -> None:
        """resetRolloutStatus: a new revision starts with no pause, no abort and no analysis."""
        status = self.status
        for key in ("pauseConditions", "abortedAt"):
            status.pop(key, None)
        status.update(controllerPause=False, abort=False, promoteFull=False)
        canary = status.get("canary") or {}
        canary.pop("currentStepAnalysisRunStatus", None)
        status["canary"] = canary

    # --- ReplicaSets -----------------------------------------------------------------------------------------

    def _new_replicaset(self, template: Obj, digest: str) -> Obj:
        store, kinds = self.context.store, self.context.kinds
        newest = max((_revision(rs) for rs in self.owned), default=0)
        found = next((rs for rs in self.owned if (rs["metadata"].get("labels") or {}).get(HASH_LABEL) == digest), None)
        if found is not None:
            if _revision(found) < newest:  # a rollback to an older template gets the next revision, as in Argo
                found = store.get(kinds.replicasets, found["metadata"]["namespace"], found["metadata"]["name"])
                found["metadata"].setdefault("annotations", {})[REVISION] = str(newest + 1)
                found = store.replace(kinds.replicasets, found["metadata"]["namespace"], found["metadata"]["name"],
                                      found)
                self.owned = [found if rs["metadata"]["uid"] == found["metadata"]["uid"] else rs for rs in self.owned]
            return found
        template = copy.deepcopy(template)
        labels = {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: digest}
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(self.spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: digest}
        name = f"{self.meta['name']}-{digest}"
        created = store.create(kinds.replicasets, self.meta["namespace"], {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "labels": labels, "annotations": {REVISION: str(newest + 1)},
                         "ownerReferences": [owner_reference(self.rollout)]},
            "spec": {"replicas": 0, "selector": selector, "template": template,
                     "minReadySeconds": self.spec.get("minReadySeconds", 0)}})
        self.context.event(self.rollout, "NewReplicaSetCreated", f"Created ReplicaSet {name} (revision {newest + 1})")
        self.owned.append(created)
        return created

    def _annotate_revision(self) -> None:
        if (self.meta.get("annotations") or {}).get(REVISION) == str(self.revision):
            return
        store, kinds = self.context.store, self.context.kinds
        current = store.get(kinds.rollouts, self.meta["namespace"], self.meta["name"])
        current["metadata"].setdefault("annotations", {})[REVISION] = str(self.revision)
        updated = store.replace(kinds.rollouts, self.meta["namespace"], self.meta["name"], current)
        self.meta = updated["metadata"]

    def _by_hash(self, digest: str) -> Obj | None:
        return next((rs for rs in self.owned if (rs["metadata"].get("labels") or {}).get(HASH_LABEL) == digest), None)

    def _stable_set(self) -> Obj | None:
        """The stable ReplicaSet apart from the canary (None on the stable template, or when it is gone)."""
        stable = self._by_hash(self.status["stableRS"])
        return None if stable is None or stable["metadata"]["uid"] == self.new["metadata"]["uid"] else stable

    def _desired(self) -> tuple[int, int]:
        """The (canary, stable) counts the current weight asks for (what a setWeight step waits for)."""
        weight = self.weight()
        if self._stable_set() is None:
            return self.replicas, 0
        if self.canary.get("trafficRouting"):
            count, scale_weight = canary_scale(self.steps, self.index, weight)
            canary = count if count is not None else math.ceil(self.replicas * scale_weight / MAX_WEIGHT)
            return (0 if self.status.get("abort") else canary), self.replicas
        return basic_canary_counts(self.replicas, weight, fenceposts(self.canary, self.replicas)[0])

    def _older(self) -> list[Obj]:
        stable = self._stable_set()
        keep = {self.new["metadata"]["uid"], *([stable["metadata"]["uid"]] if stable else [])}
        return sorted((rs for rs in self.owned if rs["metadata"]["uid"] not in keep), key=_revision, reverse=True)

    def weight(self) -> int:
        """The canary's share now: 0 when aborted, 100 once every step is done (or on the stable template)."""
        if self.status.get("abort"):
            return 0
        if self.digest == self.status.get("stableRS") or self.index >= len(self.steps):
            return MAX_WEIGHT
        return current_weight(self.steps, self.index)

    def _at_targets(self) -> bool:
        """AtDesiredReplicaCountsForCanary, for a setWeight step's completion: the canary at its count and
        available, the stable set at its count, and (without traffic routing) no older pod available."""
        canary, kept = self._desired()
        if _replicas(self.new) != canary or _count(self.new, "availableReplicas") < canary:
            return False
        stable = self._stable_set()
        if stable is not None and (_replicas(stable) != kept or _count(stable, "replicas") != kept):
            return False
        routed = bool(self.canary.get("trafficRouting"))
        return routed or not any(_count(rs, "availableReplicas") for rs in self._older())

    def _targets(self) -> dict[str, int]:
        """Each owned ReplicaSet's size for this reconcile (by uid)."""
        new, stable, older = self.new, self._stable_set(), self._older()
        surge, unavailable = fenceposts(self.canary, self.replicas)
        targets = {rs["metadata"]["uid"]: _replicas(rs) for rs in self.owned}
        if self.canary.get("trafficRouting"):
            canary, kept = self._desired()
            if self.status.get("abort") and stable is not None:
                canary = self._after_delay(new, "abortScaleDownDelaySeconds", 0, _replicas(new))
            targets[new["metadata"]["uid"]] = canary
            if stable is not None:
                targets[stable["metadata"]["uid"]] = kept
        else:
            def size(rs: Obj | None) -> SetSize | None:
                return None if rs is None else SetSize(_replicas(rs), _count(rs, "availableReplicas"))

            canary, kept = basic_canary_step(self.replicas, self.weight(), surge, unavailable, size(new), size(stable),
                                             sum(_replicas(rs) for rs in older))
            targets[new["metadata"]["uid"]] = canary
            if stable is not None:
                targets[stable["metadata"]["uid"]] = kept
        self._older_targets(targets, older, unavailable)
        return targets

    def _older_targets(self, targets: dict[str, int], older: list[Obj], unavailable: int) -> None:
        """scaleDownOldReplicaSetsForCanary: older sets lose their unavailable pods at once, then shrink while
        enough stay available; with traffic routing, the previous stable set waits scaleDownDelaySeconds (30 s)
        once the canary is promoted, and an intermediate set goes at once."""
        routed = bool(self.canary.get("trafficRouting"))
        promoted = self.status["stableRS"] == self.digest
        room = sum(_count(rs, "availableReplicas") for rs in self.owned) - (self.replicas - unavailable)
        for rs in older:
            uid, size = rs["metadata"]["uid"], _replicas(rs)
            if routed and promoted:
                targets[uid] = self._after_delay(rs, "scaleDownDelaySeconds", 0, size)
                continue
            target = min(size, _count(rs, "availableReplicas"))
            if routed:
                target = 0
            elif room > 0 and target > 0:
                cut = min(target, room)
                target, room = target - cut, room - cut
            targets[uid] = target

    def _after_delay(self, rs: Obj, field: str, then: int, until: int) -> int:
        """``then`` once the strategy's delay (30 s by default; 0 for an abort means never) has passed on the runner's
        clock since this ReplicaSet was first due, ``until`` before."""
        delay = int(self.canary.get(field, 30))
        if field == "abortScaleDownDelaySeconds" and delay == 0:
            return until
        uid, now = rs["metadata"]["uid"], self.context.clock()
        self.delayed.add(uid)
        due = self.controller.deadlines.setdefault(uid, now + delay)
        return then if now >= due else until

    def _scale(self) -> None:
        targets = self._targets()
        for rs in self.owned:  # a delay that no longer applies (a retry, a new revision) starts afresh next time
            if rs["metadata"]["uid"] not in self.delayed:
                self.controller.deadlines.pop(rs["metadata"]["uid"], None)
        for rs in self.owned:
            wanted, before = targets[rs["metadata"]["uid"]], _replicas(rs)
            if wanted == before:
                continue
            store, kinds, meta = self.context.store, self.context.kinds, rs["metadata"]
            current = store.get(kinds.replicasets, meta["namespace"], meta["name"])
            current["spec"]["replicas"] = wanted
            resized = store.replace(kinds.replicasets, meta["namespace"], meta["name"], current)
            self.owned = [resized if item["metadata"]["uid"] == meta["uid"] else item for item in self.owned]
            if meta["uid"] == self.new["metadata"]["uid"]:
                self.new = resized
            direction = "up" if wanted > before else "down"
            self.context.event(self.rollout, "ScalingReplicaSet",
                               f"Scaled {direction} ReplicaSet {meta['name']} (revision {_revision(rs)}) "
                               f"from {before} to {wanted}")

    # --- steps -----------------------------------------------------------------------------------------------

    def _step(self) -> None:
        step = self.steps[self.index]
        if "setWeight" in step:
            done = self._at_targets()
        elif "pause" in step:
            done = self._paused_step(step.get("pause") or {})
        elif "analysis" in step:
            done = self._analysis_step(step.get("analysis") or {})
        else:  # setCanaryScale takes effect at once; experiments, routes and plugins are not simulated
            done = True
        if not done:
            return
        self.controller.pauses.pop(self.meta["uid"], None)
        self.index += 1
        (self.status.get("canary") or {}).pop("currentStepAnalysisRunStatus", None)
        self._remove_pause(PAUSE_STEP)
        self.context.event(self.rollout, "RolloutStepCompleted",
                           f"Rollout step {self.index}/{len(self.steps)} completed ({step_string(step)})")

    def _pause(self, reason: str) -> Obj | None:
        return next((p for p in self.status.get("pauseConditions") or [] if p.get("reason") == reason), None)

    def _add_pause(self, reason: str) -> Obj:
        found = self._pause(reason)
        if found is None:
            found = {"reason": reason, "startTime": self.stamp}
            self.status["pauseConditions"] = [*(self.status.get("pauseConditions") or []), found]
            self.status["controllerPause"] = True
        return found

    def _remove_pause(self, reason: str) -> None:
        pauses = self.status.get("pauseConditions") or []
        self.status["pauseConditions"] = [p for p in pauses if p.get("reason") != reason]

    def _paused_step(self, pause: Obj) -> bool:
        """CompletedCanaryPauseStep: done once a user removed the condition, or once its duration has passed."""
        found = self._pause(PAUSE_STEP)
        if found is None and self.old.get("controllerPause"):
            return True  # promoted: the controller had paused and the condition is gone
        uid, now = self.meta["uid"], self.context.clock()
        if found is None:
            found = self._add_pause(PAUSE_STEP)
        started = self.controller.pauses.get(uid)
        if started is None or started[0] != found["startTime"]:
            started = self.controller.pauses[uid] = (found["startTime"], now)
        duration = pause.get("duration")
        if duration is None:
            return False
        try:
            seconds = duration_seconds(duration)
        except ValueError:
            self.invalid = f"invalid pause duration {duration!r}: use seconds or a number with s, m or h"
            return False
        return now > started[1] + seconds

    def _analysis_step(self, analysis: Obj) -> bool:
        """reconcileStepBasedAnalysisRun: Successful moves on, Inconclusive pauses, Failed or Error aborts."""
        if self.status.get("pauseConditions"):
            return False
        run = self._reconcile_run(analysis, "currentStepAnalysisRunStatus", self.index, "Step-based")
        return run is not None and (run.get("status") or {}).get("phase") == "Successful"

    def _background_analysis(self) -> None:
        """reconcileBackgroundAnalysisRun: strategy.canary.analysis runs beside the steps (from startingStep) until
        the canary is promoted; Inconclusive pauses, Failed or Error aborts."""
        analysis = self.canary.get("analysis") or {}
        if not analysis.get("templates") or self.status.get("abort") or self.status.get("promoteFull") \
                or self.status["stableRS"] == self.digest:
            return
        starting = analysis.get("startingStep")
        if starting is not None and self.index < len(self.steps) and self.index < int(starting):
            return
        if self._pause(PAUSE_INCONCLUSIVE) is not None:
            self.keep.add(str((self.status["canary"].get("currentBackgroundAnalysisRunStatus") or {}).get("name")))
            return
        self._reconcile_run(analysis, "currentBackgroundAnalysisRunStatus", None, "Background")

    def _reconcile_run(self, analysis: Obj, field: str, index: int | None, kind: str) -> Obj | None:
        """The run recorded in status.canary.<field> (a new one when needsNewAnalysisRun), its status copied there,
        and the rollout paused or aborted by its phase; None when it cannot be created (InvalidSpec)."""
        canary = self.status["canary"]
        recorded = (canary.get(field) or {}).get("name")
        run = next((r for r in self.runs if r["metadata"]["name"] == recorded and self._belongs(r, index)), None)
        if self._needs_new_run(run):
            try:
                run = self._create_run(analysis, index)
            except (ApiError, LookupError) as exc:
                self.invalid = str(exc)
                return None
        assert run is not None
        self.keep.add(run["metadata"]["name"])
        phase = (run.get("status") or {}).get("phase") or ""
        message = (run.get("status") or {}).get("message") or ""
        canary[field] = {"name": run["metadata"]["name"], "status": phase, **({"message": message} if message else {})}
        if phase == "Inconclusive":
            self._add_pause(PAUSE_INCONCLUSIVE)
        elif phase in ("Failed", "Error"):
            self.status["abort"] = True
            self.abort_message = f"{kind} analysis phase error/failed" + (f": {message}" if message else "")
        return run

    def _needs_new_run(self, run: Obj | None) -> bool:
        """needsNewAnalysisRun: none yet; after a promote past an Inconclusive run; after a retry."""
        if run is None:
            return True
        old = self.old
        pauses = {p.get("reason") for p in old.get("pauseConditions") or []}
        if old.get("controllerPause") and PAUSE_STEP not in pauses:
            return (run.get("status") or {}).get("phase") == "Inconclusive"
        return bool(old.get("abortedAt"))

    def _belongs(self, run: Obj, index: int | None) -> bool:
        """A run of this revision, of this step (``index``) or the background one (None)."""
        labels = run["metadata"].get("labels") or {}
        if index is None:
            return labels.get(TYPE_LABEL) == BACKGROUND_TYPE and labels.get(HASH_LABEL) == self.digest
        return labels.get(STEP_INDEX_LABEL) == str(index) and labels.get(HASH_LABEL) == self.digest

    def _create_run(self, analysis: Obj, index: int | None) -> Obj:
        """newAnalysisRunFromRollout: ``<rollout>-<podhash>-<revision>[-<step>]`` (``.N`` on a collision)."""
        store, kinds, namespace = self.context.store, self.context.kinds, self.meta["namespace"]
        metrics: list[Obj] = []
        args: dict[str, Obj] = {}
        dry_run: list[Obj] = []
        for ref in analysis.get("templates") or []:
            name = ref.get("templateName", "")
            try:
                template = store.get(kinds.analysistemplates, namespace, name)
            except ApiError as exc:
                raise LookupError(f'AnalysisTemplate "{name}" not found') from exc
            spec = template.get("spec") or {}
            metrics.extend(copy.deepcopy(spec.get("metrics") or []))
            dry_run.extend(copy.deepcopy(spec.get("dryRun") or []))
            for arg in spec.get("args") or []:
                args.setdefault(arg["name"], copy.deepcopy(arg))
        for arg in analysis.get("args") or []:
            args[arg["name"]] = {"name": arg["name"], "value": self._arg_value(arg)}
        dry_run.extend(copy.deepcopy(analysis.get("dryRun") or []))
        if index is None:
            labels = {HASH_LABEL: self.digest, TYPE_LABEL: BACKGROUND_TYPE}
            outcome = (self.meta.get("annotations") or {}).get(BACKGROUND_OUTCOME)
        else:
            labels = {HASH_LABEL: self.digest, TYPE_LABEL: STEP_TYPE, STEP_INDEX_LABEL: str(index)}
            outcome = (self.meta.get("annotations") or {}).get(ANALYSIS_OUTCOME_PREFIX + str(index))
        labels.update((self.spec.get("selector") or {}).get("matchLabels") or {})
        annotations = {REVISION: str(self.revision), **({OUTCOME: outcome} if outcome else {})}
        spec: Obj = {"metrics": metrics,
                     "args": [{key: value for key, value in arg.items() if value is not None} for arg in args.values()]}
        if dry_run:
            spec["dryRun"] = dry_run
        base = f"{self.meta['name']}-{self.digest}-{self.revision}" + ("" if index is None else f"-{index}")
        name, collisions = base, 0
        while True:
            try:
                run = store.create(kinds.analysisruns, namespace, {
                    "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
                    "metadata": {"name": name, "labels": labels, "annotations": annotations,
                                 "ownerReferences": [owner_reference(self.rollout)]},
                    "spec": spec})
            except ApiError as exc:
                if exc.status != 409:
                    raise
                collisions += 1
                name = f"{base}.{collisions}"
                continue
            kind = "Background" if index is None else "Step"
            self.context.event(self.rollout, "AnalysisRunRunning",
                               f"{kind} Analysis Run '{name}' Status New: 'Pending' Previous: 'NoPreviousStatus'")
            self.runs.append(run)
            return run

    def _arg_value(self, arg: Obj) -> str | None:
        value_from = arg.get("valueFrom") or {}
        which = value_from.get("podTemplateHashValue")
        if which == "Latest":
            return self.digest
        if which == "Stable":
            return self.status.get("stableRS")
        path = (value_from.get("fieldRef") or {}).get("fieldPath")
        if path in ("metadata.name", "metadata.namespace"):
            return str(self.meta[path.split(".")[1]])
        return arg.get("value")

    def _current_run(self) -> str | None:
        """The current analysis step's run, which keeps running; None when aborted or on another kind of step."""
        if self.status.get("abort") or self.index >= len(self.steps) or "analysis" not in self.steps[self.index]:
            return None
        return ((self.status.get("canary") or {}).get("currentStepAnalysisRunStatus") or {}).get("name")

    def _cancel_runs(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """cancelAnalysisRuns: every unfinished run of this rollout but those in ``keep`` gets spec.terminate."""
        store, kinds = self.context.store, self.context.kinds
        for run in self.runs:
            if (run.get("status") or {}).get("phase") in COMPLETED or (run.get("spec") or {}).get("terminate") \
                    or run["metadata"]["name"] in keep:
                continue
            current = store.get(kinds.analysisruns, run["metadata"]["namespace"], run["metadata"]["name"])
            current["spec"]["terminate"] = True
            store.replace(kinds.analysisruns, run["metadata"]["namespace"], run["metadata"]["name"], current)
            run.setdefault("spec", {})["terminate"] = True

    def _restart(self) -> None:
        """spec.restartAt (``kubectl argo rollouts restart``, RolloutPodRestarter): pods created before it are
        deleted as availability allows (at least one at a time) and restartedAt records it once none is left."""
        restart_at = self.spec.get("restartAt")
        if not restart_at or self.status.get("restartedAt") == restart_at or self.context.timestamp() < restart_at:
            return
        sets = {rs["metadata"]["uid"] for rs in self.owned}
        pods = [pod for pod in self.controller.pods() if any(
            ref.get("uid") in sets for ref in pod["metadata"].get("ownerReferences") or [])]
        total = sum(_replicas(rs) for rs in self.owned)
        concurrent = max(fenceposts(self.canary, self.replicas)[1], 1)
        can_restart = sum(is_ready(pod) for pod in pods) - (max(self.replicas, total) - concurrent)
        old = sorted((pod for pod in pods if pod["metadata"]["creationTimestamp"] < restart_at),
                     key=lambda pod: pod["metadata"]["creationTimestamp"])
        if not old:
            self.status["restartedAt"] = restart_at
            self.context.event(self.rollout, "RestartedPods", f"All Pods restarted at {restart_at}")
            return
        for pod in old[: max(0, can_restart)]:
            self.context.store.delete(self.context.kinds.pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
            self.context.event(self.rollout, "RestartingPod", f"Restarting Pod {pod['metadata']['name']}")

    # --- abort, promotion ------------------------------------------------------------------------------------

    def _abort(self) -> None:
        status = self.status
        if not status.get("abort"):
            status.pop("abortedAt", None)
            return
        if not status.get("abortedAt"):
            status["abortedAt"] = self.stamp
        status["pauseConditions"], status["controllerPause"] = [], False
        self.index = len(self.steps) if status.get("stableRS") == self.digest else 0
        self._cancel_runs()

    def _promote(self) -> None:
        """shouldFullPromote/promoteStable: the canary becomes stable once every step is done (or promoteFull) and
        all its replicas are available."""
        status = self.status
        if status.get("abort") or status["stableRS"] == self.digest:
            status["promoteFull"] = False
            return
        if self.index < len(self.steps) and not status.get("promoteFull"):
            return
        if _count(self.new, "availableReplicas") != self.replicas or _replicas(self.new) != self.replicas:
            return
        reason = "Full promotion requested" if status.get("promoteFull") else \
            f"Completed all {len(self.steps)} canary steps"
        status["stableRS"], status["promoteFull"] = self.digest, False
        self.index = len(self.steps)
        self.context.event(self.rollout, "RolloutCompleted",
                           f"Rollout completed update to revision {self.revision} ({self.digest}): {reason}")

    # --- status ----------------------------------------------------------------------------------------------

    def _finish(self, new: Obj | None) -> None:
        status, spec = self.status, self.spec
        status["observedGeneration"] = str(self.meta["generation"])
        conditions = status.get("conditions") or []
        if self.invalid:
            conditions = set_condition(conditions, "InvalidSpec", "True", "InvalidSpec", self.invalid, self.stamp,
                                       update_time=True)
        else:
            conditions = [c for c in conditions if c.get("type") != "InvalidSpec"]
        if new is not None:
            conditions = self._counts_and_conditions(new, conditions)
        status["conditions"] = conditions
        if not status.get("pauseConditions"):
            status.pop("pauseConditions", None)
            status["controllerPause"] = False
        status["phase"], status["message"] = rollout_phase(spec, status)
        if not status["message"]:
            status.pop("message")
        if status != self.old:
            body = {**self.rollout, "metadata": {k: v for k, v in self.meta.items() if k != "resourceVersion"},
                    "status": status}
            self.context.store.replace(self.context.kinds.rollouts, self.meta["namespace"], self.meta["name"], body,
                                       "status")

    def _counts_and_conditions(self, new: Obj, conditions: list[Obj]) -> list[Obj]:
        status, stamp, replicas = self.status, self.stamp, self.replicas
        status["currentStepIndex"] = self.index if self.steps else None
        if status["currentStepIndex"] is None:
            del status["currentStepIndex"]
        status.update(replicas=sum(_count(rs, "replicas") for rs in self.owned),
                      updatedReplicas=_count(new, "replicas"),
                      readyReplicas=sum(_count(rs, "readyReplicas") for rs in self.owned),
                      availableReplicas=sum(_count(rs, "availableReplicas") for rs in self.owned),
                      HPAReplicas=sum(_count(rs, "replicas") for rs in self.owned),
                      selector=format_selector(self.spec.get("selector") or {}))
        self._weights()
        if status["availableReplicas"] >= replicas - fenceposts(self.canary, replicas)[1]:
            conditions = set_condition(conditions, "Available", "True", "AvailableReason",
                                       "Rollout has minimum availability", stamp, update_time=True)
        else:
            conditions = set_condition(conditions, "Available", "False", "AvailableReason",
                                       "Rollout does not have minimum availability", stamp, update_time=True)
        paused = bool(status.get("pauseConditions")) or bool(self.spec.get("paused"))
        completed = status["stableRS"] == status["currentPodHash"]
        healthy = (not paused and completed and status["updatedReplicas"] == replicas
                   and status["availableReplicas"] == replicas and status["replicas"] == replicas
                   and self.index == len(self.steps))
        progressing = condition(conditions, "Progressing")
        name = new["metadata"]["name"]
        if status.get("abort"):
            message = f"Rollout aborted update to revision {self.revision}"
            if self.abort_message:
                message += f": {self.abort_message}"
            if progressing is None or progressing.get("reason") != "RolloutAborted" or self.abort_message:
                conditions = set_condition(conditions, "Progressing", "False", "RolloutAborted", message, stamp,
                                           update_time=True)
                if progressing is None or progressing.get("reason") != "RolloutAborted":
                    self.context.event(self.rollout, "RolloutAborted", message, "Warning")
        elif paused and not completed:  # checkPausedConditions leaves a completed rollout's Progressing alone
            conditions = set_condition(conditions, "Progressing", "Unknown", "RolloutPaused", "Rollout is paused",
                                       stamp, update_time=True)
        elif healthy:
            conditions = set_condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                                       f'ReplicaSet "{name}" has successfully progressed.', stamp, update_time=True)
        elif progressing is not None and progressing.get("reason") == "RolloutAborted":
            conditions = set_condition(conditions, "Progressing", "Unknown", "RolloutRetry",
                                       "Retrying Rollout after abort", stamp, update_time=True)
        else:
            conditions = set_condition(conditions, "Progressing", "True", "ReplicaSetUpdated",
                                       f'ReplicaSet "{name}" is progressing.', stamp, update_time=True)
        if paused or condition(conditions, "Paused") is not None:
            conditions = set_condition(conditions, "Paused", "True" if paused else "False", "RolloutPaused",
                                       "Rollout is paused", stamp, update_time=True)
        conditions = set_condition(conditions, "Completed", "True" if completed else "False", "RolloutCompleted",
                                   "RolloutCompleted", stamp, update_time=True)
        if healthy or condition(conditions, "Healthy") is not None:
            conditions = set_condition(conditions, "Healthy", "True" if healthy else "False", "RolloutHealthy",
                                       "Rollout is healthy" if healthy else "Rollout is not healthy", stamp,
                                       update_time=True)
        return conditions

    def _traffic_weight(self) -> int:
        """The canary's traffic weight as reconcileTrafficRouting sets it: 0 once fully promoted, when aborted or
        while no canary pod is available; the previous setWeight until the replicas are at this step's counts."""
        if self.status["stableRS"] == self.digest or self.status.get("abort"):
            return 0
        if _count(self.new, "availableReplicas") == 0:
            return 0
        if self.status.get("promoteFull"):
            return int((((self.old.get("canary") or {}).get("weights") or {}).get("canary") or {}).get("weight", 0))
        if not self._at_targets():
            return current_weight(self.steps, self.index - 1) if self.index > 0 else 0
        return current_weight(self.steps, self.index) if self.index < len(self.steps) else MAX_WEIGHT

    def _weights(self) -> None:
        """status.canary.weights, written only with trafficRouting (as Argo does)."""
        canary = self.status.setdefault("canary", {})
        routing = self.canary.get("trafficRouting")
        if not routing:
            canary.pop("weights", None)
            return
        weight = self._traffic_weight()
        canary["weights"] = {
            "canary": {"weight": weight, "podTemplateHash": self.digest,
                       "serviceName": self.canary.get("canaryService", "")},
            "stable": {"weight": MAX_WEIGHT - weight, "podTemplateHash": self.status["stableRS"],
                       "serviceName": self.canary.get("stableService", "")}}
