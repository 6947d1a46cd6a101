"""Argo Rollouts' canary strategy (rollout/canary.go, rollout/analysis.go, rollout/pause.go, rollout/sync.go).

A Rollout owns one ReplicaSet per pod template (label ``rollouts-pod-template-hash``, annotation
``rollout.argoproj.io/revision``); the ReplicaSets controller makes their pods. The first template becomes stable
at once; a new one walks ``strategy.canary.steps`` from step 0, one step per tick: setWeight (approximated with
replica counts without trafficRouting, closest whole number and up on a tie; with trafficRouting the canary gets
ceil(replicas x weight) pods, the stable set stays full and status.canary.weights is written), pause (timed on the
runner's clock, or indefinite until promoted), analysis (an AnalysisRun from the named templates: Successful moves
on, Inconclusive pauses, Failed or Error aborts). After the last step the canary is promoted once fully available:
it becomes stableRS and the older sets go to 0.

It reacts to exactly what ``kubectl argo rollouts`` patches (promote, promote --full, abort, retry, undo, pause)
and writes the status as Argo does: phase and message (CalculateRolloutPhase), observedGeneration as a string,
currentStepIndex, currentPodHash, stableRS, pauseConditions, controllerPause, abort, abortedAt, the counts,
HPAReplicas, selector and conditions. blueGreen is refused with an InvalidSpec condition."""

from __future__ import annotations

import copy
import math
from typing import Any

from services.kubesim.controllers.analysis import COMPLETED, OUTCOME, duration_seconds
from services.kubesim.controllers.base import (
    ANALYSIS_OUTCOME_PREFIX,
    Context,
    condition,
    owned_by,
    owner_reference,
    set_condition,
    template_hash,
)
from services.kubesim.errors import ApiError
from services.kubesim.store import Obj

HASH_LABEL = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"
TYPE_LABEL, STEP_TYPE, STEP_INDEX_LABEL = "rollout-type", "Step", "step-index"
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


def max_surge(canary: Obj, replicas: int) -> int:
    return _percent(canary.get("maxSurge", "25%"), replicas, math.ceil)


