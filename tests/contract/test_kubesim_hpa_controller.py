"""kubesim's HPA controller on the seed's ai-api (services/kubesim/scenarios/seed.yaml), through the official client,
with the controllers stepped one second at a time on an injected clock (their own loop ticks only once an hour).

Every number below is worked by hand from the algorithm (../shared/reference/k8s.md section 1, services/hpa.py).
The seed's HPA: min 2, max 20; cpu at 70% of the 500m request and 100 http_requests_per_second per pod; scale-up
window 0 with Percent 100 and Pods 4 per 15 s (selectPolicy Max); scale-down window 300 s, Percent 10 per 60 s.
The board holds the workload's totals, spread evenly over its Running pods."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

import services.kubesim
from services.hpa import Behavior, HpaSpec, MetricSpec, ScalingPolicy, ScalingRules
from services.kubesim.controllers.base import READY_SECONDS, Settings
from services.kubesim.controllers.hpa import SpecError, parse_spec, selector_text
from services.kubesim.metrics import Series
from tests.contract.conftest import Cluster, add_ready_node, node, rollout

pytestmark = pytest.mark.kubesim_only(reason="steps kubesim's controllers on an injected clock and writes its metric "
                                             "board")

NS = "ai-prod"
START = 1000.0  # the injected clock's reading when the cluster starts
# The runner's own loop ticks once at start and then sleeps an hour: the test steps the controllers itself.
SETTINGS = Settings(tick=3600.0, ready_delay=2.0, hpa_sync=15.0)
SEED = Path(services.kubesim.__file__).parent / "scenarios" / "seed.yaml"
RPS = "http_requests_per_second"


def seed_object(kind: str, name: str) -> dict[str, Any]:
    for obj in yaml.safe_load(SEED.read_text())["objects"]:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return copy.deepcopy(obj)
    raise AssertionError(f"the seed scenario has no {kind} {name}")


class Sim:
    """The cluster and its hand-stepped clock: ``advance(n)`` runs n one-second ticks."""

    def __init__(self, kube: Callable[..., Cluster]) -> None:
        self.now = START
        self.cluster = kube(controllers=SETTINGS, clock=lambda: self.now)
        self.cluster.core.create_namespace({"metadata": {"name": NS}})
        add_ready_node(self.cluster, node("cpu-1", cpu="32", memory="128Gi"))
        self.hpas = client.AutoscalingV2Api(self.cluster.admin)

    @property
    def t(self) -> float:
        """Seconds since the cluster started."""
        return self.now - START

    def advance(self, seconds: int) -> None:
        controllers = self.cluster.sim.controllers
        assert controllers is not None

        def steps() -> None:
            for _ in range(seconds):
                self.now += 1.0
                controllers.tick()

        self.cluster.sim.call(steps)

    def load(self, workload: str = "ai-api", **totals: float | None) -> None:
        """Sets (or, with None, removes) the workload's totals on the board: cpu in cores, requests per second."""
        controllers = self.cluster.sim.controllers
        assert controllers is not None

        def write() -> None:
            for metric, value in totals.items():
                series = Series(NS, RPS if metric == "rps" else metric, workload)
                if value is None:
                    controllers.board.clear(series)
                else:
                    controllers.board.set(series, value, self.now, "test")

        self.cluster.sim.call(write)

    def replicas(self, name: str = "ai-api") -> int:
        return self.cluster.apps.read_namespaced_deployment(name, NS).spec.replicas

    def hpa(self, name: str = "ai-api-hpa") -> client.V2HorizontalPodAutoscaler:
        return self.hpas.read_namespaced_horizontal_pod_autoscaler(name, NS)

    def condition(self, kind: str, name: str = "ai-api-hpa") -> tuple[str, str]:
        found = next(c for c in self.hpa(name).status.conditions if c.type == kind)
        return found.status, found.reason

    def events(self, reason: str, name: str = "ai-api-hpa") -> list[client.CoreV1Event]:
        found = self.cluster.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
        return [event for event in found if event.reason == reason]


