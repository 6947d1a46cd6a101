"""Every kustomization builds with kubectl, its built-in kinds validate strictly (an unknown field is an error)
against kubernetes-validate's shipped schemas, and its Rollouts, AnalysisTemplates and ScaledObjects against the CRD
schemas in ../shared/crds. ServiceMonitor (Prometheus Operator) has no schema here: only its shape is checked."""

from __future__ import annotations

import copy
import functools
import json

import jsonschema
import kubernetes_validate
import pytest

from services.kubesim.validation import _structural
from tests.deploy.manifests import BUILDS, CUSTOM_KINDS, KUBE_VERSION, Obj, built, crd_schema, find, group_of

EXPECTED = {  # kind -> names, in every overlay (the base has the Deployment instead of the Rollout and templates)
    "Namespace": {"ai-prod"},
    "ConfigMap": {"switchboard-gateway"},
    "Service": {"ai-gateway", "ai-gateway-admin", "vllm", "vllm-headless", "redis"},
    "ServiceAccount": {"ai-gateway", "switchboard-console-viewer", "switchboard-console-operator"},
    "Deployment": {"batch-worker"},
    "Rollout": {"ai-gateway"},
    "AnalysisTemplate": {"gateway-error-rate", "gateway-latency-p99", "gateway-quality"},
    "StatefulSet": {"vllm", "redis"},
    "HorizontalPodAutoscaler": {"ai-gateway"},
    "PodDisruptionBudget": {"ai-gateway"},
    "NetworkPolicy": {"ai-gateway", "redis"},
    "ServiceMonitor": {"ai-gateway", "vllm"},
    "ScaledObject": {"batch-worker", "vllm"},
    "Role": {"switchboard-console-viewer", "switchboard-console-operator"},
    "RoleBinding": {"switchboard-console-viewer", "switchboard-console-operator"},
    "ClusterRole": {"switchboard-console-nodes"},
    "ClusterRoleBinding": {"switchboard-console-nodes"},
}


def crd_validator(obj: Obj) -> jsonschema.Draft4Validator:
    return _crd_validator(*CUSTOM_KINDS[(group_of(obj), obj["kind"])])


@functools.cache
def _crd_validator(group: str, plural: str) -> jsonschema.Draft4Validator:
    # The API server's structural-schema rules made strict, as kubesim applies them (unknown fields refused).
    return jsonschema.Draft4Validator(_structural(crd_schema(group, plural)))


def schema_errors(obj: Obj) -> list[str]:
    """What the schema of obj's kind finds wrong with it (empty: valid)."""
    if (group_of(obj), obj["kind"]) in CUSTOM_KINDS:
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(obj).iter_errors(obj)]
    if obj["kind"] == "ServiceMonitor":
        spec = obj["spec"]
        return [] if spec.get("selector") and spec.get("endpoints") else ["a ServiceMonitor needs selector, endpoints"]
    return list(_builtin_errors(json.dumps(obj, sort_keys=True)))


@functools.cache
def _builtin_errors(text: str) -> tuple[str, ...]:
    """kubernetes-validate, strict, once per distinct object (the overlays share most of theirs)."""
    try:
        kubernetes_validate.validate(json.loads(text), KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return (str(exc),)
    return ()


@pytest.mark.parametrize("build", BUILDS)
def test_every_kustomization_builds_and_every_object_validates(build: str) -> None:
    objects = built(build)
    kinds: dict[str, set[str]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
        assert schema_errors(obj) == [], f"{build}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "ai-prod", f"{obj['kind']}/{obj['metadata']['name']}"
    expected = copy.deepcopy(EXPECTED)
    if build == "base":  # no Argo Rollouts: the gateway is a Deployment
        expected["Deployment"].add("ai-gateway")
        del expected["Rollout"], expected["AnalysisTemplate"]
    assert kinds == expected


def test_the_validators_catch_what_they_are_for() -> None:
    objects = built("overlays/prod")
    hpa = copy.deepcopy(find(objects, "HorizontalPodAutoscaler", "ai-gateway"))
    hpa["spec"]["maxReplicas"] = "twenty"
    assert schema_errors(hpa)
    statefulset = copy.deepcopy(find(objects, "StatefulSet", "vllm"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["startupProbes"] = []  # strict: unknown field
    assert schema_errors(statefulset)
    rollout = copy.deepcopy(find(objects, "Rollout", "ai-gateway"))
    rollout["spec"]["strategy"]["canary"]["steps"][0] = {"setWeight": "1%"}
    assert schema_errors(rollout)
    template = copy.deepcopy(find(objects, "AnalysisTemplate", "gateway-error-rate"))
    template["spec"]["metrics"][0]["provider"]["prometheus"]["qeury"] = "up"
    assert schema_errors(template)
    scaled = copy.deepcopy(find(objects, "ScaledObject", "vllm"))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 4  # KEDA's metadata values are strings
    assert schema_errors(scaled)
