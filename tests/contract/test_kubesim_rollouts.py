"""kubesim's Argo Rollouts controller through the official client, with exactly the patches ``kubectl argo rollouts``
sends (../shared/reference/k8s.md §2.3), stepped by hand on an injected clock (no sleeps): the seed's canary steps,
analysis outcomes, promote, promote --full, abort, retry, undo, a template change mid-rollout, the setWeight replica
math, /scale and a blueGreen refusal."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from services.kubesim.controllers.base import ANALYSIS_OUTCOME_PREFIX, Settings
from services.kubesim.controllers.rollouts import (
    BACKGROUND_OUTCOME,
    HASH_LABEL,
    REVISION,
    SetSize,
    basic_canary_counts,
    basic_canary_step,
)
from tests.contract.conftest import NAMESPACE, Cluster

pytestmark = pytest.mark.kubesim_only(reason="steps kubesim's controllers by hand on an injected clock")
ARGO = ("argoproj.io", "v1alpha1")
SEED_ANALYSIS = {"templates": [{"templateName": "ai-api-analysis"}]}
SEED_STEPS: list[dict[str, Any]] = [
    {"setWeight": 1}, {"pause": {"duration": "1h"}},
    {"analysis": {**SEED_ANALYSIS, "args": [{"name": "service-name", "value": "ai-api-canary"}]}},
    {"setWeight": 10}, {"pause": {"duration": "2h"}}, {"analysis": SEED_ANALYSIS},
    {"setWeight": 50}, {"pause": {"duration": "4h"}}, {"analysis": SEED_ANALYSIS},
    {"setWeight": 100}]
SEED_ROUTING = {"canaryService": "ai-api-canary", "stableService": "ai-api-stable",
                "trafficRouting": {"istio": {"virtualService": {"name": "ai-api-vsvc", "routes": ["primary"]}}}}


class Sim:
    """A kubesim whose controllers only move when the test steps them, on a clock the test advances."""

    def __init__(self, cluster: Cluster, now: list[float]) -> None:
        self.cluster, self.now = cluster, now
        self.custom = cluster.custom

    def tick(self, seconds: float = 1.1, times: int = 1) -> None:
        controllers = self.cluster.sim.controllers
        assert controllers is not None
        for _ in range(times):
            self.now[0] += seconds
            self.cluster.sim.call(controllers.tick)

    def settle(self) -> None:
        """Enough ticks (each past the ready delay) for a resize to end in ready pods and the status to follow."""
        self.tick(times=8)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, plural, body)

    def rollout(self, name: str = "web") -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", name)

    def status(self, name: str = "web") -> dict[str, Any]:
        return self.rollout(name).get("status") or {}

    def patch_status(self, body: dict[str, Any], name: str = "web") -> None:
        """What promote, abort and retry send: a merge patch to the status subresource."""
        self.custom.patch_namespaced_custom_object_status(*ARGO, NAMESPACE, "rollouts", name, body)

    def patch(self, body: Any, name: str = "web", **options: Any) -> None:
        self.custom.patch_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", name, body, **options)

    def set_image(self, image: str, name: str = "web") -> None:
        self.patch({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}}, name)

    def replicasets(self) -> dict[str, client.V1ReplicaSet]:
        """The rollout's ReplicaSets by revision."""
        found = self.cluster.apps.list_namespaced_replica_set(NAMESPACE).items
        return {int(rs.metadata.annotations[REVISION]): rs for rs in found}

    def sizes(self) -> dict[int, int]:
        return {revision: rs.spec.replicas for revision, rs in self.replicasets().items()}

    def runs(self) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(*ARGO, NAMESPACE, "analysisruns")["items"]

    def run_named(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "analysisruns", name)

    def conditions(self, name: str = "web") -> dict[str, tuple[str, str, str]]:
        return {c["type"]: (c["status"], c["reason"], c["message"]) for c in self.status(name).get("conditions", [])}


def node() -> dict[str, Any]:
    capacity = {"cpu": "256", "memory": "1024Gi", "pods": "500"}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-1"},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def start_sim(kube: Callable[..., Cluster]) -> Sim:
    """A kubesim with one roomy node, its controllers stepped by hand from t=1000 s."""
    now = [1000.0]
    cluster = kube(controllers=Settings(tick=3600.0, ready_delay=1.0), clock=lambda: now[0])
    created = cluster.core.create_node(node())
    cluster.core.replace_node_status("cpu-1", {**node(), "metadata": {
        "name": "cpu-1", "resourceVersion": created.metadata.resource_version}})
    return Sim(cluster, now)


