"""kubesim's controllers through the official client: Deployments, StatefulSets and Jobs get pods, the scheduler
places them by cpu, memory and GPU (with the GPU product label), and pods go Running, Ready or CrashLoopBackOff.
Every wait is on state with a deadline, polled, never a fixed sleep."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes import client, watch

from services.kubesim.controllers.base import CRASH_LOOP, READY_SECONDS, RUN_SECONDS, Settings
from tests.contract.conftest import NAMESPACE, Cluster, add_ready_node, deployment, node, pod
from tests.waiting import wait_for

pytestmark = pytest.mark.kubesim_only(reason="pods run on simulated nodes by kubesim's controllers, at its "
                                              "settings' pace and by its annotations (the images do not exist)")

FAST = Settings(tick=0.05, ready_delay=0.2, job_seconds=0.3, crash_interval=0.2)
DEADLINE = 30.0
A100 = "NVIDIA-A100-SXM4-80GB"




@pytest.fixture
def sim(kube: Callable[..., Cluster]) -> Cluster:
    cluster = kube(controllers=FAST)
    for item in (node("cpu-1"), node("a100-1", gpus=4, product=A100), node("a100-2", gpus=4, product=A100)):
        add_ready_node(cluster, item)
    return cluster


def pods_of(cluster: Cluster, selector: str) -> list[client.V1Pod]:
    return cluster.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items


def ready(item: client.V1Pod) -> bool:
    return item.status is not None and item.status.phase == "Running" and any(c.type == "Ready" and c.status == "True"
                                                  for c in item.status.conditions or [])


def ready_pods(cluster: Cluster, selector: str, count: int) -> list[client.V1Pod]:
    found = [item for item in pods_of(cluster, selector) if item.metadata.deletion_timestamp is None]
    return found if len(found) == count and all(ready(item) for item in found) else []


def gpu_pod_template(labels: dict[str, str], gpus: int) -> dict:
    return {"metadata": {"labels": labels},
            "spec": {"nodeSelector": {"nvidia.com/gpu.product": A100},
                     "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.0",
                                     "resources": {"requests": {"nvidia.com/gpu": str(gpus)},
                                                   "limits": {"nvidia.com/gpu": str(gpus)}}}]}}


def test_a_deployment_gets_ready_pods_from_a_replicaset_and_a_ready_status(sim: Cluster) -> None:
    sim.apps.create_namespaced_deployment(NAMESPACE, deployment("web", replicas=3))
    found = wait_for("3 ready pods", lambda: ready_pods(sim, "app=web", 3))
    assert all(item.spec.node_name for item in found)
    assert all(c.ready and c.restart_count == 0 and c.state.running for item in found
               for c in item.status.container_statuses)
    replicasets = sim.apps.list_namespaced_replica_set(NAMESPACE, label_selector="app=web").items
    assert len(replicasets) == 1
    owner = replicasets[0].metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Deployment", "web", True)
    digest = replicasets[0].metadata.labels["pod-template-hash"]
    assert all(item.metadata.labels["pod-template-hash"] == digest for item in found)
    assert all(item.metadata.owner_references[0].name == replicasets[0].metadata.name for item in found)

    def settled() -> client.V1Deployment | None:
        status = sim.apps.read_namespaced_deployment_status("web", NAMESPACE).status
        done = (status.ready_replicas, status.available_replicas, status.updated_replicas) == (3, 3, 3)
        return status if done and status.observed_generation == 1 else None

    status = wait_for("a ready deployment status", settled)
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions == {"Available": ("True", "MinimumReplicasAvailable"),
                          "Progressing": ("True", "NewReplicaSetAvailable")}


def test_scaling_a_deployment_through_scale_changes_its_pods(sim: Cluster) -> None:
    sim.apps.create_namespaced_deployment(NAMESPACE, deployment("web", replicas=3))
    wait_for("3 ready pods", lambda: ready_pods(sim, "app=web", 3))
    sim.apps.patch_namespaced_deployment_scale("web", NAMESPACE, {"spec": {"replicas": 5}})
    wait_for("5 ready pods", lambda: ready_pods(sim, "app=web", 5))
    sim.apps.patch_namespaced_deployment_scale("web", NAMESPACE, {"spec": {"replicas": 1}})
    wait_for("1 ready pod", lambda: ready_pods(sim, "app=web", 1))
    wait_for("a status of 1", lambda: sim.apps.read_namespaced_deployment("web", NAMESPACE).status.replicas == 1)


def test_a_template_change_rolls_the_pods_to_a_new_replicaset(sim: Cluster) -> None:
    sim.apps.create_namespaced_deployment(NAMESPACE, deployment("web", replicas=3))
    first = wait_for("3 ready pods", lambda: ready_pods(sim, "app=web", 3))
    old_hash = first[0].metadata.labels["pod-template-hash"]
    sim.apps.patch_namespaced_deployment("web", NAMESPACE, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "registry.local/app:2"}]}}}})

    def rolled() -> list[client.V1Pod]:
        found = ready_pods(sim, "app=web", 3)
        return found if all(item.spec.containers[0].image == "registry.local/app:2" for item in found) else []

    pods = wait_for("3 ready pods of the new template", rolled)
    new_hash = pods[0].metadata.labels["pod-template-hash"]
    assert new_hash != old_hash
    replicasets = {rs.metadata.labels["pod-template-hash"]: rs.spec.replicas
                   for rs in sim.apps.list_namespaced_replica_set(NAMESPACE, label_selector="app=web").items}
    assert replicasets == {old_hash: 0, new_hash: 3}
    wait_for("generation 2 observed, all updated", lambda: (
        (status := sim.apps.read_namespaced_deployment("web", NAMESPACE).status).observed_generation == 2
        and status.updated_replicas == 3 and status.replicas == 3))


def test_a_gpu_statefulset_lands_one_pod_per_a100_node_and_a_third_stays_pending(sim: Cluster) -> None:
    labels = {"app": "vllm-server"}
    sim.apps.create_namespaced_stateful_set(NAMESPACE, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "vllm-server"},
        "spec": {"replicas": 2, "serviceName": "vllm-server", "selector": {"matchLabels": labels},
                 "template": gpu_pod_template(labels, 4)}})
    found = wait_for("2 ready vllm pods", lambda: ready_pods(sim, "app=vllm-server", 2))
    assert sorted((item.metadata.name, item.spec.node_name) for item in found) in (
        [("vllm-server-0", "a100-1"), ("vllm-server-1", "a100-2")],
        [("vllm-server-0", "a100-2"), ("vllm-server-1", "a100-1")])
    wait_for("a ready statefulset status", lambda: (
        sim.apps.read_namespaced_stateful_set("vllm-server", NAMESPACE).status.ready_replicas == 2))

    sim.apps.patch_namespaced_stateful_set_scale("vllm-server", NAMESPACE, {"spec": {"replicas": 3}})

    def unschedulable() -> client.V1Pod | None:
        third = [item for item in pods_of(sim, "app=vllm-server") if item.metadata.name == "vllm-server-2"]
        conditions = (third[0].status.conditions or []) if third else []
        return third[0] if any(c.type == "PodScheduled" and c.status == "False" for c in conditions) else None

    third = wait_for("vllm-server-2 unschedulable", unschedulable)
    assert third.status.phase == "Pending" and third.spec.node_name is None
    events = wait_for("a FailedScheduling event", lambda: [
        event for event in sim.core.list_namespaced_event(NAMESPACE).items
        if event.reason == "FailedScheduling" and event.involved_object.name == "vllm-server-2"])
    assert events[0].type == "Warning" and events[0].involved_object.kind == "Pod"
    assert events[0].involved_object.uid == third.metadata.uid
    assert "Insufficient nvidia.com/gpu" in events[0].message


def test_a_gpu_pod_asking_for_another_product_is_not_placed_on_the_a100s(sim: Cluster) -> None:
    other = gpu_pod_template({"app": "h100"}, 1)
    other["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    sim.core.create_namespaced_pod(NAMESPACE, {"apiVersion": "v1", "kind": "Pod",
                                               "metadata": {"name": "h100", **other["metadata"]},
                                               "spec": other["spec"]})
    plain_gpu = pod("gpu-anywhere", {"app": "gpu"})
    plain_gpu["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    sim.core.create_namespaced_pod(NAMESPACE, plain_gpu)
    placed = wait_for("the plain GPU pod placed", lambda: sim.core.read_namespaced_pod(
        "gpu-anywhere", NAMESPACE).spec.node_name)
    assert placed in ("a100-1", "a100-2")
    events = wait_for("a FailedScheduling event", lambda: [
        event for event in sim.core.list_namespaced_event(NAMESPACE).items
        if event.reason == "FailedScheduling" and event.involved_object.name == "h100"])
    assert "didn't match Pod's node affinity/selector" in events[0].message
    assert sim.core.read_namespaced_pod("h100", NAMESPACE).spec.node_name is None


def test_a_job_runs_its_pods_to_completion(sim: Cluster) -> None:
    template = pod("unused", {"app": "batch"})
    template["spec"]["restartPolicy"] = "Never"
    client.BatchV1Api(sim.admin).create_namespaced_job(NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "warmup", "annotations": {RUN_SECONDS: "0.2"}},
        "spec": {"completions": 3, "parallelism": 2,
                 "template": {"metadata": {"labels": {"app": "batch"}}, "spec": template["spec"]}}})

    def complete() -> client.V1Job | None:
        job = client.BatchV1Api(sim.admin).read_namespaced_job_status("warmup", NAMESPACE)
        conditions = (job.status or client.V1JobStatus()).conditions or []
        done = any(c.type == "Complete" and c.status == "True" for c in conditions)
        return job if done else None

    job = wait_for("the job complete", complete)
    assert (job.status.succeeded, job.status.active or 0) == (3, 0)
    assert job.status.start_time and job.status.completion_time
    pods = pods_of(sim, "job-name=warmup")
    assert len(pods) == 3 and {item.status.phase for item in pods} == {"Succeeded"}


def test_a_pod_marked_to_crash_loop_restarts_and_backs_off(sim: Cluster) -> None:
    crashing = pod("flaky", {"app": "flaky"})
    crashing["metadata"]["annotations"] = {CRASH_LOOP: "true"}
    sim.core.create_namespaced_pod(NAMESPACE, crashing)

    def restarted() -> client.V1ContainerStatus | None:
        found = sim.core.read_namespaced_pod_status("flaky", NAMESPACE).status or client.V1PodStatus()
        statuses = found.container_statuses or []
        return statuses[0] if statuses and statuses[0].restart_count >= 2 else None

    status = wait_for("two restarts", restarted)
    assert status.state.waiting.reason == "CrashLoopBackOff" and not status.ready
    events = wait_for("a BackOff event", lambda: [
        event for event in sim.core.list_namespaced_event(NAMESPACE).items
        if event.reason == "BackOff" and event.involved_object.name == "flaky"])
    assert events[0].type == "Warning" and events[0].count >= 1
    assert not ready(sim.core.read_namespaced_pod("flaky", NAMESPACE))


def test_without_nodes_pods_stay_pending_as_unschedulable(kube: Callable[..., Cluster]) -> None:
    cluster = kube(controllers=FAST)
    cluster.core.create_namespaced_pod(NAMESPACE, pod("lonely"))

    def unschedulable() -> bool:
        status = cluster.core.read_namespaced_pod("lonely", NAMESPACE).status or client.V1PodStatus()
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                   for c in status.conditions or [])

    wait_for("PodScheduled=False", unschedulable)


def test_deleting_a_deployment_takes_its_replicasets_and_pods_with_it(sim: Cluster) -> None:
    sim.apps.create_namespaced_deployment(NAMESPACE, deployment("web", replicas=2))
    wait_for("2 ready pods", lambda: ready_pods(sim, "app=web", 2))
    sim.apps.delete_namespaced_deployment("web", NAMESPACE)
    wait_for("no pods left", lambda: not pods_of(sim, "app=web")
             and not sim.apps.list_namespaced_replica_set(NAMESPACE, label_selector="app=web").items)


def test_a_rolling_update_keeps_within_max_surge_and_max_unavailable(sim: Cluster) -> None:
    """Defaults for 4 replicas: maxSurge 25% -> 1 extra pod, maxUnavailable 25% -> 1 pod; watched pod by pod."""
    sim.apps.create_namespaced_deployment(NAMESPACE, deployment("web", replicas=4))
    wait_for("4 ready pods", lambda: ready_pods(sim, "app=web", 4))
    since = sim.core.list_namespaced_pod(NAMESPACE, label_selector="app=web").metadata.resource_version
    sim.apps.patch_namespaced_deployment("web", NAMESPACE, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "registry.local/app:2"}]}}}})
    live: dict[str, client.V1Pod] = {item.metadata.name: item for item in pods_of(sim, "app=web")}
    most, fewest_ready = len(live), len(live)
    stream = watch.Watch().stream(sim.core.list_namespaced_pod, NAMESPACE, label_selector="app=web",
                                  resource_version=since, timeout_seconds=int(DEADLINE))
    for event in stream:
        item = event["object"]
        if event["type"] == "DELETED":
            live.pop(item.metadata.name, None)
        else:
            live[item.metadata.name] = item
        most = max(most, len(live))
        fewest_ready = min(fewest_ready, sum(ready(each) for each in live.values()))
        if len(live) == 4 and all(ready(each) and each.spec.containers[0].image.endswith(":2")
                                  for each in live.values()):
            break
    else:
        pytest.fail("the rollout did not finish within the watch")
    assert most <= 5
    assert fewest_ready >= 3


def statefulset(name: str, replicas: int, policy: str | None = None) -> dict:
    labels = {"app": name}
    spec = {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "main", "image": "registry.local/db:1"}]}}}
    if policy:
        spec["podManagementPolicy"] = policy
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}, "spec": spec}


def creation_order(cluster: Cluster, name: str, replicas: int, policy: str | None) -> list[tuple[str, int]]:
    """(pod name, how many pods were Ready) at each pod's ADDED event, from a watch that starts before the create."""
    since = cluster.core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    cluster.apps.create_namespaced_stateful_set(NAMESPACE, statefulset(name, replicas, policy))
    live: dict[str, client.V1Pod] = {}
    order = []
    for event in watch.Watch().stream(cluster.core.list_namespaced_pod, NAMESPACE, label_selector=f"app={name}",
                                      resource_version=since, timeout_seconds=int(DEADLINE)):
        item = event["object"]
        if event["type"] == "ADDED":
            order.append((item.metadata.name, sum(ready(each) for each in live.values())))
        live[item.metadata.name] = item
        if len(live) == replicas and all(ready(each) for each in live.values()):
            return order
    pytest.fail(f"the statefulset {name} did not become ready within the watch")


