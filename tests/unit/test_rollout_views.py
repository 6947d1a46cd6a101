"""The Argo rollout view model (console/rollout_views.py): what `kubectl argo rollouts get rollout` shows, on
fixed objects: phase icons and GetRolloutPhase's rules, step i/n, desired and actual weights with and without
traffic routing, the current AnalysisRun's counts, and pending after a change until the controller observed it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from console import rollout_views as rv

Obj = dict[str, Any]
STEPS = [{"setWeight": 10}, {"pause": {}}, {"analysis": {"templates": [{"templateName": "t"}]}},
         {"setWeight": 50}, {"pause": {"duration": "1h"}}]


def rollout(routing: bool = False, generation: int = 3, **status: Any) -> Obj:
    canary: Obj = {"steps": copy.deepcopy(STEPS)}
    if routing:
        canary["trafficRouting"] = {"istio": {"virtualService": {"name": "vs"}}}
    return {"metadata": {"name": "ai-api", "namespace": "prod", "uid": "u-1", "generation": generation,
                         "annotations": {rv.REVISION_ANNOTATION: "4"}},
            "spec": {"replicas": 10, "strategy": {"canary": canary}},
            "status": {"observedGeneration": str(generation), "phase": "Progressing", **status}}


def replicaset(digest: str, revision: int, available: int, owner: str = "u-1") -> Obj:
    return {"metadata": {"name": f"ai-api-{digest}", "namespace": "prod",
                         "labels": {rv.HASH_LABEL: digest}, "annotations": {rv.REVISION_ANNOTATION: str(revision)},
                         "ownerReferences": [{"kind": "Rollout", "uid": owner, "controller": True}]},
            "status": {"availableReplicas": available}}


@pytest.mark.parametrize(("phase", "icon"), [("Progressing", "◌"), ("Paused", "॥"), ("Healthy", "✔"),
                                             ("Degraded", "✖"), ("Something", "?")])
def test_the_phase_icons_are_the_plugins(phase: str, icon: str) -> None:
    row = rv.row(rollout(phase=phase, message="m"), [], [])
    assert (row.phase, row.icon, row.phase_label) == (phase, icon, f"{icon} {phase}")


def test_an_unobserved_generation_is_progressing_waiting_for_the_spec_and_pending() -> None:
    obj = rollout(phase="Paused", message="CanaryPauseStep")
    obj["status"]["observedGeneration"] = "2"  # a string in Argo's status; the generation (3) an integer
    row = rv.row(obj, [], [])
    assert (row.phase, row.message, row.pending) == ("Progressing", rv.WAITING_FOR_SPEC, True)
    obj["status"]["observedGeneration"] = "3"
    assert rv.row(obj, [], []).pending is False and rv.row(obj, [], []).phase == "Paused"


def test_a_controller_pause_without_pause_conditions_is_waiting_to_unpause() -> None:
    row = rv.row(rollout(phase="Paused", controllerPause=True), [], [])
    assert (row.phase, row.message) == ("Progressing", rv.WAITING_FOR_UNPAUSE)
    paused = rv.row(rollout(phase="Paused", message="CanaryPauseStep", controllerPause=True,
                            pauseConditions=[{"reason": "CanaryPauseStep"}]), [], [])
    assert (paused.phase, paused.message) == ("Paused", "CanaryPauseStep")


def test_step_is_the_current_index_of_the_steps_as_the_plugin_prints_it() -> None:
    row = rv.row(rollout(currentStepIndex=1), [], [])
    assert (row.step, row.steps_total, row.step_kind) == (1, 5, "pause (until promoted)")
    assert rv.row(rollout(currentStepIndex=4), [], []).step_kind == "pause 1h"
    done = rv.row(rollout(currentStepIndex=5), [], [])
    assert (done.step, done.step_kind) == (5, "complete")


def test_desired_weight_is_the_last_set_weight_so_far_zero_when_aborted_and_100_when_done() -> None:
    assert rv.row(rollout(currentStepIndex=0), [], []).desired_weight == 10
    assert rv.row(rollout(currentStepIndex=2), [], []).desired_weight == 10
    assert rv.row(rollout(currentStepIndex=3), [], []).desired_weight == 50
    assert rv.row(rollout(currentStepIndex=3, abort=True), [], []).desired_weight == 0
    assert rv.row(rollout(currentStepIndex=5), [], []).desired_weight == 100


def test_actual_weight_with_traffic_routing_is_the_routers_canary_weight() -> None:
    obj = rollout(routing=True, currentStepIndex=1, currentPodHash="new", stableRS="old", availableReplicas=11,
                  canary={"weights": {"canary": {"weight": 10}, "stable": {"weight": 90}}})
    row = rv.row(obj, [], [replicaset("new", 2, 1), replicaset("old", 1, 10)])
    assert (row.actual_weight, row.desired_weight, row.traffic_routing) == (10, 10, True)


def test_actual_weight_without_traffic_routing_is_the_canarys_share_of_available_pods() -> None:
    obj = rollout(currentStepIndex=1, currentPodHash="new", stableRS="old", availableReplicas=9)
    sets = [replicaset("new", 2, 2), replicaset("old", 1, 7), replicaset("new", 9, 5, owner="someone-else")]
    row = rv.row(obj, [], sets)
    assert row.actual_weight == 22  # 2 * 100 // 9, as Go's integer division
    assert row.revision == 2  # the current ReplicaSet's rollout.argoproj.io/revision
    assert rv.row(rollout(currentStepIndex=5, currentPodHash="new", stableRS="new"), [], sets).actual_weight == 100
    stable_only = rollout(currentStepIndex=0, currentPodHash="old", stableRS="old", availableReplicas=7)
    assert rv.row(stable_only, [], sets).actual_weight == 0


def run(name: str, phase: str, metrics: list[Obj], message: str = "") -> Obj:
    return {"metadata": {"name": name, "namespace": "prod"},
            "status": {"phase": phase, "message": message, "metricResults": metrics}}


def test_the_current_steps_analysis_run_per_metric_counts_and_message() -> None:
    detail = 'Metric "error-rate" assessed Failed due to failed (1) > failureLimit (0)'
    obj = rollout(currentStepIndex=2, canary={"currentStepAnalysisRunStatus": {"name": "ai-api-2", "status": "Failed"}})
    runs = [run("ai-api-1", "Successful", []),
            run("ai-api-2", "Failed", [
                {"name": "error-rate", "phase": "Failed", "successful": 2, "failed": 1, "message": "too many 5xx"},
                {"name": "quality", "phase": "Running", "successful": 1, "inconclusive": 1, "error": 3}],
                message=detail)]
    analysis = rv.row(obj, runs, []).analysis
    assert analysis is not None and (analysis.name, analysis.phase, analysis.message) == ("ai-api-2", "Failed", detail)
    first, second = analysis.metrics
    assert (first.name, first.counts, first.verdict, first.message) == ("error-rate", "✔ 2 ✖ 1", "fail",
                                                                         "too many 5xx")
    assert (second.counts, second.verdict) == ("✔ 1 ? 1 ⚠ 3", "running")
    assert rv.row(rollout(), runs, []).analysis is None


def test_a_background_analysis_is_shown_when_no_step_runs_one() -> None:
    obj = rollout(canary={"currentBackgroundAnalysisRunStatus": {"name": "bg", "status": "Running"}})
    analysis = rv.row(obj, [run("bg", "Running", [{"name": "m", "phase": "Running", "successful": 4}])], []).analysis
    assert analysis is not None and analysis.background and analysis.metrics[0].counts == "✔ 4"


def test_a_promote_is_pending_until_the_controller_moves_the_step() -> None:
    before = rollout(phase="Paused", currentStepIndex=1, controllerPause=True,
                     pauseConditions=[{"reason": "CanaryPauseStep"}])
    mark = rv.mark("promote", before, spec_patched=False)
    assert rv.row(before, [], [], mark).pending is True  # the watch still shows the object as it was
    cleared = copy.deepcopy(before)
    cleared["status"]["pauseConditions"] = None  # the patch landed; the controller has not run yet
    assert rv.row(cleared, [], [], mark).pending is True and rv.row(cleared, [], [], mark).phase == "Progressing"
    moved = rollout(phase="Progressing", currentStepIndex=2)
    assert rv.row(moved, [], [], mark).pending is False


def test_a_spec_patch_is_pending_until_the_new_generation_is_observed() -> None:
    before = rollout(phase="Healthy", currentStepIndex=5)
    mark = rv.mark("undo", before, spec_patched=True)
    assert rv.row(before, [], [], mark).pending is True  # the generation has not moved yet
    patched = rollout(generation=4, phase="Healthy", currentStepIndex=5)
    patched["status"]["observedGeneration"] = "3"
    assert rv.row(patched, [], [], mark).pending is True
    patched["status"]["observedGeneration"] = "4"
    assert rv.row(patched, [], [], mark).pending is False


def test_abort_and_retry_are_pending_until_the_controller_stamped_or_cleared_abortedAt() -> None:
    before = rollout(phase="Paused", currentStepIndex=1)
    abort = rv.mark("abort", before, spec_patched=False)
    assert rv.row(rollout(phase="Paused", abort=True), [], [], abort).pending is True
    aborted = rollout(phase="Degraded", abort=True, abortedAt="2026-11-30T00:00:00Z")
    assert rv.row(aborted, [], [], abort).pending is False
    retry = rv.mark("retry", aborted, spec_patched=False)
    assert rv.row(rollout(phase="Degraded", abort=False, abortedAt="2026-11-30T00:00:00Z"), [], [], retry).pending
    assert rv.row(rollout(phase="Progressing", currentStepIndex=0), [], [], retry).pending is False