@pytest.fixture
def sim(kube: Callable[..., Cluster]) -> Sim:
    return start_sim(kube)


def rollout(name: str = "web", replicas: int = 10, steps: list[dict[str, Any]] | None = None,
            annotations: dict[str, str] | None = None, **canary: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "registry.local/app:1"}]}},
                     "strategy": {"canary": {"steps": steps if steps is not None else [], **canary}}}}


def analysis_template(name: str = "ai-api-analysis") -> dict[str, Any]:
    """The seed's template (its Prometheus is not reached: the rollout's annotations decide each step)."""
    query = 'sum(rate(http_requests_total{service="{{args.service-name}}", status=~"5.."}[5m]))'
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": name},
            "spec": {"args": [{"name": "service-name", "value": "ai-api-canary"}],
                     "metrics": [{"name": "error-rate", "interval": "5m", "successCondition": "result[0] < 0.01",
                                  "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": query}}},
                                 {"name": "quality-score", "interval": "30m", "successCondition": "result[0] > 0.85",
                                  "provider": {"job": {"spec": {"backoffLimit": 1, "template": {"spec": {
                                      "restartPolicy": "Never",
                                      "containers": [{"name": "quality-check", "image": "quality:1"}]}}}}}}]}}


def slow_template(**metric: Any) -> dict[str, Any]:
    """A template whose metric never settles here (its provider is not simulated, so it errors and retries)."""
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "slow"},
            "spec": {"metrics": [{"name": "web", "provider": {"web": {"url": "http://127.0.0.1:9/"}}, **metric}]}}


def start_seed(sim: Sim, outcomes: dict[int, str]) -> None:
    """The seed's rollout, healthy at revision 1, then a new image: revision 2 starts at step 0."""
    sim.create("analysistemplates", analysis_template())
    annotations = {ANALYSIS_OUTCOME_PREFIX + str(index): outcome for index, outcome in outcomes.items()}
    sim.create("rollouts", rollout(steps=SEED_STEPS, annotations=annotations, **SEED_ROUTING))
    sim.settle()
    assert sim.status()["phase"] == "Healthy"
    sim.set_image("registry.local/app:2")
    sim.settle()


def test_the_first_revision_is_stable_at_once_and_healthy_with_argos_status_fields(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 20}, {"pause": {}}]))
    sim.settle()
    status = sim.status()
    replicaset = sim.replicasets()[1]
    digest = replicaset.metadata.labels[HASH_LABEL]
    assert (status["phase"], status["stableRS"], status["currentPodHash"]) == ("Healthy", digest, digest)
    assert (status["currentStepIndex"], status["observedGeneration"], status["selector"]) == (2, "1", "app=web")
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"], status["availableReplicas"],
            status["HPAReplicas"]) == (10, 10, 10, 10, 10)
    owner = replicaset.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Rollout", "web", True)
    assert replicaset.spec.template.metadata.labels == {"app": "web", HASH_LABEL: digest}
    assert sim.rollout()["metadata"]["annotations"][REVISION] == "1"
    conditions = sim.conditions()
    assert conditions["Available"][:2] == ("True", "AvailableReason")
    assert conditions["Progressing"] == ("True", "NewReplicaSetAvailable",
                                         f'ReplicaSet "{replicaset.metadata.name}" has successfully progressed.')
    assert conditions["Completed"][0] == conditions["Healthy"][0] == "True"
    version = sim.rollout()["metadata"]["resourceVersion"]
    sim.tick(times=3)
    assert sim.rollout()["metadata"]["resourceVersion"] == version  # a settled rollout is not rewritten each tick


