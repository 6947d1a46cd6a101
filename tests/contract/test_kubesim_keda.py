"""KEDA ScaledObjects in kubesim, through the official client: the generated HPA, triggers polled against a real
Redis and a real Prometheus, activation, cooldown to zero, fallback, bad metadata and the cascade.

The controllers are stepped by hand on an injected clock (their own loop ticks once an hour); each trigger's poll
runs on kubesim's loop beside the ticks, so the tests step and wait on what the API shows, with generous deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kubernetes import client
from kubernetes.client.rest import ApiException

from services.kubesim.controllers.base import Settings
from services.kubesim.controllers.keda import BadTrigger, parse_trigger, quantity
from services.kubesim.metrics import Sample, Series
from tests.contract.conftest import NAMESPACE, Cluster, deployment
from tests.prometheus_server import GaugeExporter, PrometheusServer
from tests.redis_server import RedisServer

pytestmark = pytest.mark.kubesim_only(reason="steps kubesim's KEDA and HPA controllers on an injected clock and "
                                             "reads their metric board")
DEADLINE_S = 60.0
START = 1000.0
GROUP, VERSION, PLURAL = "keda.sh", "v1alpha1", "scaledobjects"


class Sim:
    """A cluster whose controllers run when the test says, at the time the test says."""

    def __init__(self, kube: Callable[..., Cluster]) -> None:
        self.now = START
        self.cluster = kube(controllers=Settings(tick=3600.0), clock=lambda: self.now)

    def tick(self, advance: float = 0.0) -> None:
        self.now += advance
        controllers = self.cluster.sim.controllers
        assert controllers is not None
        self.cluster.sim.call(controllers.tick)

    def settle(self, check: Callable[[], bool], what: str) -> None:
        """Ticks (at the same clock time) until ``check`` holds: each trigger's poll completes on kubesim's loop."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            self.tick()
            if check():
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def sample(self, metric: str) -> Sample | None:
        controllers = self.cluster.sim.controllers
        assert controllers is not None
        return self.cluster.sim.call(lambda: controllers.board.get(Series(NAMESPACE, metric, "")))

    def value(self, metric: str) -> float | None:
        found = self.sample(metric)
        return None if found is None else found.value

    def create(self, body: dict[str, Any]) -> None:
        self.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

    def scaled(self, name: str) -> dict[str, Any]:
        return self.cluster.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        conditions = (self.scaled(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), {})

    def replicas(self, name: str) -> int:
        return int(self.cluster.apps.read_namespaced_deployment(name, NAMESPACE).spec.replicas)

    def hpa(self, name: str) -> client.V2HorizontalPodAutoscaler:
        return client.AutoscalingV2Api(self.cluster.admin).read_namespaced_horizontal_pod_autoscaler(name, NAMESPACE)

    def events(self, reason: str) -> list[str]:
        found = self.cluster.core.list_namespaced_event(NAMESPACE).items
        return [event.message for event in found if event.reason == reason]


@pytest.fixture
def sim(kube: Callable[..., Cluster]) -> Sim:
    return Sim(kube)


