"""kubectl (Debian's package) as a second real client of kubesim: get, server-side columns, get -w, create, apply
(validated by the server, which /openapi/v3 tells kubectl it does), scale and delete."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.contract.conftest import NAMESPACE, Cluster, deployment, pod, rollout

LABELS = {"a": {"app": "api"}, "b": {"app": "api"}, "c": {"app": "vllm"}}


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl is needed as a second real client: apt-get install kubectl"
    return found


def run(cluster: Cluster, *args: str) -> str:
    """kubectl with the cluster's kubeconfig (its admin context); fails the test with kubectl's stderr."""
    result = subprocess.run([kubectl(), "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def hpa(name: str, max_replicas: int = 20) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 2, "maxReplicas": max_replicas, "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}


def write_manifests(path: Path, *objects: dict) -> Path:
    """A multi-document YAML file of ``objects``, each in NAMESPACE (kubectl's usual input)."""
    documents = [{**obj, "metadata": {**obj["metadata"], "namespace": NAMESPACE}} for obj in objects]
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


@pytest.fixture
def pods(cluster: Cluster) -> Cluster:
    for name, labels in LABELS.items():
        cluster.core.create_namespaced_pod(NAMESPACE, pod(name, labels))
    cluster.core.patch_namespaced_pod_status("c", NAMESPACE, {"status": {"phase": "Running"}})
    return cluster


def test_kubectl_get_reads_kubesim(pods: Cluster) -> None:
    result = subprocess.run([kubectl(), "--kubeconfig", str(pods.kubeconfig), "get", "pods", "-n", NAMESPACE,
                             "-l", "app=api", "-o", "json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [item["metadata"]["name"] for item in json.loads(result.stdout)["items"]] == ["a", "b"]


@pytest.mark.kubesim_only(reason="its pod phase is written by hand (a real kubelet overwrites it) and the rows are "
                                  "kubesim's printer's")
def test_kubectl_get_prints_the_server_side_columns(pods: Cluster) -> None:
    hpa = {"metadata": {"name": "api"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}, "minReplicas": 2,
        "maxReplicas": 20, "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}
    client.AutoscalingV2Api(pods.admin).create_namespaced_horizontal_pod_autoscaler(NAMESPACE, hpa)
    pods.custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "rollouts", rollout("ai-api"))
    result = subprocess.run([kubectl(), "--kubeconfig", str(pods.kubeconfig), "get", "pods,hpa,rollouts",
                             "-n", NAMESPACE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[3][:4] == ["pod/c", "0/1", "Running", "0"]
    assert lines[4][:6] == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS"]
    assert lines[5][:5] == ["horizontalpodautoscaler.autoscaling/api", "Deployment/api", "<unknown>/70%", "2", "20"]
    assert lines[6] == ["NAME", "DESIRED", "CURRENT", "UP-TO-DATE", "AVAILABLE", "AGE"]  # the Argo CRD's columns
    assert lines[7][:2] == ["rollout.argoproj.io/ai-api", "3"]


@pytest.mark.kubesim_only(reason='its pod phases are written by hand, which a real kubelet overwrites')
def test_kubectl_get_watch_prints_each_change_as_a_row(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, pod("first"))
    process = subprocess.Popen([kubectl(), "--kubeconfig", str(cluster.kubeconfig), "get", "pods", "-n", NAMESPACE,
                                "-w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True).start()
    try:
        assert lines.get(timeout=120).split()[0] == "NAME"
        assert lines.get(timeout=120).split()[:3] == ["first", "0/1", "Pending"]
        cluster.core.create_namespaced_pod(NAMESPACE, pod("second"))
        assert lines.get(timeout=120).split()[:3] == ["second", "0/1", "Pending"]
        cluster.core.patch_namespaced_pod_status("second", NAMESPACE, {"status": {"phase": "Running"}})
        assert lines.get(timeout=120).split()[:3] == ["second", "0/1", "Running"]
    finally:
        process.kill()
        process.wait()


def test_kubectl_apply_creates_then_configures(cluster: Cluster, tmp_path: Path) -> None:
    manifest = tmp_path / "web.json"

    def apply(replicas: int) -> str:
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NAMESPACE},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "main", "image": "app:1"}]}}}}
        manifest.write_text(json.dumps(body))
        return run(cluster, "apply", "-f", str(manifest))

    assert apply(2) == "deployment.apps/web created"
    assert apply(2) == "deployment.apps/web unchanged"
    assert apply(4) == "deployment.apps/web configured"
    applied = cluster.apps.read_namespaced_deployment("web", NAMESPACE)
    assert (applied.spec.replicas, applied.metadata.generation) == (4, 2)


