"""kubesim refuses writes its schemas forbid (422 Invalid with the causes, nothing changed) and accepts the seed's
kinds, all through the official client; its packaged CRDs are the shared ones."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from services.kubesim.validation import CRD_FILES, crd_text
from tests.contract.conftest import NAMESPACE, Cluster, deployment, rollout

ARGO = ("argoproj.io", "v1alpha1")
KEDA = ("keda.sh", "v1alpha1")
SHARED_CRDS = Path(__file__).resolve().parents[2].parent / "shared" / "crds"


def _refusal(exc: pytest.ExceptionInfo[ApiException]) -> tuple[dict[str, Any], dict[str, str]]:
    """The Status body and its causes by field."""
    assert exc.value.status == 422
    status = json.loads(exc.value.body)
    assert status["kind"] == "Status" and status["reason"] == "Invalid" and status["code"] == 422
    return status, {cause["field"]: cause["message"] for cause in status["details"]["causes"]}


def _assert_absent(read: Any) -> None:
    with pytest.raises(ApiException) as exc:
        read()
    assert exc.value.status == 404


# --- packaging ---------------------------------------------------------------------------------------------------

def test_packaged_crds_define_the_simulated_kinds() -> None:
    for (group, plural), filename in CRD_FILES.items():
        crd = yaml.safe_load(crd_text(filename))
        assert crd["kind"] == "CustomResourceDefinition"
        assert (crd["spec"]["group"], crd["spec"]["names"]["plural"]) == (group, plural)
        assert any(version["schema"]["openAPIV3Schema"] for version in crd["spec"]["versions"])


def test_packaged_crds_equal_the_shared_ones() -> None:
    if not SHARED_CRDS.is_dir():
        warnings.warn(f"{SHARED_CRDS} does not exist here: only the packaged CRDs' presence was checked", stacklevel=1)
        assert all(crd_text(filename) for filename in CRD_FILES.values())
        return
    for filename in CRD_FILES.values():
        assert crd_text(filename) == (SHARED_CRDS / filename).read_text(encoding="utf-8"), f"{filename} drifted"
    shared = {path.name for path in SHARED_CRDS.glob("*.yaml")}
    assert shared == set(CRD_FILES.values()), "a CRD in ../shared/crds is not packaged (or the other way round)"


# --- refusals ----------------------------------------------------------------------------------------------------

def test_rollout_step_with_an_unknown_key_is_refused(cluster: Cluster) -> None:
    body = rollout("bad-step")
    body["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 10}, {"setWieght": 20}]
    with pytest.raises(ApiException) as exc:
        cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", body)
    status, causes = _refusal(exc)
    assert "spec.strategy.canary.steps[1].setWieght" in causes
    assert status["details"]["name"] == "bad-step" and status["details"]["group"] == "argoproj.io"
    _assert_absent(lambda: cluster.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "bad-step"))


def test_rollout_set_weight_as_a_string_is_refused(cluster: Cluster) -> None:
    body = rollout("bad-weight")
    body["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": "25%"}]
    with pytest.raises(ApiException) as exc:
        cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", body)
    _, causes = _refusal(exc)
    assert "must be of type integer" in causes["spec.strategy.canary.steps[0].setWeight"]
    _assert_absent(lambda: cluster.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "bad-weight"))


def test_deployment_with_an_unknown_field_is_refused(cluster: Cluster) -> None:
    body = deployment("bad-field")
    body["spec"]["replica"] = 3
    deployments = DynamicClient(cluster.admin).resources.get(api_version="apps/v1", kind="Deployment")
    with pytest.raises(ApiException) as exc:  # the dynamic client sends the body as given (the typed one checks it)
        deployments.create(body=body, namespace=NAMESPACE)
    status, causes = _refusal(exc)
    assert "field not declared in schema" in causes["spec.replica"]
    assert "spec.replica" in status["message"]
    _assert_absent(lambda: cluster.apps.read_namespaced_deployment("bad-field", NAMESPACE))


def test_an_invalid_update_changes_nothing(cluster: Cluster) -> None:
    created = cluster.apps.create_namespaced_deployment(NAMESPACE, deployment("web"))
    with pytest.raises(ApiException) as exc:
        cluster.apps.patch_namespaced_deployment("web", NAMESPACE, {"spec": {"replicas": "many"}})
    _, causes = _refusal(exc)
    assert "must be of type integer" in causes["spec.replicas"]
    after = cluster.apps.read_namespaced_deployment("web", NAMESPACE)
    assert after.spec.replicas == 2
    assert after.metadata.resource_version == created.metadata.resource_version


def test_invalid_status_write_to_a_rollout_is_refused(cluster: Cluster) -> None:
    cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", rollout("paused"))
    with pytest.raises(ApiException) as exc:
        cluster.custom.patch_namespaced_custom_object_status(
            *ARGO, NAMESPACE, "rollouts", "paused", {"status": {"pauseConditions": [{"reason": "CanaryPauseStep"}]}})
    _, causes = _refusal(exc)
    assert causes["status.pauseConditions[0].startTime"] == "Required value"


# --- acceptance of the seed's kinds ------------------------------------------------------------------------------

SEED_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "ai-api", "labels": {"app": "ai-api", "version": "v1"}},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "ai-api"}},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
             "template": {
                 "metadata": {"labels": {"app": "ai-api", "version": "v1"},
                              "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000"}},
                 "spec": {"serviceAccountName": "ai-api", "containers": [{
                     "name": "api", "image": "registry.local/ai-api:v1.2.3",
                     "ports": [{"containerPort": 8000, "name": "http"}],
                     "env": [{"name": "REDIS_URL",
                              "valueFrom": {"secretKeyRef": {"name": "redis-credentials", "key": "url"}}},
                             {"name": "LOG_LEVEL", "value": "info"}],
                     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                   "limits": {"cpu": "2", "memory": "4Gi"}},
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5}}]}}}}

SEED_HPA: dict[str, Any] = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "ai-api-hpa"},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ai-api"},
             "minReplicas": 2, "maxReplicas": 20,
             "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                              "type": "Utilization", "averageUtilization": 70}}},
                         {"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                                                   "target": {"type": "AverageValue", "averageValue": "100"}}}],
             "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                        "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
                          "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                      "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                                   {"type": "Pods", "value": 4, "periodSeconds": 15}]}}}}

SEED_ROLLOUT: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "ai-api"},
    "spec": {"replicas": 10,
             "strategy": {"canary": {
                 "steps": [{"setWeight": 1}, {"pause": {"duration": "1h"}},
                           {"analysis": {"templates": [{"templateName": "ai-api-analysis"}],
                                         "args": [{"name": "service-name", "value": "ai-api-canary"}]}},
                           {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
                 "canaryService": "ai-api-canary", "stableService": "ai-api-stable",
                 "trafficRouting": {"istio": {"virtualService": {"name": "ai-api-vsvc", "routes": ["primary"]}}}}},
             "selector": {"matchLabels": {"app": "ai-api"}},
             "template": SEED_DEPLOYMENT["spec"]["template"]}}

SEED_ANALYSIS_TEMPLATE: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": {"name": "ai-api-analysis"},
    "spec": {"args": [{"name": "service-name"}],
             "metrics": [
                 {"name": "error-rate", "interval": "5m", "successCondition": "result[0] < 0.01",
                  "provider": {"prometheus": {"address": "http://prometheus:9090",
                                              "query": 'sum(rate(http_requests_total{status=~"5.."}[5m]))'}}},
                 {"name": "quality-score", "interval": "30m", "successCondition": "result[0] > 0.85",
                  "provider": {"job": {"spec": {"backoffLimit": 1, "template": {"spec": {
                      "restartPolicy": "Never",
                      "containers": [{"name": "quality-check", "image": "registry.local/quality-checker:1",
                                      "command": ["python", "check_quality.py"]}]}}}}}}]}}

SEED_SCALED_OBJECT: dict[str, Any] = {
    "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "vllm-queue"},
    "spec": {"scaleTargetRef": {"name": "vllm-server", "kind": "StatefulSet"},
             "minReplicaCount": 1, "maxReplicaCount": 8, "cooldownPeriod": 300,
             "triggers": [{"type": "prometheus", "metadata": {
                 "serverAddress": "http://prometheus:9090", "threshold": "5",
                 "query": "sum(vllm:num_requests_waiting)"}}]}}


def test_seed_like_objects_are_accepted(cluster: Cluster) -> None:
    cluster.apps.create_namespaced_deployment(NAMESPACE, SEED_DEPLOYMENT)
    client.AutoscalingV2Api(cluster.admin).create_namespaced_horizontal_pod_autoscaler(NAMESPACE, SEED_HPA)
    cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "analysistemplates", SEED_ANALYSIS_TEMPLATE)
    cluster.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", SEED_ROLLOUT)
    cluster.custom.create_namespaced_custom_object(*KEDA, NAMESPACE, "scaledobjects", SEED_SCALED_OBJECT)
    assert cluster.apps.read_namespaced_deployment("ai-api", NAMESPACE).spec.replicas == 3
    stored = cluster.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "ai-api")
    assert stored["spec"]["strategy"]["canary"]["steps"][0] == {"setWeight": 1}
    scaled = cluster.custom.get_namespaced_custom_object(*KEDA, NAMESPACE, "scaledobjects", "vllm-queue")
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == "5"