def test_a_statefulset_creates_each_ordinal_after_the_one_before_is_ready(sim: Cluster) -> None:
    assert creation_order(sim, "db", 3, None) == [("db-0", 0), ("db-1", 1), ("db-2", 2)]
    sim.apps.patch_namespaced_stateful_set_scale("db", NAMESPACE, {"spec": {"replicas": 1}})
    wait_for("db scaled down to db-0", lambda: [item.metadata.name for item in pods_of(sim, "app=db")] == ["db-0"])


def test_a_parallel_statefulset_creates_every_ordinal_at_once(sim: Cluster) -> None:
    assert creation_order(sim, "cache", 3, "Parallel") == [("cache-0", 0), ("cache-1", 0), ("cache-2", 0)]


def test_controllers_record_what_they_did_as_events(sim: Cluster) -> None:
    sim.apps.create_namespaced_deployment(NAMESPACE, deployment("web", replicas=2))
    wait_for("2 ready pods", lambda: ready_pods(sim, "app=web", 2))
    reasons = {(event.involved_object.kind, event.reason) for event in sim.core.list_namespaced_event(NAMESPACE).items}
    assert {("Deployment", "ScalingReplicaSet"), ("ReplicaSet", "SuccessfulCreate"), ("Pod", "Scheduled")} <= reasons