ARGO = ("argoproj.io", "v1alpha1")


def test_kubectl_create_get_scale_and_delete_a_deployment_an_hpa_and_a_rollout(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    manifests = write_manifests(tmp_path / "app.yaml", deployment("web"), hpa("web"), rollout("canary"))
    assert run(cluster, "create", "-f", str(manifests)).splitlines() == [
        "deployment.apps/web created", "horizontalpodautoscaler.autoscaling/web created",
        "rollout.argoproj.io/canary created"]
    listed = json.loads(run(cluster, "get", "-n", NAMESPACE, "deployment/web", "hpa/web", "rollout/canary",
                            "-o", "json"))
    assert [(item["kind"], item["metadata"]["name"], item["spec"].get("replicas")) for item in listed["items"]] == [
        ("Deployment", "web", 2), ("HorizontalPodAutoscaler", "web", None), ("Rollout", "canary", 3)]
    assert run(cluster, "scale", "-n", NAMESPACE, "deploy/web", "--replicas=5") == "deployment.apps/web scaled"
    assert run(cluster, "scale", "-n", NAMESPACE, "rollout/canary", "--replicas=4") == (
        "rollout.argoproj.io/canary scaled")
    assert cluster.apps.read_namespaced_deployment("web", NAMESPACE).spec.replicas == 5
    assert cluster.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "canary")["spec"][
        "replicas"] == 4
    assert run(cluster, "delete", "-f", str(manifests)).splitlines() == [
        'deployment.apps "web" deleted', 'horizontalpodautoscaler.autoscaling "web" deleted',
        'rollout.argoproj.io "canary" deleted']
    assert not cluster.custom.list_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts")["items"]
    assert not client.AutoscalingV2Api(cluster.admin).list_namespaced_horizontal_pod_autoscaler(NAMESPACE).items


def test_kubectl_create_refuses_an_unknown_field_with_the_servers_reason(cluster: Cluster, tmp_path: Path) -> None:
    bad = deployment("web")
    bad["spec"]["replica"] = 3
    result = subprocess.run([kubectl(), "--kubeconfig", str(cluster.kubeconfig), "create", "-f",
                             str(write_manifests(tmp_path / "bad.yaml", bad))], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and 'unknown field "spec.replica"' in result.stderr, result.stderr
    assert not cluster.apps.list_namespaced_deployment(NAMESPACE).items


def test_kubectl_apply_creates_then_configures_a_rollout_and_an_hpa(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    write_manifests(path, rollout("canary"), hpa("canary"))
    assert run(cluster, "apply", "-f", str(path)).splitlines() == [
        "rollout.argoproj.io/canary created", "horizontalpodautoscaler.autoscaling/canary created"]
    changed = rollout("canary")
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/app:2"
    write_manifests(path, changed, hpa("canary", max_replicas=30))
    assert run(cluster, "apply", "-f", str(path)).splitlines() == [
        "rollout.argoproj.io/canary configured", "horizontalpodautoscaler.autoscaling/canary configured"]
    assert run(cluster, "apply", "-f", str(path)).splitlines() == [
        "rollout.argoproj.io/canary unchanged", "horizontalpodautoscaler.autoscaling/canary unchanged"]
    applied = cluster.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "canary")
    assert applied["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/app:2"
    assert client.AutoscalingV2Api(cluster.admin).read_namespaced_horizontal_pod_autoscaler(
        "canary", NAMESPACE).spec.max_replicas == 30