def rescales(sim: Sim) -> list[str]:
    """The SuccessfulRescale messages, oldest first (one event per distinct message, each written once here)."""
    found = sim.events("SuccessfulRescale")
    return [e.message for e in sorted(found, key=lambda e: int(e.metadata.resource_version))]


@pytest.fixture
def sim(kube: Callable[..., Cluster]) -> Sim:
    made = Sim(kube)
    made.cluster.apps.create_namespaced_deployment(NS, seed_object("Deployment", "ai-api"))
    made.advance(30)  # 3 pods Running from t=1, Ready from t=3: past the 15 s metric window for cpu by t=31
    return made


def create_seed_hpa(sim: Sim) -> None:
    sim.hpas.create_namespaced_horizontal_pod_autoscaler(NS, seed_object("HorizontalPodAutoscaler", "ai-api-hpa"))


def test_the_seed_hpa_scales_up_by_its_policies_to_the_maximum_and_down_after_its_window(sim: Sim) -> None:
    sim.load(rps=400, cpu=0.6)
    create_seed_hpa(sim)
    sim.advance(1)  # t=31, the first reconcile: the first tick that sees the HPA
    # rps: 400/3 = 133.333 per pod, ratio 1.333 -> ceil(1.333 x 3) = 4. cpu: 0.6/3 = 200m of 500m = 40%,
    # 40/70 x 3 -> 2. The highest, 4, is within the scale-up limit max(ceil(3 x 2), 3 + 4) = 7.
    assert sim.replicas() == 4
    hpa = sim.hpa()
    assert (hpa.status.current_replicas, hpa.status.desired_replicas, hpa.status.observed_generation) == (3, 4, 1)
    assert hpa.status.last_scale_time is not None
    cpu, rps = hpa.status.current_metrics
    assert (cpu.resource.name, cpu.resource.current.average_utilization, cpu.resource.current.average_value) == (
        "cpu", 40, "200m")
    assert (rps.pods.metric.name, rps.pods.current.average_value) == (RPS, "133333m")
    assert sim.condition("AbleToScale") == ("True", "SucceededRescale")
    assert sim.condition("ScalingActive") == ("True", "ValidMetricFound")
    assert sim.condition("ScalingLimited") == ("False", "DesiredWithinRange")
    assert [e.message for e in sim.events("SuccessfulRescale")] == [
        f"New size: 4; reason: Pods/{RPS} above target"]

    sim.load(rps=2000)
    sim.advance(14)  # t=45: the next sync is at t=46
    assert sim.replicas() == 4
    # Each sync: 2000 spread over the pods asks for 20; the limit is max(100%, +4 pods) of the count 15 s before.
    for t, size, limited in ((46, 8, "ScaleUpLimit"), (61, 16, "ScaleUpLimit"), (76, 20, "DesiredWithinRange")):
        sim.advance(int(t - sim.t))
        assert (sim.t, sim.replicas()) == (t, size)
        assert sim.condition("ScalingLimited") == ("True" if limited != "DesiredWithinRange" else "False", limited)
        assert f"New size: {size}; reason: Pods/{RPS} above target" in rescales(sim)
    # At 16 pods 2000 asks for exactly 20 (125 per pod): the maximum, not over it. 2500 asks for 25.
    sim.load(rps=2500)
    sim.advance(15)  # t=91
    assert sim.replicas() == 20
    hpa = sim.hpa()
    assert (hpa.status.current_replicas, hpa.status.desired_replicas) == (20, 20)
    assert hpa.status.current_metrics[1].pods.current.average_value == "125"
    assert sim.condition("ScalingLimited") == ("True", "TooManyReplicas")
    assert rescales(sim) == [f"New size: {n}; reason: Pods/{RPS} above target" for n in (4, 8, 16, 20)]

    # The load drops: both metrics ask for 2 (200/20 = 10 per pod; cpu 30m of 500m = 6%), but the 300 s window
    # holds the highest recent recommendation (25, at t=91) until t=391.
    sim.load(rps=200)
    while sim.t < 376:
        sim.advance(15)
        assert sim.replicas() == 20, f"scaled down at t={sim.t}, inside the 300 s window"
    assert sim.condition("AbleToScale") == ("True", "ScaleDownStabilized")
    assert sim.condition("ScalingLimited") == ("False", "DesiredWithinRange")
    sim.advance(15)  # t=391: 10% per 60 s: int(20 x 0.9) = 18
    assert sim.replicas() == 18
    assert sim.condition("ScalingLimited") == ("True", "ScaleDownLimit")
    assert rescales(sim)[-1] == "New size: 18; reason: All metrics below target"
    for _ in range(3):  # t=406, 421, 436: the 60 s period still counts the 2 removed at t=391
        sim.advance(15)
        assert sim.replicas() == 18
    sim.advance(15)  # t=451: int(18 x 0.9) = 16
    assert sim.replicas() == 16
    sim.advance(60)  # t=511: int(16 x 0.9) = 14
    assert sim.replicas() == 14
    assert sim.hpa().status.desired_replicas == 14