def scaled_object(name: str, target: str, triggers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": target}, "triggers": triggers, **spec}}


def redis_trigger(server: RedisServer, **metadata: str) -> dict[str, Any]:
    return {"type": "redis", "metadata": {"address": f"127.0.0.1:{server.port}", "listName": "jobs",
                                          "listLength": "5", **metadata}}


def test_a_redis_list_drives_the_generated_hpa_activation_and_cooldown_to_zero(
        sim: Sim, redis_server: RedisServer) -> None:
    sim.cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("worker", replicas=0))
    queue = redis.Redis.from_url(redis_server.url)
    queue.rpush("jobs", *range(23))
    sim.create(scaled_object("worker-queue", "worker", [redis_trigger(redis_server)], pollingInterval=15,
                             cooldownPeriod=300, minReplicaCount=0, maxReplicaCount=20))

    sim.settle(lambda: sim.value("s0-redis-jobs") == 23, "the list's length on the board")
    hpa = sim.hpa("keda-hpa-worker-queue")
    assert hpa.metadata.labels["app.kubernetes.io/managed-by"] == "keda-operator"
    assert hpa.metadata.labels["scaledobject.keda.sh/name"] == "worker-queue"
    owner = hpa.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("ScaledObject", "worker-queue", True)
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("Deployment", "worker")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 20)
    [metric] = hpa.spec.metrics
    assert metric.type == "External"
    assert metric.external.metric.name == "s0-redis-jobs"
    assert metric.external.metric.selector.match_labels == {"scaledobject.keda.sh/name": "worker-queue"}
    assert (metric.external.target.type, metric.external.target.average_value) == ("AverageValue", "5")

    sim.settle(lambda: sim.replicas("worker") == 1, "activation from 0 to 1")
    status = sim.scaled("worker-queue")["status"]
    assert sim.condition("worker-queue", "Ready")["status"] == "True"
    assert sim.condition("worker-queue", "Active")["status"] == "True"
    assert status["hpaName"] == "keda-hpa-worker-queue"
    assert status["externalMetricNames"] == ["s0-redis-jobs"]
    assert status["scaleTargetKind"] == "apps/v1.Deployment"
    assert status["scaleTargetGVKR"] == {"group": "apps", "version": "v1", "kind": "Deployment",
                                         "resource": "deployments"}
    assert status["originalReplicaCount"] == 0 and status["lastActiveTime"]
    assert any("from 0 to 1" in message for message in sim.events("KEDAScaleTargetActivated"))

    queue.delete("jobs")
    sim.tick(15)  # the next poll is due
    sim.settle(lambda: sim.condition("worker-queue", "Active").get("status") == "False", "the empty list")
    assert sim.value("s0-redis-jobs") == 0
    sim.tick(299)  # the last active tick was at START + 15: the cooldown has not passed yet
    sim.settle(lambda: sim.value("s0-redis-jobs") == 0 and sim.condition("worker-queue", "Active")["status"]
               == "False", "a quiet poll")
    assert sim.replicas("worker") >= 1  # 1, or what the HPA controller made of the 23 items
    sim.tick(1)
    sim.settle(lambda: sim.replicas("worker") == 0, "the cooldown to end at zero")
    assert sim.events("KEDAScaleTargetDeactivated")

    sim.cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "worker-queue")
    sim.settle(lambda: not client.AutoscalingV2Api(sim.cluster.admin).list_namespaced_horizontal_pod_autoscaler(
        NAMESPACE).items, "the cascade to take the HPA")
    assert sim.sample("s0-redis-jobs") is None
    queue.close()


def test_the_hpa_controller_scales_the_target_to_the_list_length_over_list_length(
        sim: Sim, redis_server: RedisServer) -> None:
    sim.cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("worker", replicas=1))
    redis.Redis.from_url(redis_server.url).rpush("jobs", *range(23))
    sim.create(scaled_object("worker-queue", "worker", [redis_trigger(redis_server)], minReplicaCount=1,
                             maxReplicaCount=20))
    sim.settle(lambda: sim.value("s0-redis-jobs") == 23, "the list's length on the board")
    for _ in range(2):  # with no behavior, one sync may at most reach max(2 x current, 4): 1 -> 4 -> 5
        sim.tick(sim.cluster.sim.controller_settings.hpa_sync)  # type: ignore[union-attr]
    sim.settle(lambda: sim.replicas("worker") == 5, "ceil(23 / 5) replicas")
    hpa = sim.hpa("keda-hpa-worker-queue")
    assert hpa.status.desired_replicas == 5
    assert hpa.status.current_metrics[0].external.current.average_value is not None