def max_unavailable(canary: Obj, replicas: int) -> int:
    return _percent(canary.get("maxUnavailable", "25%"), replicas, math.floor)


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
        if item.get("type") == "InvalidSpec" or (
                item.get("reason") in ("RolloutAborted", "ProgressDeadlineExceeded") and item.get("status") == "False"):
            return "Degraded", f"{item.get('reason')}: {item.get('message')}"
    if spec.get("paused"):
        return "Paused", "manually paused"
    for pause in status.get("pauseConditions") or []:
        return "Paused", str(pause.get("reason"))
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

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        replicasets = store.list(kinds.replicasets, None, lambda _: True)
        runs = store.list(kinds.analysisruns, None, lambda _: True)
        live = set()
        for rollout in store.list(kinds.rollouts, None, lambda _: True):
            live.add(rollout["metadata"]["uid"])
            _Sync(self, rollout, [rs for rs in replicasets if owned_by(rs, rollout)],
                  [run for run in runs if owned_by(run, rollout)]).run()
        for uid in [uid for uid in self.pauses if uid not in live]:
            del self.pauses[uid]


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

    # --- the reconcile, in Argo's order ----------------------------------------------------------------------

    def run(self) -> None:
        strategy = self.spec.get("strategy") or {}
        if "canary" not in strategy:
            kind = "blueGreen" if "blueGreen" in strategy else "a strategy"
            self.invalid = f"kubesim simulates the canary strategy only; {kind} is not simulated"
            self._finish(None)
            return
        template = self.spec.get("template") or {}
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
        if status.get("promoteFull"):
            status["pauseConditions"], status["abort"] = [], False
            index = len(steps)
        self.index = index
        self.digest, self.new = digest, new
        if not changed and not status.get("abort") and not self.spec.get("paused") and digest != stable \
                and index < len(steps):
            self._step()
        self._abort()
        self._cancel_runs(keep=self._current_run())
        self._promote()
        self._scale()
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

    def _targets(self) -> dict[str, int]:
        """Each owned ReplicaSet's wanted size (by uid) for the current weight."""
        status, new = self.status, self.new
        stable = self._by_hash(status["stableRS"])
        targets = {rs["metadata"]["uid"]: 0 for rs in self.owned}
        if stable is None or stable["metadata"]["uid"] == new["metadata"]["uid"]:
            targets[new["metadata"]["uid"]] = self.replicas
            return targets
        weight = self.weight()
        if self.canary.get("trafficRouting"):
            count, scale_weight = canary_scale(self.steps, self.index, weight)
            canary = count if count is not None else math.ceil(self.replicas * scale_weight / MAX_WEIGHT)
            if status.get("abort"):
                canary = 0
            targets[new["metadata"]["uid"]], targets[stable["metadata"]["uid"]] = canary, self.replicas
        else:
            canary, kept = basic_canary_counts(self.replicas, weight, max_surge(self.canary, self.replicas))
            targets[new["metadata"]["uid"]], targets[stable["metadata"]["uid"]] = canary, kept
        return targets

    def weight(self) -> int:
        """The canary's share now: 0 when aborted, 100 once every step is done (or on the stable template)."""
        if self.status.get("abort"):
            return 0
        if self.digest == self.status.get("stableRS") or self.index >= len(self.steps):
            return MAX_WEIGHT
        return current_weight(self.steps, self.index)

    def _at_targets(self) -> bool:
        """AtDesiredReplicaCountsForCanary, for a setWeight step's completion."""
        targets = self._targets()
        stable = self._by_hash(self.status["stableRS"])
        for rs in self.owned:
            wanted = targets[rs["metadata"]["uid"]]
            if rs is self.new or rs["metadata"]["uid"] == self.new["metadata"]["uid"]:
                if _replicas(rs) != wanted or _count(rs, "availableReplicas") < wanted:
                    return False
            elif stable is not None and rs["metadata"]["uid"] == stable["metadata"]["uid"]:
                if _count(rs, "replicas") != wanted and not self.canary.get("trafficRouting"):
                    return False
            elif not self.canary.get("trafficRouting") and _count(rs, "availableReplicas"):
                return False
        return True

    def _scale(self) -> None:
        targets = self._targets()
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
        if now > started[1] + duration_seconds(duration):
            del self.controller.pauses[uid]
            return True
        return False

    def _analysis_step(self, analysis: Obj) -> bool:
        """reconcileStepBasedAnalysisRun: Successful moves on, Inconclusive pauses, Failed or Error aborts."""
        if self.status.get("pauseConditions"):
            return False
        canary = self.status.setdefault("canary", {})
        recorded = (canary.get("currentStepAnalysisRunStatus") or {}).get("name")
        run = next((r for r in self.runs if r["metadata"]["name"] == recorded and self._for_this_step(r)), None)
        if run is None or (self.old.get("abortedAt") and not self.old.get("abort")):  # a retry starts a new run
            try:
                run = self._create_run(analysis)
            except (ApiError, LookupError) as exc:
                self.invalid = str(exc)
                return False
        phase = (run.get("status") or {}).get("phase") or ""
        message = (run.get("status") or {}).get("message") or ""
        canary["currentStepAnalysisRunStatus"] = {"name": run["metadata"]["name"], "status": phase,
                                                  **({"message": message} if message else {})}
        if phase == "Successful":
            return True
        if phase == "Inconclusive":
            self._add_pause(PAUSE_INCONCLUSIVE)
        elif phase in ("Failed", "Error"):
            self.status["abort"] = True
            self.abort_message = "Step-based analysis phase error/failed" + (f": {message}" if message else "")
        return False

    def _for_this_step(self, run: Obj) -> bool:
        labels = run["metadata"].get("labels") or {}
        return labels.get(STEP_INDEX_LABEL) == str(self.index) and labels.get(HASH_LABEL) == self.digest

    def _create_run(self, analysis: Obj) -> Obj:
        """newAnalysisRunFromRollout: ``<rollout>-<podhash>-<revision>-<step>`` (``.N`` on a collision)."""
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
        labels = {HASH_LABEL: self.digest, TYPE_LABEL: STEP_TYPE, STEP_INDEX_LABEL: str(self.index),
                  **((self.spec.get("selector") or {}).get("matchLabels") or {})}
        annotations = {REVISION: str(self.revision)}
        outcome = (self.meta.get("annotations") or {}).get(ANALYSIS_OUTCOME_PREFIX + str(self.index))
        if outcome:
            annotations[OUTCOME] = outcome
        spec: Obj = {"metrics": metrics,
                     "args": [{key: value for key, value in arg.items() if value is not None} for arg in args.values()]}
        if dry_run:
            spec["dryRun"] = dry_run
        base = f"{self.meta['name']}-{self.digest}-{self.revision}-{self.index}"
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
            self.context.event(self.rollout, "AnalysisRunRunning",
                               f"Step Analysis Run '{name}' Status New: 'Pending' Previous: 'NoPreviousStatus'")
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

    def _cancel_runs(self, keep: str | None = None) -> None:
        """cancelAnalysisRuns: every unfinished run of this rollout but ``keep`` gets spec.terminate."""
        store, kinds = self.context.store, self.context.kinds
        for run in self.runs:
            if (run.get("status") or {}).get("phase") in COMPLETED or (run.get("spec") or {}).get("terminate") \
                    or run["metadata"]["name"] == keep:
                continue
            current = store.get(kinds.analysisruns, run["metadata"]["namespace"], run["metadata"]["name"])
            current["spec"]["terminate"] = True
            store.replace(kinds.analysisruns, run["metadata"]["namespace"], run["metadata"]["name"], current)
            run.setdefault("spec", {})["terminate"] = True

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
        if status["availableReplicas"] >= replicas - max_unavailable(self.canary, replicas):
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
        elif paused:
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

    def _weights(self) -> None:
        """status.canary.weights, written only with trafficRouting (as Argo does)."""
        canary = self.status.setdefault("canary", {})
        routing = self.canary.get("trafficRouting")
        if not routing:
            canary.pop("weights", None)
            return
        weight = self.weight()
        canary["weights"] = {
            "canary": {"weight": weight, "podTemplateHash": self.digest,
                       "serviceName": self.canary.get("canaryService", "")},
            "stable": {"weight": MAX_WEIGHT - weight, "podTemplateHash": self.status["stableRS"],
                       "serviceName": self.canary.get("stableService", "")}}
