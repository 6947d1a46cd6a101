"""Scenarios: the shipped seed seen through the official client, a bad scenario refused with the file and the key
before anything starts, and the timeline stepped on an injected clock."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from services.kubesim.cli import start
from services.kubesim.controllers.base import ANALYSIS_OUTCOME_PREFIX, CRASH_LOOP, is_ready
from services.kubesim.controllers.runner import Controllers
from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.metrics import Series
from services.kubesim.scenario import SHIPPED, ScenarioError, apply, load, sources
from services.kubesim.server import KubeApi
from services.kubesim.timeline import Timeline
from tests.contract.conftest import TOKENS
from tests.waiting import wait_for

A100 = "NVIDIA-A100-SXM4-80GB"
SEED = SHIPPED / "seed.yaml"
WITHIN_S = 60.0  # a loaded 2-core machine ticks slowly; the wait ends as soon as the state is there




def test_the_seed_scenario_serves_ai_prod_through_the_official_client(tmp_path: Path) -> None:
    sim, notes = start(load("seed"), TOKENS)
    try:
        assert notes == [f"{SEED}: metrics[0].gateway (ai-prod/ai-api) is not fed: no --gateway-url"]
        path = write_kubeconfig(tmp_path / "kubeconfig", sim.url, TOKENS, sim.ca_pem)
        api = config.new_client_from_config(config_file=str(path))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

        def ready_api_pods() -> list[Any]:
            pods = core.list_namespaced_pod("ai-prod", label_selector="app=ai-api,version=v1").items
            ready = [pod for pod in pods if pod.status.phase == "Running" and any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])]
            return ready if len(ready) == 3 else []

        assert len(wait_for("3 Ready ai-api pods", ready_api_pods, WITHIN_S)) == 3
        vllm = wait_for("vllm-server-0 bound to a node",
                        lambda: (p := core.read_namespaced_pod("vllm-server-0", "ai-prod")).spec.node_name and p,
                        WITHIN_S)
        node = core.read_node(vllm.spec.node_name)
        assert node.metadata.labels["nvidia.com/gpu.product"] == A100
        assert node.status.capacity["nvidia.com/gpu"] == "4"
        assert vllm.spec.containers[0].resources.requests["nvidia.com/gpu"] == "4"
        nodes = core.list_node().items
        assert sorted(n.metadata.name for n in nodes) == [
            "cpu-0", "cpu-1", "cpu-2", "cpu-3", "gpu-a100-0", "gpu-a100-1"]

        hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("ai-api-hpa", "ai-prod")
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 20)
        assert hpa.spec.scale_target_ref.name == "ai-api" and hpa.spec.scale_target_ref.kind == "Deployment"
        assert [(m.type, m.resource.target.average_utilization if m.resource else m.pods.target.average_value)
                for m in hpa.spec.metrics] == [("Resource", 70), ("Pods", "100")]
        assert hpa.spec.behavior.scale_up.select_policy == "Max"

        rollout = custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", "ai-prod", "rollouts", "ai-api")
        steps = rollout["spec"]["strategy"]["canary"]["steps"]
        assert [step["setWeight"] for step in steps if "setWeight" in step] == [1, 10, 50, 100]
        assert [step["pause"]["duration"] for step in steps if "pause" in step] == ["1h", "2h", "4h"]
        assert rollout["spec"]["selector"]["matchLabels"] == {"app": "ai-api", "rollout": "ai-api"}
        annotations = wait_for("the timeline's analysis outcomes", lambda: custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "ai-prod", "rollouts", "ai-api")["metadata"].get("annotations"), WITHIN_S)
        assert {annotations[f"{ANALYSIS_OUTCOME_PREFIX}{step}"] for step in (2, 5, 8)} == {"Successful"}
        template = custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", "ai-prod", "analysistemplates",
                                                       "ai-api-analysis")
        assert [m["name"] for m in template["spec"]["metrics"]] == ["error-rate", "latency-p99", "quality-score"]
        board = sim.controllers.board if sim.controllers else None
        assert board is not None
        sample = wait_for("ai-api's cpu", lambda: sim.call(lambda: board.get(Series("ai-prod", "cpu", "ai-api"))),
                          WITHIN_S)
        assert (sample.value, sample.source) == (0.9, "timeline")
    finally:
        sim.stop()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text))
    return path


BAD = {
    "unknown key": ("name: x\nclusterr: {}\n", "the top level: unknown key 'clusterr'"),
    "bad node": ("name: x\ncluster:\n  nodes:\n    - {name: gpu, cpu: '8', memory: lots}\n",
                 "cluster.nodes[0].memory: expected a positive resource quantity"),
    "node without cpu": ("name: x\ncluster:\n  nodes:\n    - {name: gpu, memory: 1Gi}\n",
                         "cluster.nodes[0].cpu: expected a value (it is required)"),
    "invalid manifest": (
        """\
        name: x
        objects:
          - {apiVersion: v1, kind: Namespace, metadata: {name: ai-prod}}
          - apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web, namespace: ai-prod}
            spec:
              replicas: 1
              selector: {matchLabels: {app: web}}
              template:
                metadata: {labels: {app: web}}
                spec: {containers: [{name: main, image: app:1}], notAField: true}
        """, "objects[1] (Deployment ai-prod/web): refused as the API server would (422"),
    "object in a missing namespace": (
        "name: x\nobjects:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: nowhere}}\n",
        "objects[0] (ConfigMap nowhere/c): refused as the API server would (404"),
    "unserved kind": ("name: x\nobjects:\n  - {apiVersion: v1, kind: Secret, metadata: {name: s}}\n",
                      "objects[0] (Secret s): kubesim does not serve v1 Secret"),
    "bad at": ("name: x\ntimeline:\n  - {at: soon, metric: {namespace: a, name: cpu, value: 1}}\n",
               "timeline[0].at: expected seconds from the start"),
    "two events in one entry": (
        "name: x\ntimeline:\n  - {at: 1s, metric: {namespace: a, name: cpu, value: 1}, "
        "crash_loop: {namespace: a, pod: p}}\n", "timeline[0]: expected `at` and exactly one of"),
    "bad outcome": (
        "name: x\ntimeline:\n  - {at: 0, analysis: {namespace: a, rollout: r, step: 2, outcome: Maybe}}\n",
        "timeline[0].analysis.outcome: expected one of Successful, Failed, Inconclusive, Error, got 'Maybe'"),
    "unknown setting": ("name: x\nsettings: {tik: 1}\n", "settings: unknown key 'tik'"),
    "unknown metric source": ("name: x\nmetrics:\n  - {statsd: {}}\n", "metrics[0]: unknown key 'statsd'"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_scenario_names_the_file_and_the_key(tmp_path: Path, case: str) -> None:
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        load(str(path))
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value), str(caught.value)


def test_an_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"no-such-scenario: no such scenario file.*shipped: .*seed"):
        load("no-such-scenario")


TIMED = """\
name: timed
settings: {ready_delay: 1, crash_interval: 5}
cluster:
  nodes:
    - {name: gpu, count: 2, cpu: "16", memory: 64Gi, gpus: 4, gpu_product: NVIDIA-A100-SXM4-80GB}