def test_the_seeds_steps_walk_through_with_successful_analyses(sim: Sim) -> None:
    start_seed(sim, {2: "Successful", 5: "Successful", 8: "Successful"})
    old, new = sim.replicasets()[1], sim.replicasets()[2]
    digest = new.metadata.labels[HASH_LABEL]
    stable = old.metadata.labels[HASH_LABEL]
    status = sim.status()
    # step 0 done (setWeight 1 with traffic routing: 1 canary pod, the stable set kept full); paused at step 1
    assert (status["currentStepIndex"], status["phase"], status["message"]) == (1, "Paused", "CanaryPauseStep")
    assert status["controllerPause"] is True and status["pauseConditions"][0]["reason"] == "CanaryPauseStep"
    assert status["canary"]["weights"] == {
        "canary": {"weight": 1, "podTemplateHash": digest, "serviceName": "ai-api-canary"},
        "stable": {"weight": 99, "podTemplateHash": stable, "serviceName": "ai-api-stable"}}
    assert sim.sizes() == {1: 10, 2: 1}
    sim.tick(3600.5)  # the 1h pause ends on the runner's clock
    sim.tick(times=2)
    status = sim.status()
    run_name = status["canary"]["currentStepAnalysisRunStatus"]["name"] if status["currentStepIndex"] == 2 else None
    runs = sim.runs()
    assert [run["metadata"]["name"] for run in runs] == [f"web-{digest}-2-2"]
    assert runs[0]["metadata"]["labels"] == {HASH_LABEL: digest, "rollout-type": "Step", "step-index": "2",
                                             "app": "web"}
    assert runs[0]["spec"]["args"] == [{"name": "service-name", "value": "ai-api-canary"}]
    assert runs[0]["status"]["phase"] == "Successful"
    assert run_name in (None, runs[0]["metadata"]["name"])
    for pause in (7200.5, 14400.5):
        sim.settle()
        assert sim.status()["phase"] == "Paused"
        sim.tick(pause)
        sim.settle()
    sim.settle()
    status = sim.status()
    assert (status["phase"], status["stableRS"], status["currentStepIndex"]) == ("Healthy", digest, 10)
    assert sorted(run["status"]["phase"] for run in sim.runs()) == ["Successful"] * 3
    assert sim.sizes() == {1: 10, 2: 10}  # with traffic routing the old stable set waits scaleDownDelaySeconds
    sim.tick(30.5)
    sim.settle()
    assert sim.sizes() == {1: 0, 2: 10}
    assert status["canary"]["weights"] == {  # fully promoted: the canary route carries nothing
        "canary": {"weight": 0, "podTemplateHash": digest, "serviceName": "ai-api-canary"},
        "stable": {"weight": 100, "podTemplateHash": digest, "serviceName": "ai-api-stable"}}
    assert sim.conditions()["Healthy"][0] == "True"


def test_an_analysis_failing_at_a_step_aborts_the_rollout(sim: Sim) -> None:
    start_seed(sim, {2: "Failed"})
    sim.tick(3600.5)
    sim.settle()
    status = sim.status()
    run = sim.runs()[0]
    assert run["status"]["phase"] == "Failed"
    detail = 'Metric "error-rate" assessed Failed due to failed (1) > failureLimit (0)'
    assert run["status"]["message"] == detail
    message = f"Rollout aborted update to revision 2: Step-based analysis phase error/failed: {detail}"
    assert (status["phase"], status["message"]) == ("Degraded", f"RolloutAborted: {message}")
    assert sim.conditions()["Progressing"] == ("False", "RolloutAborted", message)
    assert status["abort"] is True and status["abortedAt"]
    assert status["currentStepIndex"] == 0
    assert status["canary"]["currentStepAnalysisRunStatus"] == {"name": run["metadata"]["name"], "status": "Failed",
                                                                "message": detail}
    assert status["canary"]["weights"]["canary"]["weight"] == 0
    assert sim.sizes() == {1: 10, 2: 1}  # the canary's pods wait abortScaleDownDelaySeconds (30 s)
    sim.tick(30.5)
    sim.tick()
    assert sim.sizes() == {1: 10, 2: 0}


def test_an_inconclusive_analysis_pauses_and_promote_moves_on_to_the_next_step(sim: Sim) -> None:
    start_seed(sim, {2: "Inconclusive"})
    sim.tick(3600.5)
    sim.settle()
    status = sim.status()
    assert (status["phase"], status["message"], status["currentStepIndex"]) == ("Paused", "InconclusiveAnalysisRun", 2)
    assert status["controllerPause"] is True
    assert status["canary"]["currentStepAnalysisRunStatus"]["status"] == "Inconclusive"
    # promote: the analysis is Inconclusive, there are pause conditions and controllerPause is set
    sim.patch_status({"status": {"pauseConditions": None, "controllerPause": False, "currentStepIndex": 3}})
    sim.settle()
    status = sim.status()
    assert status["currentStepIndex"] == 4 and status["phase"] == "Paused"  # setWeight 10 done, now pausing 2h
    assert status["canary"]["weights"]["canary"]["weight"] == 10
    assert len(sim.runs()) == 1


