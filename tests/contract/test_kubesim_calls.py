"""The remaining calls the console, the CLI and later issues make, through the official client: a Job run to
completion and its pod's log, /scale of each scalable kind (read, replace, patch), access reviews that predict what
each identity may do, and complete Status bodies for the failures custom resources and the viewer meet."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.contract.conftest import NAMESPACE, Cluster, deployment, rollout
from tests.waiting import wait_for

ARGO = ("argoproj.io", "v1alpha1")
DEADLINE_S = 180.0  # bounds a broken run only; on a real cluster it covers pulling the Job's image
JOB_IMAGE = "busybox:1.36"




def job(name: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": JOB_IMAGE, "command": ["sh", "-c", "echo warmed up"]}]}}}}


def completed_pod(cluster: Cluster, name: str) -> client.V1Pod:
    """Creates the Job, waits for its Complete condition and returns its (succeeded) pod."""
    batch = client.BatchV1Api(cluster.admin)
    batch.create_namespaced_job(NAMESPACE, job(name))

    def complete() -> bool:
        status = batch.read_namespaced_job_status(name, NAMESPACE).status
        return any(c.type == "Complete" and c.status == "True" for c in (status and status.conditions) or [])

    wait_for(f"job {name} to complete", complete, DEADLINE_S)
    (found,) = cluster.core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items
    assert found.status.phase == "Succeeded"
    return found


def test_a_job_runs_to_completion_and_its_pods_log_reads_back(working_cluster: Cluster) -> None:
    found = completed_pod(working_cluster, "warmup")
    log = working_cluster.core.read_namespaced_pod_log(found.metadata.name, NAMESPACE, container="main")
    assert isinstance(log, str) and log.endswith("\n") and log.strip()
    assert working_cluster.core.read_namespaced_pod_log(found.metadata.name, NAMESPACE, tail_lines=1).count(
        "\n") == 1


@pytest.mark.kubesim_only(reason="the line is what kubesim's kubelet writes; a real container prints its own output")
def test_kubesims_kubelet_logs_each_containers_start(working_cluster: Cluster) -> None:
    found = completed_pod(working_cluster, "warmup")
    assert working_cluster.core.read_namespaced_pod_log(found.metadata.name, NAMESPACE) == (
        f"kubesim: container main started ({JOB_IMAGE})\n")


def statefulset(name: str, replicas: int = 2) -> dict[str, Any]:
    made = deployment(name, replicas)
    return {**made, "kind": "StatefulSet", "spec": {**made["spec"], "serviceName": name}}


SCALABLE: dict[str, tuple[Callable[[str], dict[str, Any]], str, str]] = {
    # kind -> (manifest, the group's API, the plural used by the custom objects API)
    "Deployment": (deployment, "apps", "deployments"),
    "StatefulSet": (statefulset, "apps", "statefulsets"),
    "Rollout": (rollout, "argo", "rollouts"),
}


class ScaleCalls:
    """read / replace / patch of one object's /scale, and its spec.replicas, for an apps kind or a Rollout."""

    def __init__(self, cluster: Cluster, kind: str, name: str) -> None:
        self.cluster, self.kind, self.name = cluster, kind, name
        manifest, api, self.plural = SCALABLE[kind]
        self.snake = {"Deployment": "deployment", "StatefulSet": "stateful_set"}.get(kind, "")
        if api == "apps":
            getattr(cluster.apps, f"create_namespaced_{self.snake}")(NAMESPACE, manifest(name))
        else:
            cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, self.plural, manifest(name))

    def read(self) -> dict[str, Any]:
        if self.snake:
            scale = getattr(self.cluster.apps, f"read_namespaced_{self.snake}_scale")(self.name, NAMESPACE)
            return self.cluster.admin.sanitize_for_serialization(scale)
        return self.cluster.custom.get_namespaced_custom_object_scale(*ARGO, NAMESPACE, self.plural, self.name)

    def replace(self, scale: dict[str, Any]) -> dict[str, Any]:
        if self.snake:
            done = getattr(self.cluster.apps, f"replace_namespaced_{self.snake}_scale")(self.name, NAMESPACE, scale)
            return self.cluster.admin.sanitize_for_serialization(done)
        return self.cluster.custom.replace_namespaced_custom_object_scale(*ARGO, NAMESPACE, self.plural, self.name,
                                                                          scale)

    def patch(self, replicas: int) -> dict[str, Any]:
        body = {"spec": {"replicas": replicas}}
        if self.snake:
            done = getattr(self.cluster.apps, f"patch_namespaced_{self.snake}_scale")(self.name, NAMESPACE, body)
            return self.cluster.admin.sanitize_for_serialization(done)
        return self.cluster.custom.patch_namespaced_custom_object_scale(*ARGO, NAMESPACE, self.plural, self.name,
                                                                        body)

    def spec_replicas(self) -> int:
        if self.snake:
            return getattr(self.cluster.apps, f"read_namespaced_{self.snake}")(self.name, NAMESPACE).spec.replicas
        return self.cluster.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, self.plural, self.name)["spec"][
            "replicas"]


