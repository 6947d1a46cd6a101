"""The console's rollout actions (console/sources/rollouts.py) send exactly what `kubectl argo rollouts` sends:
the patches are checked on the wire (what the object looks like after them) through the official client, and
the plans against the plugin's rules (../shared/reference/console.md (b))."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from console.sources.rollouts import (
    JSON_PATCH,
    MERGE_PATCH,
    NothingToDo,
    apply,
    plan_abort,
    plan_promote,
    plan_promote_full,
    plan_retry,
    plan_undo,
    refusals,
)
from services.kubesim.discovery import KINDS, Registry
from tests.contract.conftest import NAMESPACE, Cluster, rollout

Obj = dict[str, Any]


def with_status(obj: Obj, **status: Any) -> Obj:
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
    obj["status"] = status
    return obj


def stored(cluster: Cluster, name: str = "ai-api") -> Obj:
    return cluster.custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "rollouts", name)


def create(cluster: Cluster, obj: Obj, status: Obj | None = None) -> Obj:
    created = cluster.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "rollouts", obj)
    if status is not None:
        created = cluster.custom.patch_namespaced_custom_object_status(
            "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", obj["metadata"]["name"], {"status": status})
    return created


# ---- plans: the plugin's rules --------------------------------------------------------------------------


def test_promote_clears_pause_conditions_and_unpauses_the_spec() -> None:
    obj = with_status(rollout("ai-api"), currentStepIndex=1, controllerPause=True,
                      pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "2026-11-30T00:00:00Z"}])
    obj["spec"]["paused"] = True
    plan = plan_promote(obj)
    assert plan.status is not None and plan.status.body == {"status": {"pauseConditions": None}}
    assert plan.status.subresource == "status" and plan.status.content_type == MERGE_PATCH
    assert plan.spec is not None and plan.spec.body == {"spec": {"paused": False}} and plan.spec.subresource == ""
    assert plan.unified is not None
    assert plan.unified.body == {"spec": {"paused": False}, "status": {"pauseConditions": None}}


def test_promote_past_an_inconclusive_analysis_bumps_the_step_and_clears_the_controller_pause() -> None:
    obj = with_status(rollout("ai-api"), currentStepIndex=1, controllerPause=True,
                      pauseConditions=[{"reason": "InconclusiveAnalysisRun", "startTime": "2026-11-30T00:00:00Z"}],
                      canary={"currentStepAnalysisRunStatus": {"name": "r", "status": "Inconclusive"}})
    plan = plan_promote(obj)
    assert plan.status is not None
    assert plan.status.body == {"status": {"pauseConditions": None, "controllerPause": False, "currentStepIndex": 2}}
    assert plan.spec is None


def test_promote_without_a_pause_bumps_the_step_capped_at_the_step_count() -> None:
    obj = with_status(rollout("ai-api"), currentStepIndex=0)
    assert plan_promote(obj).status.body == {"status": {"pauseConditions": None, "currentStepIndex": 1}}  # type: ignore[union-attr]
    last = with_status(rollout("ai-api"), currentStepIndex=2)  # the fixture has two steps
    assert plan_promote(last).status.body["status"]["currentStepIndex"] == 2  # type: ignore[union-attr]


def test_promote_full_only_while_an_update_is_in_flight() -> None:
    moving = with_status(rollout("ai-api"), currentPodHash="new", stableRS="old")
    plan = plan_promote_full(moving)
    assert plan.status is not None and plan.status.body == {"status": {"promoteFull": True}}
    assert plan.unified is not None
    assert plan.unified.body == {"spec": {"paused": False}, "status": {"promoteFull": True}}
    with pytest.raises(NothingToDo, match="fully promoted already"):
        plan_promote_full(with_status(rollout("ai-api"), currentPodHash="same", stableRS="same"))


def test_abort_and_retry_are_status_merge_patches() -> None:
    obj = with_status(rollout("ai-api"))
    assert plan_abort(obj).status.body == {"status": {"abort": True}}  # type: ignore[union-attr]
    assert plan_retry(obj).status.body == {"status": {"abort": False}}  # type: ignore[union-attr]
    assert plan_abort(obj).unified.body == {"status": {"abort": True}}  # type: ignore[union-attr]


def replicaset(owner: Obj, number: int, image: str, owned: bool = True) -> Obj:
    template = copy.deepcopy(owner["spec"]["template"])
    template["spec"]["containers"][0]["image"] = image
    template["metadata"]["labels"]["rollouts-pod-template-hash"] = f"hash{number}"
    refs = [{"kind": "Rollout", "name": "ai-api", "uid": owner["metadata"]["uid"], "controller": True}] if owned else []
    return {"metadata": {"name": f"ai-api-hash{number}", "ownerReferences": refs,
                         "annotations": {"rollout.argoproj.io/revision": str(number)}},
            "spec": {"template": template}}


def test_undo_replaces_the_template_with_the_second_newest_revision_without_the_hash_label() -> None:
    obj = with_status(rollout("ai-api"))
    obj["metadata"]["uid"] = "u-1"
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/app:3"
    sets = [replicaset(obj, 1, "registry.local/app:1"), replicaset(obj, 3, "registry.local/app:3"),
            replicaset(obj, 2, "registry.local/app:2"), replicaset(obj, 9, "registry.local/other", owned=False)]
    plan = plan_undo(obj, sets)
    assert plan.spec is not None and plan.spec.content_type == JSON_PATCH and plan.status is None
    [op] = plan.spec.body
    assert op["op"] == "replace" and op["path"] == "/spec/template"
    assert op["value"]["spec"]["containers"][0]["image"] == "registry.local/app:2"
    assert "rollouts-pod-template-hash" not in op["value"]["metadata"]["labels"]
    assert plan.summary == "undo to revision 2"
    assert plan_undo(obj, sets, to_revision=1).spec.body[0]["value"]["spec"]["containers"][0]["image"] \
        == "registry.local/app:1"  # type: ignore[union-attr]
    with pytest.raises(NothingToDo, match="unable to find specified revision 7 in history"):
        plan_undo(obj, sets, to_revision=7)
    with pytest.raises(NothingToDo, match=r"skipped rollback \(current template already matches revision 3\)"):
        plan_undo(obj, sets, to_revision=3)


def test_the_dashboard_preconditions() -> None:
    def phase(name: str, **status: Any) -> dict[str, str | None]:
        return refusals(with_status(rollout("ai-api"), phase=name, **status))

    assert phase("Paused")["promote"] is None and phase("Progressing")["abort"] is None
    assert phase("Healthy")["promote"] == "only while Progressing or Paused (it is Healthy)"
    assert phase("Degraded")["abort"] == "only while Progressing or Paused (it is Degraded)"
    assert phase("Degraded")["retry"] is None
    assert phase("Paused")["retry"] == "only when Degraded (it is Paused)"
    assert phase("Paused", abort=True)["promote"] == "aborted: retry it first"


# ---- on the wire, through the official client -----------------------------------------------------------


@pytest.mark.kubesim_only(reason="writes status by hand; a real Argo controller rewrites it at once")
def test_promote_sends_status_then_spec_and_changes_only_those(cluster: Cluster) -> None:
    obj = rollout("ai-api")
    obj["spec"]["paused"] = True
    create(cluster, obj, {"currentStepIndex": 1, "controllerPause": True,
                          "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-11-30T00:00:00Z"}]})
    before = stored(cluster)
    sent = apply(cluster.admin, plan_promote(before))
    after = stored(cluster)
    assert sent == [f'PATCH {NAMESPACE}/rollouts/ai-api/status (merge): {{"status": {{"pauseConditions": null}}}}',
                    f'PATCH {NAMESPACE}/rollouts/ai-api (merge): {{"spec": {{"paused": false}}}}']
    assert "pauseConditions" not in after["status"] and after["status"]["currentStepIndex"] == 1
    assert after["spec"]["paused"] is False
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1  # the spec patch only


@pytest.mark.kubesim_only(reason="writes status by hand; a real Argo controller rewrites it at once")
def test_abort_and_retry_on_the_wire(cluster: Cluster) -> None:
    create(cluster, rollout("ai-api"), {"phase": "Paused"})
    apply(cluster.admin, plan_abort(stored(cluster)))
    assert stored(cluster)["status"]["abort"] is True
    apply(cluster.admin, plan_retry(stored(cluster)))
    assert stored(cluster)["status"]["abort"] is False


def test_undo_on_the_wire_is_a_json_patch_of_the_template(cluster: Cluster) -> None:
    created = create(cluster, rollout("ai-api"))
    sets = [replicaset(created, 1, "registry.local/app:0"), replicaset(created, 2, "registry.local/app:1")]
    apply(cluster.admin, plan_undo(stored(cluster), sets))
    after = stored(cluster)
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/app:0"
    assert after["metadata"]["generation"] == created["metadata"]["generation"] + 1


@pytest.mark.kubesim_only(reason="a registry without /status")
def test_without_a_status_subresource_the_unified_patch_goes_to_the_main_resource(kube: Callable[..., Cluster]) -> None:
    """A pre-v0.10 CRD: /status answers 404, so the plugin sends the unified patch to the rollout itself."""
    kinds = tuple(dataclasses.replace(k, status=False) if k.plural == "rollouts" else k for k in KINDS)
    cluster = kube(registry=Registry(kinds))
    obj = rollout("ai-api")
    obj["spec"]["paused"] = True
    obj["status"] = {"pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-11-30T00:00:00Z"}]}
    create(cluster, obj)
    sent = apply(cluster.admin, plan_promote(stored(cluster)))
    after = stored(cluster)
    assert sent == [f'PATCH {NAMESPACE}/rollouts/ai-api (merge): '
                    '{"spec": {"paused": false}, "status": {"pauseConditions": null}}']
    assert after["spec"]["paused"] is False and "pauseConditions" not in after.get("status", {})


def test_the_viewer_is_refused_with_403_and_nothing_changes(cluster: Cluster) -> None:
    create(cluster, rollout("ai-api"), {"phase": "Paused"})
    with pytest.raises(ApiException) as refused:
        apply(cluster.viewer, plan_abort(stored(cluster)))
    assert refused.value.status == 403
    assert "abort" not in stored(cluster)["status"]