def test_an_indefinite_pause_waits_until_promoted(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    sim.tick(86400.0)
    sim.settle()
    status = sim.status()
    assert (status["currentStepIndex"], status["phase"], status["message"]) == (1, "Paused", "CanaryPauseStep")
    assert sim.sizes() == {1: 8, 2: 2}
    assert sim.conditions()["Paused"][:2] == ("True", "RolloutPaused")
    sim.patch_status({"status": {"pauseConditions": None}})  # promote with pause conditions present
    sim.settle()
    status = sim.status()
    assert (status["currentStepIndex"], status["phase"]) == (3, "Paused")
    assert sim.sizes() == {1: 4, 2: 6}


def test_a_timed_pause_after_a_promoted_one_waits_its_own_duration(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 50}, {"pause": {}}, {"pause": {"duration": 60}}]))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    sim.tick(50.0)
    sim.patch_status({"status": {"pauseConditions": None}})
    sim.tick(times=2)
    assert (sim.status()["currentStepIndex"], sim.status()["phase"]) == (2, "Paused")
    sim.tick(30.0)
    assert sim.status()["currentStepIndex"] == 2
    sim.tick(31.0)
    sim.tick()
    assert sim.status()["currentStepIndex"] == 3


def test_promote_full_jumps_to_the_new_revision(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 20}, {"pause": {}}]))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    assert sim.status()["phase"] == "Paused"
    sim.patch_status({"status": {"promoteFull": True}})
    sim.settle()
    sim.settle()
    status = sim.status()
    digest = sim.replicasets()[2].metadata.labels[HASH_LABEL]
    assert (status["phase"], status["stableRS"], status["currentStepIndex"]) == ("Healthy", digest, 2)
    assert not status.get("promoteFull") and "pauseConditions" not in status
    assert sim.sizes() == {1: 0, 2: 10}


def test_abort_scales_the_canary_away_and_retry_starts_the_steps_again(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 30}, {"pause": {}}]))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    assert sim.sizes() == {1: 7, 2: 3}
    sim.patch_status({"status": {"abort": True}})
    sim.settle()
    status = sim.status()
    message = "Rollout aborted update to revision 2"
    assert (status["phase"], status["message"]) == ("Degraded", f"RolloutAborted: {message}")
    assert status["abortedAt"] and status["currentStepIndex"] == 0 and "pauseConditions" not in status
    assert sim.sizes() == {1: 10, 2: 0}
    assert sim.rollout()["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/app:2"
    sim.patch_status({"status": {"abort": False}})  # retry
    sim.settle()
    status = sim.status()
    assert "abortedAt" not in status and not status["abort"]
    assert (status["currentStepIndex"], status["phase"]) == (1, "Paused")
    assert sim.sizes() == {1: 7, 2: 3}


def undo_patch(sim: Sim, revision: int) -> list[dict[str, Any]]:
    """What ``kubectl argo rollouts undo`` builds: the revision's RS template without the hash label."""
    replicaset = sim.cluster.apps.api_client.sanitize_for_serialization(sim.replicasets()[revision])
    template = replicaset["spec"]["template"]
    del template["metadata"]["labels"][HASH_LABEL]
    return [{"op": "replace", "path": "/spec/template", "value": template}]


def test_undo_to_the_stable_revision_is_fully_promoted_at_once(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 30}, {"pause": {}}]))
    sim.settle()
    stable = sim.status()["stableRS"]
    sim.set_image("registry.local/app:2")
    sim.settle()
    assert sim.status()["phase"] == "Paused"
    sim.patch(undo_patch(sim, 1), _content_type="application/json-patch+json")
    sim.settle()
    status = sim.status()
    assert (status["phase"], status["stableRS"], status["currentPodHash"]) == ("Healthy", stable, stable)
    assert status["currentStepIndex"] == 2
    sizes = sim.sizes()
    assert sizes == {3: 10, 2: 0}  # the old template's ReplicaSet takes the next revision
    assert sim.rollout()["metadata"]["annotations"][REVISION] == "3"