def test_without_readings_scaling_is_inactive_and_a_missing_metric_blocks_only_a_scale_down(sim: Sim) -> None:
    create_seed_hpa(sim)
    sim.advance(1)
    assert sim.replicas() == 3
    assert sim.condition("ScalingActive") == ("False", "FailedGetResourceMetric")
    assert sim.condition("AbleToScale") == ("True", "SucceededGetScale")
    assert [e.type for e in sim.events("FailedGetResourceMetric") + sim.events("FailedGetPodsMetric")] == [
        "Warning", "Warning"]
    failed = sim.events("FailedComputeMetricsReplicas")
    assert [e.message for e in failed] == ["invalid metrics (2 invalid out of 2), first error is: failed to get cpu "
                                           "utilization: unable to get metric cpu: no reading"]
    hpa = sim.hpa()
    assert (hpa.status.current_replicas, hpa.status.desired_replicas, hpa.status.current_metrics) == (3, 0, None)

    sim.load(rps=400)  # cpu still missing: the request rate alone may scale up (to 4)
    sim.advance(15)
    assert sim.replicas() == 4
    assert sim.condition("ScalingActive") == ("True", "ValidMetricFound")
    sim.load(rps=100)  # it would now scale down to 1 -> 2, but a missing metric forbids a scale-down
    sim.advance(15)
    assert sim.replicas() == 4
    assert sim.condition("ScalingActive") == ("False", "FailedGetResourceMetric")
    assert sim.hpa().status.desired_replicas == 4


def test_a_missing_scale_target_is_reported_until_it_exists(sim: Sim) -> None:
    hpa = seed_object("HorizontalPodAutoscaler", "ai-api-hpa")
    hpa["spec"]["scaleTargetRef"]["name"] = "ai-api-v2"
    sim.hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa)
    sim.advance(1)
    assert sim.condition("AbleToScale") == ("False", "FailedGetScale")
    status = next(c for c in sim.hpa().status.conditions if c.type == "AbleToScale")
    assert status.message == ("the HPA controller was unable to get the target's current scale: "
                              'deployments.apps "ai-api-v2" not found')
    assert [(e.type, e.message) for e in sim.events("FailedGetScale")] == [
        ("Warning", 'deployments.apps "ai-api-v2" not found')]

    target = seed_object("Deployment", "ai-api")
    target["metadata"]["name"] = "ai-api-v2"
    target["spec"]["selector"]["matchLabels"]["version"] = "v2"
    target["spec"]["template"]["metadata"]["labels"]["version"] = "v2"
    sim.cluster.apps.create_namespaced_deployment(NS, target)
    sim.load(workload="ai-api-v2", rps=300, cpu=0.3)
    sim.advance(30)  # syncs at t=46 and t=61 (by then its pods, Ready from t=34, count for cpu too)
    assert sim.condition("AbleToScale")[0] == "True"
    assert sim.replicas("ai-api-v2") == 3  # 100 per pod: on target
    assert sim.replicas("ai-api") == 3  # the seed's own Deployment is not this HPA's


