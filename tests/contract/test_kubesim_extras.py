"""The rest of kubesim's surface: pod logs, the validator hook on every write, and Go ParseBool for ?watch."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from services.kubesim.discovery import ResourceKind
from services.kubesim.errors import invalid
from services.kubesim.store import Store
from tests.contract.conftest import ADMIN_TOKEN, NAMESPACE, Cluster, deployment, pod


@pytest.mark.kubesim_only(reason="it writes the pod's log through kubesim's KubeApi.write_log")
def test_pod_log_with_tail_lines_and_container_checks(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, pod("job-1"))
    api = cluster.sim.api
    assert api is not None
    cluster.sim.call(lambda: [api.write_log(NAMESPACE, "job-1", f"step {i}") for i in range(3)])
    assert cluster.core.read_namespaced_pod_log("job-1", NAMESPACE) == "step 0\nstep 1\nstep 2\n"
    assert cluster.core.read_namespaced_pod_log("job-1", NAMESPACE, tail_lines=1) == "step 2\n"
    with pytest.raises(ApiException) as wrong:
        cluster.core.read_namespaced_pod_log("job-1", NAMESPACE, container="sidecar")
    assert wrong.value.status == 400 and "not valid for pod" in json.loads(wrong.value.body)["message"]
    with pytest.raises(ApiException) as missing:
        cluster.core.read_namespaced_pod_log("job-2", NAMESPACE)
    assert missing.value.status == 404


def no_replicas_over_ten(kind: ResourceKind, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    replicas = (obj.get("spec") or {}).get("replicas", 0)
    if kind.kind == "Deployment" and replicas > 10:
        raise invalid(kind.group, kind.plural, kind.kind, obj["metadata"]["name"],
                      [{"field": "spec.replicas", "reason": "FieldValueInvalid", "message": "at most 10"}])


@pytest.mark.kubesim_only(reason="it gives kubesim's store an extra validator")
def test_a_validator_refuses_writes_with_422_and_nothing_changes(kube: Callable[..., Cluster]) -> None:
    cluster = kube(store=Store(validators=[no_replicas_over_ten]))
    with pytest.raises(ApiException) as refused:
        cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("big", replicas=11))
    body = json.loads(refused.value.body)
    assert (refused.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"] == [{"field": "spec.replicas", "reason": "FieldValueInvalid",
                                          "message": "at most 10"}]
    made = cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("api", replicas=2))
    for write in (lambda: cluster.apps.patch_namespaced_deployment("api", NAMESPACE, {"spec": {"replicas": 12}}),
                  lambda: cluster.apps.patch_namespaced_deployment_scale("api", NAMESPACE, {"spec": {"replicas": 12}})):
        with pytest.raises(ApiException) as again:
            write()
        assert again.value.status == 422
    after = cluster.apps.read_namespaced_deployment("api", NAMESPACE)
    assert (after.spec.replicas, after.metadata.resource_version) == (2, made.metadata.resource_version)
    assert [d.metadata.name for d in cluster.apps.list_namespaced_deployment(NAMESPACE).items] == ["api"]


@pytest.mark.parametrize("word", ["1", "t", "True", "TRUE"])
@pytest.mark.kubesim_only(reason="it reaches kubesim's URL with its CA and token directly, not through a kubeconfig")
def test_watch_accepts_every_spelling_go_parse_bool_does(cluster: Cluster, word: str) -> None:
    made = cluster.core.create_namespaced_pod(NAMESPACE, pod("p0"))
    cluster.core.delete_namespaced_pod("p0", NAMESPACE)
    url = (f"{cluster.sim.url}/api/v1/namespaces/{NAMESPACE}/pods?watch={word}&timeoutSeconds=1"
           f"&resourceVersion={made.metadata.resource_version}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    context = ssl.create_default_context(cadata=(cluster.sim.ca_pem or b"").decode())
    with urllib.request.urlopen(request, context=context, timeout=120) as response:
        lines = [json.loads(line) for line in response.read().splitlines()]
    assert [(line["type"], line["object"]["metadata"]["name"]) for line in lines] == [("DELETED", "p0")]