def test_a_job_whose_pods_keep_failing_stops_at_its_backoff_limit(sim: Cluster) -> None:
    template = pod("unused", {"app": "doomed"})
    template["spec"]["restartPolicy"] = "Never"
    batch = client.BatchV1Api(sim.admin)
    batch.create_namespaced_job(NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed"},
        "spec": {"backoffLimit": 2, "template": {"metadata": {"labels": {"app": "doomed"},
                                                              "annotations": {CRASH_LOOP: "true"}},
                                                 "spec": template["spec"]}}})

    def failed() -> client.V1Job | None:
        job = batch.read_namespaced_job_status("doomed", NAMESPACE)
        conditions = (job.status or client.V1JobStatus()).conditions or []
        return job if any(c.type == "Failed" and c.status == "True" for c in conditions) else None

    job = wait_for("the job failed", failed)
    assert job.status.failed == 3 and not job.status.succeeded
    assert next(c for c in job.status.conditions if c.type == "Failed").reason == "BackoffLimitExceeded"
    assert {item.status.phase for item in pods_of(sim, "job-name=doomed")} == {"Failed"}


def test_a_pod_can_carry_its_own_ready_delay_and_a_malformed_one_harms_no_other_pod(sim: Cluster) -> None:
    slow, broken = pod("slow", {"app": "mixed"}), pod("broken", {"app": "mixed"})
    slow["metadata"]["annotations"] = {READY_SECONDS: "3600"}
    broken["metadata"]["annotations"] = {READY_SECONDS: "soon"}
    for item in (slow, broken, pod("quick", {"app": "mixed"})):
        sim.core.create_namespaced_pod(NAMESPACE, item)
    wait_for("quick ready", lambda: ready(sim.core.read_namespaced_pod("quick", NAMESPACE)))
    found = sim.core.read_namespaced_pod("slow", NAMESPACE)
    assert found.status.phase == "Running" and not ready(found)