def test_a_template_change_mid_rollout_starts_a_new_revision_and_stops_the_old_analysis(sim: Sim) -> None:
    sim.create("analysistemplates", slow_template())
    sim.create("rollouts", rollout(steps=[{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "slow"}]}},
                                          {"pause": {}}]))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    status = sim.status()
    assert status["currentStepIndex"] == 1
    name = status["canary"]["currentStepAnalysisRunStatus"]["name"]
    assert sim.run_named(name)["status"]["phase"] == "Running"
    sim.set_image("registry.local/app:3")
    sim.settle()
    status = sim.status()
    digest = sim.replicasets()[3].metadata.labels[HASH_LABEL]
    assert (status["currentPodHash"], status["currentStepIndex"]) == (digest, 1)
    assert sim.sizes() == {1: 8, 2: 0, 3: 2}
    old = sim.run_named(name)
    assert old["spec"]["terminate"] is True
    assert (old["status"]["phase"], old["status"]["message"]) == ("Successful", "Run Terminated")
    assert status["canary"]["currentStepAnalysisRunStatus"]["name"] == f"web-{digest}-3-1"


def test_promote_during_a_running_analysis_skips_it_and_stops_its_run(sim: Sim) -> None:
    sim.create("analysistemplates", slow_template())
    sim.create("rollouts", rollout(steps=[{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "slow"}]}},
                                          {"pause": {}}]))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    name = sim.status()["canary"]["currentStepAnalysisRunStatus"]["name"]
    # promote with no pause conditions: the plugin moves the index on
    sim.patch_status({"status": {"pauseConditions": None, "currentStepIndex": 2}})
    sim.tick(times=2)
    status = sim.status()
    assert (status["currentStepIndex"], status["phase"]) == (2, "Paused")
    assert "currentStepAnalysisRunStatus" not in status["canary"]
    assert sim.run_named(name)["status"]["phase"] == "Successful" and sim.run_named(name)["spec"]["terminate"]


def test_background_analysis_runs_from_its_starting_step_until_the_canary_is_promoted(sim: Sim) -> None:
    sim.create("analysistemplates", slow_template(interval="1h", consecutiveErrorLimit=100))
    background = {"templates": [{"templateName": "slow"}], "startingStep": 1}
    sim.create("rollouts", rollout(steps=[{"setWeight": 20}, {"pause": {}}], analysis=background))
    sim.settle()
    assert sim.runs() == []  # no background analysis for the first revision
    sim.set_image("registry.local/app:2")
    sim.tick()
    assert sim.runs() == []  # step 0 is before startingStep
    sim.settle()
    digest = sim.replicasets()[2].metadata.labels[HASH_LABEL]
    run = sim.run_named(f"web-{digest}-2")
    assert run["metadata"]["labels"] == {HASH_LABEL: digest, "rollout-type": "Background", "app": "web"}
    assert sim.status()["canary"]["currentBackgroundAnalysisRunStatus"] == {"name": f"web-{digest}-2",
                                                                            "status": "Running"}
    sim.patch_status({"status": {"promoteFull": True}})
    sim.settle()
    sim.settle()
    run = sim.run_named(f"web-{digest}-2")
    assert run["spec"]["terminate"] is True and run["status"]["phase"] == "Successful"
    assert sim.status()["phase"] == "Healthy"


def test_a_failing_background_analysis_aborts(sim: Sim) -> None:
    sim.create("analysistemplates", slow_template())
    annotations = {BACKGROUND_OUTCOME: "Failed"}
    sim.create("rollouts", rollout(steps=[{"setWeight": 20}, {"pause": {}}], annotations=annotations,
                                   analysis={"templates": [{"templateName": "slow"}]}))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    status = sim.status()
    detail = 'Metric "web" assessed Failed due to failed (1) > failureLimit (0)'
    assert status["canary"]["currentBackgroundAnalysisRunStatus"]["message"] == detail
    assert status["message"] == ("RolloutAborted: Rollout aborted update to revision 2: "
                                 f"Background analysis phase error/failed: {detail}")
    assert sim.sizes() == {1: 10, 2: 0}


def test_set_weight_without_traffic_routing_is_the_closest_replica_count(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 41}, {"pause": {}}]))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    assert sim.sizes() == {1: 6, 2: 4}
    assert "weights" not in sim.status().get("canary", {})


@pytest.mark.parametrize(("replicas", "weight", "surge", "counts"), [
    (10, 41, 3, (4, 6)), (10, 45, 0, (5, 5)), (3, 50, 0, (2, 1)), (10, 5, 0, (1, 9)), (1, 5, 0, (0, 1)),
    (1, 5, 1, (1, 1)), (10, 0, 3, (0, 10)), (10, 100, 3, (10, 0))])