@pytest.mark.parametrize("kind", list(SCALABLE))
def test_scale_reads_replaces_and_patches_each_scalable_kind(cluster: Cluster, kind: str) -> None:
    calls = ScaleCalls(cluster, kind, "web")
    scale = calls.read()
    assert (scale["kind"], scale["apiVersion"], scale["metadata"]["name"]) == ("Scale", "autoscaling/v1", "web")
    assert scale["spec"]["replicas"] == calls.spec_replicas()
    if kind != "Rollout":  # a Rollout's selector is the one Argo's controller writes to its status
        assert scale["status"]["selector"] == "app=web"
    replaced = calls.replace({**scale, "spec": {"replicas": 4}})
    assert replaced["spec"]["replicas"] == 4 and calls.spec_replicas() == 4
    assert calls.patch(1)["spec"]["replicas"] == 1 and calls.spec_replicas() == 1
    with pytest.raises(ApiException) as stale:  # the first read's resourceVersion is two writes old
        calls.replace({**scale, "spec": {"replicas": 7}})
    assert (stale.value.status, json.loads(stale.value.body)["reason"]) == (409, "Conflict")
    assert calls.spec_replicas() == 1


ATTEMPTS = [  # (verb, group, resource) an identity asks about, then tries
    ("list", "apps", "deployments"),
    ("create", "apps", "deployments"),
    ("delete", "", "configmaps"),
    ("get", "argoproj.io", "rollouts"),
    ("patch", "argoproj.io", "rollouts"),
]


def attempt(api_client: client.ApiClient, verb: str, resource: str) -> bool:
    """Makes the call; True when it was allowed (any answer but 403)."""
    apps, core, custom = (client.AppsV1Api(api_client), client.CoreV1Api(api_client),
                          client.CustomObjectsApi(api_client))
    calls: dict[tuple[str, str], Callable[[], object]] = {
        ("list", "deployments"): lambda: apps.list_namespaced_deployment(NAMESPACE),
        ("create", "deployments"): lambda: apps.create_namespaced_deployment(NAMESPACE, deployment("tried")),
        ("delete", "configmaps"): lambda: core.delete_namespaced_config_map("kept", NAMESPACE),
        ("get", "rollouts"): lambda: custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "ai-api"),
        ("patch", "rollouts"): lambda: custom.patch_namespaced_custom_object(
            *ARGO, NAMESPACE, "rollouts", "ai-api", {"metadata": {"labels": {"tried": "yes"}}}),
    }
    try:
        calls[(verb, resource)]()
    except ApiException as exc:
        if exc.status == 403:
            return False
        raise
    return True


def test_an_access_review_predicts_what_each_identity_may_do(cluster: Cluster) -> None:
    cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", rollout("ai-api"))
    cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "kept"}})
    allowed = {}
    # The viewer first: what it may not do must change nothing for the admin's turn.
    for who, api_client in (("viewer", cluster.viewer), ("admin", cluster.admin)):
        for verb, group, resource in ATTEMPTS:
            review = {"spec": {"resourceAttributes": {"namespace": NAMESPACE, "verb": verb, "group": group,
                                                      "resource": resource}}}
            answer = client.AuthorizationV1Api(api_client).create_self_subject_access_review(review)
            assert answer.kind == "SelfSubjectAccessReview" and answer.spec.resource_attributes.verb == verb
            allowed[(who, verb, resource)] = attempt(api_client, verb, resource)
            assert answer.status.allowed is allowed[(who, verb, resource)], f"{who} {verb} {resource}"
    assert [allowed[("viewer", verb, resource)] for verb, _, resource in ATTEMPTS] == [True, False, False, True,
                                                                                      False]
    assert all(allowed[("admin", verb, resource)] for verb, _, resource in ATTEMPTS)


def failure(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as refused:
        call()
    return refused.value.status, json.loads(refused.value.body)


def assert_status(code: int, body: dict[str, Any], reason: str) -> None:
    """A complete Status body: what a client shows to a person and branches on."""
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert (code, body["code"], body["reason"]) == (body["code"], code, reason)
    assert isinstance(body["message"], str) and body["message"]


def test_the_viewers_write_is_a_403_status_naming_the_resource(cluster: Cluster) -> None:
    code, body = failure(lambda: client.AppsV1Api(cluster.viewer).create_namespaced_deployment(
        NAMESPACE, deployment("web")))
    assert_status(code, body, "Forbidden")
    assert code == 403 and 'cannot create resource "deployments"' in body["message"]
    assert (body["details"]["group"], body["details"]["kind"]) == ("apps", "deployments")
    assert not cluster.apps.list_namespaced_deployment(NAMESPACE).items


def test_custom_resource_failures_are_complete_status_bodies(cluster: Cluster) -> None:
    custom = cluster.custom
    code, body = failure(lambda: custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "absent"))
    assert_status(code, body, "NotFound")
    assert body["message"] == 'rollouts.argoproj.io "absent" not found'
    assert body["details"] == {"name": "absent", "group": "argoproj.io", "kind": "rollouts"}
    custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", rollout("ai-api"))
    code, body = failure(lambda: custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts",
                                                                        rollout("ai-api")))
    assert_status(code, body, "AlreadyExists")
    assert body["details"] == {"name": "ai-api", "group": "argoproj.io", "kind": "rollouts"}
    bad = rollout("bad")
    bad["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": "ten"}]
    code, body = failure(lambda: custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", bad))
    assert_status(code, body, "Invalid")
    assert (body["details"]["name"], body["details"]["group"], body["details"]["kind"]) == (
        "bad", "argoproj.io", "Rollout")
    assert [cause["field"] for cause in body["details"]["causes"]] == ["spec.strategy.canary.steps[0].setWeight"]
    code, body = failure(lambda: custom.patch_namespaced_custom_object(
        *ARGO, NAMESPACE, "rollouts", "ai-api", {"spec": {"paused": True}},
        _content_type="application/strategic-merge-patch+json"))
    assert_status(code, body, "UnsupportedMediaType")
    assert code == 415
