"""kubesim's list queries (label and field selectors, limit/continue), auth roles, discovery and its SIMULATED mark,
through the official client."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from services.kubesim.server import SIMULATED_CONFIGMAP, SIMULATED_HEADER
from services.kubesim.store import Store
from tests.contract.conftest import NAMESPACE, Cluster, pod

LABELS = {
    "a": {"app": "api", "tier": "front", "gpu": "a100"},
    "b": {"app": "api", "tier": "back"},
    "c": {"app": "vllm", "gpu": "h100"},
    "d": {"app": "batch"},
}


@pytest.fixture
def pods(cluster: Cluster) -> Cluster:
    for name, labels in LABELS.items():
        cluster.core.create_namespaced_pod(NAMESPACE, pod(name, labels))
    cluster.core.patch_namespaced_pod_status("c", NAMESPACE, {"status": {"phase": "Running"}})
    return cluster


@pytest.mark.parametrize(("selector", "names"), [
    ("app=api", ["a", "b"]),
    ("app==api", ["a", "b"]),
    ("app!=api", ["c", "d"]),
    ("app in (vllm, batch)", ["c", "d"]),
    ("app notin (vllm,batch)", ["a", "b"]),
    ("gpu", ["a", "c"]),
    ("!gpu", ["b", "d"]),
    ("app=api,gpu", ["a"]),
    ("tier in (front,back),!gpu", ["b"]),
])
def test_label_selectors(pods: Cluster, selector: str, names: list[str]) -> None:
    listed = pods.core.list_namespaced_pod(NAMESPACE, label_selector=selector)
    assert [p.metadata.name for p in listed.items] == names


def test_a_malformed_label_selector_is_400(pods: Cluster) -> None:
    with pytest.raises(ApiException) as bad:
        pods.core.list_namespaced_pod(NAMESPACE, label_selector="app in (")
    assert (bad.value.status, json.loads(bad.value.body)["reason"]) == (400, "BadRequest")


@pytest.mark.kubesim_only(reason='its pod phase is written by hand, which a real kubelet overwrites')
def test_field_selectors(pods: Cluster) -> None:
    assert [p.metadata.name for p in pods.core.list_namespaced_pod(
        NAMESPACE, field_selector="status.phase=Running").items] == ["c"]
    assert [p.metadata.name for p in pods.core.list_pod_for_all_namespaces(
        field_selector=f"metadata.namespace={NAMESPACE},metadata.name!=a").items] == ["b", "c", "d"]
    with pytest.raises(ApiException) as unsupported:
        pods.core.list_namespaced_pod(NAMESPACE, field_selector="spec.schedulerName=x")
    assert unsupported.value.status == 400
    assert "field label not supported" in json.loads(unsupported.value.body)["message"]


def test_limit_and_continue_walk_every_item_once(pods: Cluster) -> None:
    seen, token, pages = [], None, 0
    while True:
        page = pods.core.list_namespaced_pod(NAMESPACE, limit=3, _continue=token)
        seen += [p.metadata.name for p in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == len(LABELS) - len(seen)
    assert (seen, pages) == (["a", "b", "c", "d"], 2)


def test_no_token_is_401_and_the_viewer_reads_but_cannot_write(pods: Cluster) -> None:
    anonymous = config.new_client_from_config(config_file=str(pods.kubeconfig))
    anonymous.configuration.api_key = {}
    with pytest.raises(ApiException) as unauthorized:
        client.CoreV1Api(anonymous).list_namespaced_pod(NAMESPACE)
    assert (unauthorized.value.status, json.loads(unauthorized.value.body)["reason"]) == (401, "Unauthorized")
    viewer = client.CoreV1Api(pods.viewer)
    assert len(viewer.list_namespaced_pod(NAMESPACE).items) == len(LABELS)
    with pytest.raises(ApiException) as forbidden:
        viewer.delete_namespaced_pod("a", NAMESPACE)
    assert (forbidden.value.status, json.loads(forbidden.value.body)["reason"]) == (403, "Forbidden")
    assert pods.core.read_namespaced_pod("a", NAMESPACE).metadata.name == "a"


@pytest.mark.parametrize(("verb", "viewer_allowed"), [("list", True), ("patch", False)])
def test_self_subject_access_review_answers_by_role(cluster: Cluster, verb: str, viewer_allowed: bool) -> None:
    review = {"spec": {"resourceAttributes": {"group": "argoproj.io", "resource": "rollouts", "verb": verb,
                                              "namespace": NAMESPACE}}}
    for api_client, allowed in ((cluster.admin, True), (cluster.viewer, viewer_allowed)):
        answer = client.AuthorizationV1Api(api_client).create_self_subject_access_review(review)
        assert answer.status.allowed is allowed


def test_discovery_lists_every_served_group_and_the_dynamic_client_uses_it(cluster: Cluster) -> None:
    groups = {g.name: g.preferred_version.version for g in client.ApisApi(cluster.admin).get_api_versions().groups}
    served = {"apps": "v1", "batch": "v1", "autoscaling": "v2", "argoproj.io": "v1alpha1", "keda.sh": "v1alpha1",
              "authorization.k8s.io": "v1"}
    stored = {"policy": "v1", "networking.k8s.io": "v1", "rbac.authorization.k8s.io": "v1",
              "monitoring.coreos.com": "v1"}  # kinds kubesim only stores, for manifests/
    assert served.items() <= groups.items()
    assert cluster.real or groups == served | stored  # kubesim serves exactly these; a real cluster among others
    assert client.CoreApi(cluster.admin).get_api_versions().versions == ["v1"]
    assert client.VersionApi(cluster.admin).get_code().major == "1"
    resources = client.CoreV1Api(cluster.admin).get_api_resources()
    assert {"pods", "pods/status", "nodes", "events", "services", "configmaps", "namespaces"} <= {
        r.name for r in resources.resources}
    rollouts = dynamic.DynamicClient(cluster.admin).resources.get(api_version="argoproj.io/v1alpha1", kind="Rollout")
    assert rollouts.namespaced and rollouts.name == "rollouts"


@pytest.mark.kubesim_only(reason="the SIMULATED marks are kubesim's own")
def test_kubesim_says_it_is_simulated(cluster: Cluster) -> None:
    _, status, headers = cluster.core.list_namespaced_pod_with_http_info(NAMESPACE)
    assert status == 200 and headers[SIMULATED_HEADER] == "true"
    namespace, name = SIMULATED_CONFIGMAP
    assert cluster.core.read_namespaced_config_map(name, namespace).data == {"simulated": "true"}


@pytest.mark.kubesim_only(reason="it shrinks kubesim's history to expire the token on demand")
def test_a_continue_token_older_than_the_history_is_410_expired(kube: Callable[..., Cluster]) -> None:
    cluster = kube(store=Store(history=5))
    for name in "abcd":
        cluster.core.create_namespaced_pod(NAMESPACE, pod(name))
    token = cluster.core.list_namespaced_pod(NAMESPACE, limit=2).metadata._continue
    for name in "efghij":
        cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name}})
    with pytest.raises(ApiException) as expired:
        cluster.core.list_namespaced_pod(NAMESPACE, limit=2, _continue=token)
    assert (expired.value.status, json.loads(expired.value.body)["reason"]) == (410, "Expired")
    with pytest.raises(ApiException) as garbage:
        cluster.core.list_namespaced_pod(NAMESPACE, limit=2, _continue="not-a-token")
    assert garbage.value.status == 400
