"""kubesim's REST verbs through the official client: CRUD, resourceVersion and generation, subresources, patches."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.contract.conftest import NAMESPACE, Cluster, deployment, pod, rollout

ARGO = ("argoproj.io", "v1alpha1")


def status_of(error: ApiException) -> dict:
    body = json.loads(error.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == error.status
    return body


def test_pod_create_get_list_replace_delete(cluster: Cluster) -> None:
    core = cluster.core
    created = core.create_namespaced_pod(NAMESPACE, pod("web-0", {"app": "web"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.namespace == NAMESPACE and created.metadata.generation == 1
    got = core.read_namespaced_pod("web-0", NAMESPACE)
    assert got.metadata.resource_version == created.metadata.resource_version
    got.metadata.labels["tier"] = "front"
    replaced = core.replace_namespaced_pod("web-0", NAMESPACE, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.labels == {"app": "web", "tier": "front"}
    assert replaced.metadata.uid == created.metadata.uid
    assert [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items] == ["web-0"]
    core.delete_namespaced_pod("web-0", NAMESPACE)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("web-0", NAMESPACE)
    body = status_of(missing.value)
    assert (missing.value.status, body["reason"]) == (404, "NotFound")
    assert body["details"] == {"name": "web-0", "group": "", "kind": "pods"}
    assert body["message"] == 'pods "web-0" not found'


def test_resource_versions_grow_across_kinds_and_generation_follows_spec(cluster: Cluster) -> None:
    first = cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    made = cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("api"))
    assert int(made.metadata.resource_version) > int(first.metadata.resource_version)
    relabelled = cluster.apps.patch_namespaced_deployment("api", NAMESPACE, {"metadata": {"labels": {"x": "1"}}})
    assert relabelled.metadata.generation == 1  # metadata is not spec
    status = cluster.apps.patch_namespaced_deployment_status("api", NAMESPACE, {"status": {"replicas": 2}})
    assert status.metadata.generation == 1 and status.status.replicas == 2
    rescaled = cluster.apps.patch_namespaced_deployment("api", NAMESPACE, {"spec": {"replicas": 4}})
    assert rescaled.metadata.generation == 2
    assert int(rescaled.metadata.resource_version) > int(status.metadata.resource_version)


def test_status_is_written_only_through_the_status_subresource(cluster: Cluster) -> None:
    created = cluster.apps.create_namespaced_deployment(
        NAMESPACE, {**deployment("api"), "status": {"replicas": 9}})
    assert created.status is None or created.status.replicas is None  # ignored on create
    cluster.apps.patch_namespaced_deployment_status("api", NAMESPACE, {"status": {"readyReplicas": 1}})
    main = cluster.apps.patch_namespaced_deployment("api", NAMESPACE, {"status": {"readyReplicas": 7}})
    assert main.status.ready_replicas == 1
    sub = cluster.apps.patch_namespaced_deployment_status("api", NAMESPACE, {"spec": {"replicas": 7}})
    assert sub.spec.replicas == 2


def test_stale_update_is_a_409_conflict_and_changes_nothing(cluster: Cluster) -> None:
    cm = cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    cluster.core.patch_namespaced_config_map("c", NAMESPACE, {"data": {"v": "2"}})
    cm.data = {"v": "stale"}
    with pytest.raises(ApiException) as stale:
        cluster.core.replace_namespaced_config_map("c", NAMESPACE, cm)
    body = status_of(stale.value)
    assert (stale.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    assert cluster.core.read_namespaced_config_map("c", NAMESPACE).data == {"v": "2"}


def test_create_twice_is_409_already_exists(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, pod("dup"))
    with pytest.raises(ApiException) as again:
        cluster.core.create_namespaced_pod(NAMESPACE, pod("dup"))
    body = status_of(again.value)
    assert (again.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["details"]["name"] == "dup"


def test_create_in_a_missing_namespace_is_404(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as missing:
        cluster.core.create_namespaced_pod("nowhere", pod("p"))
    assert status_of(missing.value)["message"] == 'namespaces "nowhere" not found'


def test_merge_json_and_strategic_patches(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, pod("p", {"a": "1", "b": "2"}))
    merged = cluster.core.patch_namespaced_pod(
        "p", NAMESPACE, {"metadata": {"labels": {"a": None, "c": "3"}}},
        _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"b": "2", "c": "3"}
    strategic = cluster.core.patch_namespaced_pod("p", NAMESPACE, {"metadata": {"labels": {"d": "4"}}})
    assert strategic.metadata.labels == {"b": "2", "c": "3", "d": "4"}
    patched = cluster.core.patch_namespaced_pod(
        "p", NAMESPACE, [{"op": "replace", "path": "/metadata/labels/b", "value": "20"},
                         {"op": "add", "path": "/spec/nodeName", "value": "gpu-node-1"}])
    assert patched.metadata.labels["b"] == "20" and patched.spec.node_name == "gpu-node-1"


def test_failed_json_patch_test_is_422_and_changes_nothing(cluster: Cluster) -> None:
    before = cluster.core.create_namespaced_pod(NAMESPACE, pod("p", {"a": "1"}))
    with pytest.raises(ApiException) as refused:
        cluster.core.patch_namespaced_pod("p", NAMESPACE, [
            {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
            {"op": "test", "path": "/metadata/labels/a", "value": "1"}])
    assert (refused.value.status, status_of(refused.value)["reason"]) == (422, "Invalid")
    after = cluster.core.read_namespaced_pod("p", NAMESPACE)
    assert after.metadata.resource_version == before.metadata.resource_version


def test_custom_resources_merge_patch_but_refuse_strategic_merge_with_415(cluster: Cluster) -> None:
    cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", rollout("ai-api"))
    paused = cluster.custom.patch_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "ai-api",
                                                           {"spec": {"paused": True}})
    assert paused["spec"]["paused"] is True and paused["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as refused:
        cluster.custom.patch_namespaced_custom_object(
            *ARGO, NAMESPACE, "rollouts", "ai-api", {"spec": {"paused": False}},
            _content_type="application/strategic-merge-patch+json")
    assert (refused.value.status, status_of(refused.value)["reason"]) == (415, "UnsupportedMediaType")
    assert cluster.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "ai-api")["spec"]["paused"]


PAUSE = {"reason": "CanaryPauseStep", "startTime": "2026-11-30T00:00:00Z"}  # the CRD requires both


def test_rollout_status_subresource_takes_only_status(cluster: Cluster) -> None:
    cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", rollout("ai-api"))
    written = cluster.custom.patch_namespaced_custom_object_status(
        *ARGO, NAMESPACE, "rollouts", "ai-api",
        {"spec": {"replicas": 99}, "status": {"pauseConditions": [PAUSE]}})
    assert written["spec"]["replicas"] == 3
    assert written["status"]["pauseConditions"] == [PAUSE]
    assert written["metadata"]["generation"] == 1


def test_scale_subresource_for_deployments_and_rollouts(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("api", replicas=2))
    scale = cluster.apps.read_namespaced_deployment_scale("api", NAMESPACE)
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=api")
    scaled = cluster.apps.patch_namespaced_deployment_scale("api", NAMESPACE, {"spec": {"replicas": 5}})
    assert scaled.kind == "Scale" and scaled.spec.replicas == 5
    assert cluster.apps.read_namespaced_deployment("api", NAMESPACE).spec.replicas == 5
    cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", rollout("ai-api"))
    cluster.custom.patch_namespaced_custom_object_status(
        *ARGO, NAMESPACE, "rollouts", "ai-api", {"status": {"HPAReplicas": 3, "selector": "app=ai-api"}})
    ro_scale = cluster.custom.patch_namespaced_custom_object_scale(
        *ARGO, NAMESPACE, "rollouts", "ai-api", {"spec": {"replicas": 6}})
    assert ro_scale["spec"]["replicas"] == 6 and ro_scale["status"] == {"replicas": 3, "selector": "app=ai-api"}
    with pytest.raises(ApiException) as negative:
        cluster.apps.patch_namespaced_deployment_scale("api", NAMESPACE, {"spec": {"replicas": -1}})
    body = status_of(negative.value)
    assert (negative.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.replicas"


def test_stale_scale_update_is_409(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("api"))
    scale = cluster.apps.read_namespaced_deployment_scale("api", NAMESPACE)
    cluster.apps.patch_namespaced_deployment("api", NAMESPACE, {"spec": {"paused": True}})
    scale.spec.replicas = 9
    with pytest.raises(ApiException) as stale:
        cluster.apps.replace_namespaced_deployment_scale("api", NAMESPACE, scale)
    assert status_of(stale.value)["reason"] == "Conflict"
    assert cluster.apps.read_namespaced_deployment("api", NAMESPACE).spec.replicas == 2


def test_hpa_v2_and_keda_kinds_round_trip(cluster: Cluster) -> None:
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "ai-api"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ai-api"},
                    "minReplicas": 2, "maxReplicas": 20}}
    client.AutoscalingV2Api(cluster.admin).create_namespaced_horizontal_pod_autoscaler(NAMESPACE, hpa)
    listed = client.AutoscalingV2Api(cluster.admin).list_namespaced_horizontal_pod_autoscaler(NAMESPACE)
    assert [(h.metadata.name, h.spec.max_replicas) for h in listed.items] == [("ai-api", 20)]
    so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "worker"},
          "spec": {"scaleTargetRef": {"name": "worker"}, "triggers": [{"type": "redis", "metadata": {}}]}}
    cluster.custom.create_namespaced_custom_object("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", so)
    got = cluster.custom.list_namespaced_custom_object("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects")
    assert [item["metadata"]["name"] for item in got["items"]] == ["worker"]
    assert got["kind"] == "ScaledObjectList"


def test_strategic_merge_merges_containers_by_name_where_merge_patch_replaces_the_list(cluster: Cluster) -> None:
    made = deployment("api")
    made["spec"]["template"]["spec"]["containers"] = [
        {"name": "main", "image": "app:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
        {"name": "sidecar", "image": "proxy:1"}]
    cluster.apps.create_namespaced_deployment(NAMESPACE, made)
    patched = cluster.apps.patch_namespaced_deployment("api", NAMESPACE, {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
                       {"name": "sidecar", "$patch": "delete"}]}}}})  # the client sends strategic merge here
    (main,) = patched.spec.template.spec.containers
    assert (main.image, [e.name for e in main.env], main.ports[0].container_port) == ("app:2", ["A", "B"], 80)
    assert patched.metadata.generation == 2
    replaced = cluster.apps.patch_namespaced_deployment(
        "api", NAMESPACE, {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}}},
        _content_type="application/merge-patch+json")
    assert [(c.name, c.image, c.env) for c in replaced.spec.template.spec.containers] == [("only", "x:1", None)]


def test_delete_preconditions_and_delete_collection(cluster: Cluster) -> None:
    made = cluster.core.create_namespaced_pod(NAMESPACE, pod("a", {"app": "api"}))
    cluster.core.patch_namespaced_pod("a", NAMESPACE, {"metadata": {"labels": {"v": "2"}}})
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(
        resource_version=made.metadata.resource_version))
    with pytest.raises(ApiException) as refused:
        cluster.core.delete_namespaced_pod("a", NAMESPACE, body=stale)
    assert (refused.value.status, status_of(refused.value)["reason"]) == (409, "Conflict")
    cluster.core.create_namespaced_pod(NAMESPACE, pod("b", {"app": "api"}))
    cluster.core.create_namespaced_pod(NAMESPACE, pod("c", {"app": "batch"}))
    cluster.core.delete_collection_namespaced_pod(NAMESPACE, label_selector="app=api")
    assert [p.metadata.name for p in cluster.core.list_namespaced_pod(NAMESPACE).items] == ["c"]


def test_a_name_that_is_not_an_rfc_1123_subdomain_is_422(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(NAMESPACE, pod("Bad_Name"))
    body = status_of(refused.value)
    assert (refused.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert cluster.core.list_namespaced_pod(NAMESPACE).items == []