def test_the_canary_count_rounds_to_the_closest_and_up_on_a_tie(replicas: int, weight: int, surge: int,
                                                                 counts: tuple[int, int]) -> None:
    assert basic_canary_counts(replicas, weight, surge) == counts


@pytest.mark.parametrize(("replicas", "weight", "surge", "unavailable", "new", "stable", "counts"), [
    (10, 10, 1, 1, (0, 0), (10, 10), (1, 9)), (10, 30, 3, 0, (0, 0), (10, 10), (3, 10)),
    (10, 30, 0, 5, (0, 0), (10, 10), (0, 7)), (1, 5, 1, 0, (0, 0), (1, 1), (1, 1)),
    (1, 95, 1, 0, (0, 0), (1, 1), (1, 1))])
def test_each_reconcile_moves_the_counts_within_surge_and_unavailable(
        replicas: int, weight: int, surge: int, unavailable: int, new: tuple[int, int], stable: tuple[int, int],
        counts: tuple[int, int]) -> None:
    """The worked examples in CalculateReplicaCountsForBasicCanary's comment (utils/replicaset/canary.go)."""
    assert basic_canary_step(replicas, weight, surge, unavailable, SetSize(*new), SetSize(*stable), 0) == counts


def test_scale_sets_the_replicas_the_steps_divide(sim: Sim) -> None:
    sim.create("rollouts", rollout(replicas=4, steps=[{"setWeight": 50}, {"pause": {}}]))
    sim.settle()
    sim.custom.patch_namespaced_custom_object_scale(*ARGO, NAMESPACE, "rollouts", "web", {"spec": {"replicas": 6}})
    sim.settle()
    status = sim.status()
    assert (status["HPAReplicas"], status["availableReplicas"], status["phase"]) == (6, 6, "Healthy")
    assert status["observedGeneration"] == "2"


def test_restart_replaces_the_pods_created_before_restart_at(sim: Sim) -> None:
    sim.create("rollouts", rollout(replicas=4, steps=[{"setWeight": 50}]))
    sim.settle()
    before = {item.metadata.name for item in sim.cluster.core.list_namespaced_pod(NAMESPACE).items}
    restart_at = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    sim.patch({"spec": {"restartAt": restart_at}})  # what ``kubectl argo rollouts restart --in 1s`` sends
    sim.tick()
    assert (sim.status()["phase"], sim.status()["message"]) == ("Progressing", "rollout is restarting")
    deadline = time.monotonic() + 30.0
    while sim.status().get("restartedAt") != restart_at:  # the wall clock must pass restartAt first
        assert time.monotonic() < deadline, "timed out waiting for the restart"
        sim.tick()
        time.sleep(0.05)
    pods = sim.cluster.core.list_namespaced_pod(NAMESPACE).items
    assert len(pods) == 4 and not before & {item.metadata.name for item in pods}
    sim.settle()
    assert sim.status()["phase"] == "Healthy"


def test_a_manual_pause_is_reported_as_paused(sim: Sim) -> None:
    sim.create("rollouts", rollout(steps=[{"setWeight": 50}]))
    sim.settle()
    sim.patch({"spec": {"paused": True}})
    sim.tick()
    assert (sim.status()["phase"], sim.status()["message"]) == ("Paused", "manually paused")


def test_blue_green_and_a_workload_ref_are_refused_with_an_invalid_spec(sim: Sim) -> None:
    body = rollout()
    body["spec"]["strategy"] = {"blueGreen": {"activeService": "web"}}
    sim.create("rollouts", body)
    sim.tick()
    status = sim.status()
    assert status["phase"] == "Degraded" and status["message"].startswith("InvalidSpec: ")
    assert "blueGreen" in sim.conditions()["InvalidSpec"][2]
    referenced = rollout("ref")
    del referenced["spec"]["template"]
    referenced["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    sim.create("rollouts", referenced)
    sim.tick()
    assert sim.status("ref")["message"] == "InvalidSpec: kubesim does not simulate spec.workloadRef"
    assert sim.replicasets() == {}


def test_deleting_a_rollout_takes_its_replicasets_and_analysisruns(sim: Sim) -> None:
    start_seed(sim, {2: "Inconclusive"})
    sim.tick(3600.5)
    sim.settle()
    assert sim.runs() and sim.replicasets()
    sim.custom.delete_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "web")
    sim.settle()
    assert sim.runs() == [] and sim.replicasets() == {}
    assert sim.cluster.core.list_namespaced_pod(NAMESPACE).items == []