def test_a_malformed_hpa_is_reported_and_the_others_still_scale(sim: Sim) -> None:
    bad = seed_object("HorizontalPodAutoscaler", "ai-api-hpa")
    bad["metadata"]["name"] = "inverted"
    bad["spec"].update(minReplicas=5, maxReplicas=2)
    sim.hpas.create_namespaced_horizontal_pod_autoscaler(NS, bad)
    create_seed_hpa(sim)
    sim.load(rps=400, cpu=0.6)
    sim.advance(1)
    assert sim.condition("AbleToScale", "inverted") == ("False", "InvalidSpec")
    assert [e.message for e in sim.events("InvalidSpec", "inverted")] == [
        "minReplicas (5) must not exceed maxReplicas (2)"]
    assert sim.replicas() == 4


def hpa_for(name: str, api_version: str, kind: str, metric: dict[str, Any], maximum: int = 10) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": name},
                     "minReplicas": 1, "maxReplicas": maximum, "metrics": [metric]}}


def test_a_rollout_scales_on_an_external_metric_and_a_statefulset_on_an_object_metric(sim: Sim) -> None:
    sim.cluster.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", rollout("worker"))
    labels = {"app": "vllm"}
    sim.cluster.apps.create_namespaced_stateful_set(NS, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "vllm"},
        "spec": {"serviceName": "vllm", "replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "main", "image": "registry.local/vllm:1"}]}}}})
    sim.advance(10)  # vllm-0 Running and Ready
    sim.hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa_for("worker", "argoproj.io/v1alpha1", "Rollout", {
        "type": "External", "external": {"metric": {"name": "queue_length"},
                                         "target": {"type": "AverageValue", "averageValue": "10"}}}))
    sim.hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa_for("vllm", "apps/v1", "StatefulSet", {
        "type": "Object", "object": {"describedObject": {"apiVersion": "v1", "kind": "Service", "name": "vllm"},
                                     "metric": {"name": "requests_per_second"},
                                     "target": {"type": "Value", "value": "100"}}}, maximum=4))
    sim.load(workload="", queue_length=50)
    sim.load(workload="vllm", requests_per_second=300)
    sim.advance(1)
    # External AverageValue: ceil(50 / 10) = 5 whatever runs now (within the legacy limit max(2 x 3, 4) = 6).
    worker = sim.cluster.custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", NS, "rollouts", "worker")
    assert worker["spec"]["replicas"] == 5
    external = sim.hpa("worker").status.current_metrics[0].external
    assert (external.metric.name, external.current.average_value) == ("queue_length", "16667m")  # 50 over 3
    assert sim.events("SuccessfulRescale", "worker")[0].message == (
        "New size: 5; reason: External/queue_length above target")
    # Object Value: 300 / 100 = 3 times the one ready pod -> 3 (within max(2 x 1, 4) = 4).
    assert sim.cluster.apps.read_namespaced_stateful_set("vllm", NS).spec.replicas == 3
    described = sim.hpa("vllm").status.current_metrics[0].object
    assert (described.described_object.name, described.current.value) == ("vllm", "300")