objects:
  - {apiVersion: v1, kind: Namespace, metadata: {name: ai-prod}}
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: vllm-server, namespace: ai-prod}
    spec:
      serviceName: vllm-server
      replicas: 2
      selector: {matchLabels: {app: vllm-server}}
      template:
        metadata: {labels: {app: vllm-server}}
        spec:
          containers: [{name: vllm, image: vllm:1, resources: {limits: {nvidia.com/gpu: "4"}}}]
timeline:
  - {at: 60s, crash_loop: {namespace: ai-prod, pod: vllm-server-1}}
  - {at: 30s, metric: {namespace: ai-prod, workload: ai-api, name: http_requests_per_second, value: 400}}
  - {at: 1m30s, scale: {namespace: ai-prod, kind: StatefulSet, name: vllm-server, replicas: 1}}
"""


def test_the_timeline_fires_each_event_at_its_time_on_the_runners_clock(tmp_path: Path) -> None:
    scenario = load(str(write(tmp_path, TIMED)))
    now = [1000.0]
    api = KubeApi({})
    apply(scenario, api.store, api.registry)
    runner = Controllers(api.store, api.registry, scenario.settings, clock=lambda: now[0],
                         extra=(Timeline.of(scenario.timeline),))
    kinds = runner.context.kinds
    rate = Series("ai-prod", "http_requests_per_second", "ai-api")

    def at(seconds: float) -> None:
        now[0] = 1000.0 + seconds
        runner.tick()

    def pod(name: str) -> dict[str, Any]:
        return api.store.get(kinds.pods, "ai-prod", name)

    for seconds in (0, 10, 20, 29.9):
        at(seconds)
    assert runner.board.get(rate) is None
    assert is_ready(pod("vllm-server-0")), "the cluster runs on the same clock"
    at(30)
    sample = runner.board.get(rate)
    assert sample is not None and (sample.value, sample.at, sample.source) == (400.0, 1030.0, "timeline")
    at(59.9)
    assert CRASH_LOOP not in (pod("vllm-server-1")["metadata"].get("annotations") or {})
    at(60)
    assert pod("vllm-server-1")["metadata"]["annotations"][CRASH_LOOP] == "true"
    assert CRASH_LOOP not in (pod("vllm-server-0")["metadata"].get("annotations") or {})
    for seconds in (61, 62, 63):
        at(seconds)
    crashed = pod("vllm-server-1")
    waiting = crashed["status"]["containerStatuses"][0]["state"].get("waiting") or {}
    assert waiting.get("reason") == "CrashLoopBackOff" and not is_ready(crashed)
    assert api.store.get(kinds.statefulsets, "ai-prod", "vllm-server")["spec"]["replicas"] == 2
    at(90)
    assert api.store.get(kinds.statefulsets, "ai-prod", "vllm-server")["spec"]["replicas"] == 1


def test_an_event_whose_object_is_not_there_yet_fires_once_it_is(tmp_path: Path) -> None:
    scenario = load(str(write(tmp_path, """\
        name: waits
        objects:
          - {apiVersion: v1, kind: Namespace, metadata: {name: ai-prod}}
        timeline:
          - {at: 0s, analysis: {namespace: ai-prod, rollout: ai-api, step: 2, outcome: Failed}}
        """)))
    now = [0.0]
    api = KubeApi({})
    apply(scenario, api.store, api.registry)
    runner = Controllers(api.store, api.registry, scenario.settings, clock=lambda: now[0],
                         extra=(Timeline.of(scenario.timeline),))
    runner.tick()
    rollouts = runner.context.kinds.rollouts
    api.store.create(rollouts, "ai-prod", {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "ai-api"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "m",
                                                                                              "image": "a:1"}]}},
                 "strategy": {"canary": {"steps": [{"setWeight": 10}]}}}})
    now[0] = 5.0
    runner.tick()
    annotations = api.store.get(rollouts, "ai-prod", "ai-api")["metadata"]["annotations"]
    assert annotations[f"{ANALYSIS_OUTCOME_PREFIX}2"] == "Failed"


def test_the_incident_scenario_is_the_seed_with_its_own_timeline() -> None:
    incident, seed = load("incident"), load("seed")
    assert incident.objects == seed.objects and incident.nodes == seed.nodes and incident.feeds == ()
    now = [0.0]
    api = KubeApi({})
    apply(incident, api.store, api.registry)
    runner = Controllers(api.store, api.registry, incident.settings, clock=lambda: now[0],
                         extra=(Timeline.of(incident.timeline),))
    runner.tick()
    annotations = api.store.get(runner.context.kinds.rollouts, "ai-prod", "ai-api")["metadata"]["annotations"]
    assert [annotations[f"{ANALYSIS_OUTCOME_PREFIX}{step}"] for step in (2, 5, 8)] == [
        "Successful", "Failed", "Successful"], "same-time events fire in file order, the extended file's first"
    rate = Series("ai-prod", "http_requests_per_second", "ai-api")
    assert runner.board.get(rate) is None
    now[0] = 30.0
    runner.tick()
    assert runner.board.get(rate).value == 400.0  # type: ignore[union-attr]


def test_extends_is_checked_like_the_rest(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nextends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("name: b\nextends: a.yaml\n")
    with pytest.raises(ScenarioError, match=r"b\.yaml: extends: 'a\.yaml' extends this scenario in turn"):
        load(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("name: c\nextends: nowhere\n")
    with pytest.raises(ScenarioError, match=r"c\.yaml: extends: nowhere: no such scenario file"):
        load(str(tmp_path / "c.yaml"))
    again = tmp_path / "d.yaml"
    again.write_text("name: d\nextends: seed\nobjects:\n  - {apiVersion: v1, kind: Service, metadata: "
                     "{name: ai-api, namespace: ai-prod}, spec: {ports: [{port: 80}]}}\n")
    with pytest.raises(ScenarioError) as caught:
        load(str(again))
    assert str(caught.value).startswith(f"{again}: objects[0] (Service ai-prod/ai-api): refused as the API server "
                                        "would (409"), str(caught.value)


def test_each_metric_feed_becomes_its_source(tmp_path: Path) -> None:
    scenario = load(str(write(tmp_path, """\
        name: fed
        metrics:
          - {gateway: {namespace: ai-prod, workload: ai-api, multiplier: 20}}
          - {prometheus: {address: "http://127.0.0.1:9090", query: "sum(up)", namespace: jobs, metric: up,
                          interval: 2}}
          - {redis: {url: "redis://127.0.0.1:6379/0", key: queue, namespace: jobs, metric: queue, workload: worker}}
        """)))
    built, notes = sources(scenario, "http://127.0.0.1:8080/")
    assert notes == []
    gateway, prometheus, redis = built
    assert (gateway.url, gateway.multiplier, gateway.rate_series) == (
        "http://127.0.0.1:8080/metrics", 20.0, Series("ai-prod", "http_requests_per_second", "ai-api"))
    assert (prometheus.address, prometheus.query, prometheus.series, prometheus.interval_s) == (
        "http://127.0.0.1:9090", "sum(up)", Series("jobs", "up", ""), 2.0)
    assert (redis.url, redis.key, redis.series) == (
        "redis://127.0.0.1:6379/0", "queue", Series("jobs", "queue", "worker"))