def test_a_prometheus_trigger_reads_a_real_prometheus_and_activation_is_ignored_above_zero(sim: Sim) -> None:
    with GaugeExporter() as gauges, PrometheusServer([gauges.target], scrape_interval_s=0.5) as prometheus:
        gauges.set("vllm_waiting", 12)
        prometheus.wait_for("vllm_waiting", lambda values: values == [12.0])
        sim.cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("vllm", replicas=2))
        behavior = {"scaleDown": {"stabilizationWindowSeconds": 300,
                                  "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
        sim.create(scaled_object("vllm-queue", "vllm", [{"type": "prometheus", "metadata": {
            "serverAddress": prometheus.url, "query": "sum(vllm_waiting)", "threshold": "4",
            "activationThreshold": "20"}}], minReplicaCount=1, maxReplicaCount=8, advanced={
            "horizontalPodAutoscalerConfig": {"name": "vllm-hpa", "behavior": behavior}}))

        sim.settle(lambda: sim.value("s0-prometheus") == 12, "the query's value on the board")
        assert sim.sample("s0-prometheus").source == "prometheus"  # type: ignore[union-attr]
        hpa = sim.hpa("vllm-hpa")
        assert hpa.spec.metrics[0].external.metric.name == "s0-prometheus"
        assert hpa.spec.metrics[0].external.target.average_value == "4"
        assert hpa.spec.behavior.scale_down.stabilization_window_seconds == 300
        assert hpa.spec.behavior.scale_down.policies[0].value == 1
        sim.settle(lambda: sim.scaled("vllm-queue").get("status", {}).get("hpaName") == "vllm-hpa", "the status")
        assert sim.condition("vllm-queue", "Active")["status"] == "False"  # 12 is not above activation 20
        assert sim.replicas("vllm") == 2  # minReplicaCount 1: inactive never means zero

        gauges.set("vllm_waiting", 25)
        prometheus.wait_for("vllm_waiting", lambda values: values == [25.0])
        sim.tick(30)
        sim.settle(lambda: sim.condition("vllm-queue", "Active").get("status") == "True", "activation at 25")
        assert sim.value("s0-prometheus") == 25


@pytest.mark.parametrize(("trigger", "message"), [
    ({"type": "redis", "metadata": {"address": "127.0.0.1:6379", "listLength": "5"}}, "metadata.listName is required"),
    ({"type": "redis", "metadata": {"address": "127.0.0.1:6379", "listName": "jobs", "listLength": "five"}},
     "metadata.listLength must be a number, got 'five'"),
    ({"type": "prometheus", "metadata": {"serverAddress": "http://127.0.0.1:9", "threshold": "4"}},
     "metadata.query is required"),
    ({"type": "prometheus", "metadata": {"serverAddress": "http://127.0.0.1:9", "query": "up"}},
     "metadata.threshold is required"),
    ({"type": "prometheus", "metadata": {"serverAddress": "http://127.0.0.1:9", "query": "up", "threshold": "x"}},
     "metadata.threshold must be a number, got 'x'"),
    ({"type": "kafka", "metadata": {"topic": "t"}}, "type 'kafka' is not simulated"),
])
def test_bad_trigger_metadata_makes_the_scaled_object_not_ready_and_scales_nothing(
        sim: Sim, trigger: dict[str, Any], message: str) -> None:
    sim.cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("worker", replicas=3))
    sim.create(scaled_object("broken", "worker", [trigger], minReplicaCount=0))
    sim.settle(lambda: bool(sim.condition("broken", "Ready")), "a Ready condition")
    ready = sim.condition("broken", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ScaledObjectCheckFailed")
    assert message in ready["message"]
    assert not client.AutoscalingV2Api(sim.cluster.admin).list_namespaced_horizontal_pod_autoscaler(NAMESPACE).items
    sim.tick(3600)
    assert sim.replicas("worker") == 3


def test_a_missing_scale_target_is_not_ready(sim: Sim, redis_server: RedisServer) -> None:
    sim.create(scaled_object("orphan", "nowhere", [redis_trigger(redis_server)]))
    sim.settle(lambda: bool(sim.condition("orphan", "Ready")), "a Ready condition")
    assert "Deployment 'nowhere' does not exist" in sim.condition("orphan", "Ready")["message"]


def test_metadata_values_must_be_strings_as_the_crd_says(sim: Sim, redis_server: RedisServer) -> None:
    body = scaled_object("numeric", "worker", [redis_trigger(redis_server)])
    body["spec"]["triggers"][0]["metadata"]["listLength"] = 5
    with pytest.raises(ApiException) as refused:
        sim.create(body)
    assert refused.value.status == 422


def test_an_unreachable_redis_clears_the_series_then_falls_back_after_the_failure_threshold(sim: Sim) -> None:
    with RedisServer() as server:
        redis.Redis.from_url(server.url).rpush("jobs", *range(7))
        sim.cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("worker", replicas=1))
        sim.create(scaled_object("worker-queue", "worker", [redis_trigger(server)], pollingInterval=10,
                                 minReplicaCount=1, fallback={"failureThreshold": 2, "replicas": 4}))
        sim.settle(lambda: sim.value("s0-redis-jobs") == 7, "the first reading")
        server.stop()

        def failures() -> int:
            health = (sim.scaled("worker-queue").get("status") or {}).get("health") or {}
            return int((health.get("s0-redis-jobs") or {}).get("numberOfFailures", 0))

        sim.tick(10)
        sim.settle(lambda: failures() == 1, "the first failed poll")
        assert sim.sample("s0-redis-jobs") is None
        ready = sim.condition("worker-queue", "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "TriggerError")
        assert sim.condition("worker-queue", "Fallback")["status"] == "False"
        assert any("cannot read the length of list 'jobs'" in message for message in sim.events("KEDAScalerFailed"))
        sim.tick(10)
        sim.settle(lambda: failures() == 2, "the second failed poll")
        assert sim.replicas("worker") == 1  # two failures are not more than the threshold of 2
        sim.tick(10)
        sim.settle(lambda: failures() == 3, "the third failed poll")
        assert sim.replicas("worker") == 4
        assert sim.condition("worker-queue", "Fallback")["status"] == "True"
        assert sim.value("s0-redis-jobs") == 20  # replicas x target, as KEDA's metrics adapter answers

        server.start()
        sim.tick(10)
        sim.settle(lambda: failures() == 0, "a good poll after Redis is back")
        assert sim.value("s0-redis-jobs") == 7
        assert sim.condition("worker-queue", "Fallback")["status"] == "False"
        assert sim.condition("worker-queue", "Ready")["status"] == "True"


def test_trigger_metric_names_and_targets_follow_keda() -> None:
    redis_list = parse_trigger(0, {"type": "redis", "metadata": {"host": "h", "port": "1", "listName": "queue.high"}})
    assert (redis_list.metric_name, redis_list.target) == ("s0-redis-queue-high", 5.0)  # listLength defaults to 5
    streams = parse_trigger(1, {"type": "redis-streams", "metadata": {
        "address": "h:1", "stream": "events", "consumerGroup": "workers", "pendingEntriesCount": "10"}})
    assert (streams.metric_name, streams.target) == ("s1-redis-streams-events", 10.0)
    prometheus = parse_trigger(2, {"type": "prometheus", "metricType": "Value", "metadata": {
        "serverAddress": "http://p:9090", "query": "up", "threshold": "2.5", "activationThreshold": "1"}})
    assert (prometheus.metric_name, prometheus.metric_type, prometheus.activation) == ("s2-prometheus", "Value", 1.0)
    assert (quantity(2.5), quantity(5.0)) == ("2500m", "5")
    with pytest.raises(BadTrigger, match=r"address, or metadata\.host and metadata\.port, is required"):
        parse_trigger(0, {"type": "redis", "metadata": {"listName": "jobs"}})
    with pytest.raises(BadTrigger, match=r"metadata\.threshold must be a positive number"):
        parse_trigger(0, {"type": "prometheus", "metadata": {"serverAddress": "s", "query": "q", "threshold": "0"}})
    with pytest.raises(BadTrigger, match="ignoreNullValues must be true or false"):
        parse_trigger(0, {"type": "prometheus", "metadata": {"serverAddress": "s", "query": "q", "threshold": "1",
                                                             "ignoreNullValues": "maybe"}})