def test_a_running_pod_that_is_not_ready_holds_back_a_cpu_scale_up_until_it_is_gone(sim: Sim) -> None:
    slow = seed_object("Deployment", "ai-api")["spec"]["template"]
    slow["metadata"].update(name="ai-api-slow", annotations={READY_SECONDS: "1000"})  # Running, not Ready
    sim.cluster.core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", **slow})
    sim.advance(20)  # its Ready=False is older than the 15 s metric window: only its readiness can leave it out
    sim.hpas.create_namespaced_horizontal_pod_autoscaler(NS, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "ai-api-cpu"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ai-api"},
                 "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}}]}})
    sim.load(cpu=1.6)
    sim.advance(1)
    # 1.6 cores over 4 Running pods: 400m each. The 3 ready ones use 1200m of 1500m = 80%, ratio 1.14: a scale-up,
    # so the not-ready pod counts as using nothing: 1200m of 2000m = 60%, ratio 0.86. The direction flipped: hold.
    assert sim.replicas() == 3
    cpu = sim.hpa("ai-api-cpu").status.current_metrics[0].resource.current
    assert (cpu.average_utilization, cpu.average_value) == (80, "400m")
    assert sim.condition("ScalingActive", "ai-api-cpu") == ("True", "ValidMetricFound")

    sim.cluster.core.delete_namespaced_pod("ai-api-slow", NS)
    sim.advance(15)
    # 1.6 cores over 3 pods: 533m each, 1599m of 1500m = 106%, ratio 1.51 -> ceil(1.51 x 3) = 5 (limit max(6, 4)).
    assert sim.replicas() == 5
    assert sim.events("SuccessfulRescale", "ai-api-cpu")[0].message == "New size: 5; reason: Resource/cpu above target"


def test_the_seed_hpa_spec_is_read_whole_and_a_malformed_one_is_refused_naming_the_fault() -> None:
    spec = parse_spec(seed_object("HorizontalPodAutoscaler", "ai-api-hpa"))
    assert spec == HpaSpec(max_replicas=20, min_replicas=2, metrics=(
        MetricSpec("Resource", "cpu", "Utilization", 70.0), MetricSpec("Pods", RPS, "AverageValue", 100.0)),
        behavior=Behavior(
            scale_up=ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15))),
            scale_down=ScalingRules(300, None, (ScalingPolicy("Percent", 10, 60),))))
    tolerant = seed_object("HorizontalPodAutoscaler", "ai-api-hpa")
    tolerant["spec"]["behavior"]["scaleUp"]["tolerance"] = "50m"
    assert parse_spec(tolerant).behavior.scale_up.tolerance == 0.05  # type: ignore[union-attr]
    for fault, message in (({"maxReplicas": None}, "spec.maxReplicas must be an integer"),
                           ({"metrics": [{"type": "ContainerResource"}]}, "unknown metric source type"),
                           ({"metrics": [{"type": "Pods", "pods": {"metric": {"name": "x"}, "target": {
                               "type": "Utilization", "averageUtilization": 50}}}]}, "a Pods metric takes"),
                           ({"metrics": [{"type": "Object", "object": {"metric": {"name": "x"}, "target": {
                               "type": "Value", "value": "1"}}}]}, "needs describedObject.name"),
                           ({"metrics": [{"type": "External", "external": {"metric": {"name": "x"}, "target": {
                               "type": "Value", "value": "lots"}}}]}, "not a resource quantity"),
                           ({"behavior": {"scaleUp": {"selectPolicy": "Sometimes"}}}, "selectPolicy")):
        broken = seed_object("HorizontalPodAutoscaler", "ai-api-hpa")
        broken["spec"].update(fault)
        with pytest.raises(SpecError, match=message):
            parse_spec(broken)


def test_a_replicaset_chosen_by_match_expressions_scales_within_the_legacy_limit(sim: Sim) -> None:
    assert selector_text({"matchLabels": {"app": "batch"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]}, {"key": "canary", "operator": "DoesNotExist"},
        {"key": "zone", "operator": "NotIn", "values": ["x"]}, {"key": "gpu", "operator": "Exists"}]}) == (
        "app=batch,tier in (a,b),!canary,zone notin (x),gpu")
    labels = {"app": "batch", "tier": "a"}
    sim.cluster.apps.create_namespaced_replica_set(NS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "batch"},
        "spec": {"replicas": 2, "selector": {"matchExpressions": [
                     {"key": "app", "operator": "In", "values": ["batch"]},
                     {"key": "tier", "operator": "Exists"}]},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "main", "image": "registry.local/batch:1"}]}}}})
    sim.advance(5)
    sim.hpas.create_namespaced_horizontal_pod_autoscaler(NS, hpa_for("batch", "apps/v1", "ReplicaSet", {
        "type": "Pods", "pods": {"metric": {"name": "jobs_per_second"},
                                 "target": {"type": "AverageValue", "averageValue": "10"}}}))
    sim.load(workload="batch", jobs_per_second=60)
    sim.advance(1)
    # 60 over its 2 pods (and none of ai-api's) is 30 each: ratio 3 -> 6; without behavior, at most max(2 x 2, 4) = 4.
    assert sim.cluster.apps.read_namespaced_replica_set("batch", NS).spec.replicas == 4
    assert sim.condition("ScalingLimited", "batch") == ("True", "ScaleUpLimit")
    assert sim.hpa("batch").status.current_metrics[0].pods.current.average_value == "30"
