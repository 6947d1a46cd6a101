"""kubectl (Debian's package) as a second real client of kubesim: get, server-side columns, get -w, apply."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from kubernetes import client

from tests.contract.conftest import NAMESPACE, Cluster, pod, rollout

LABELS = {"a": {"app": "api"}, "b": {"app": "api"}, "c": {"app": "vllm"}}


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, "kubectl is needed as a second real client: apt-get install kubectl"
    return found


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
        # --validate=false: kubesim does not serve /openapi yet (see services/kubesim/server.py)
        result = subprocess.run([kubectl(), "--kubeconfig", str(cluster.kubeconfig), "apply", "--validate=false",
                                 "-f", str(manifest)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert apply(2) == "deployment.apps/web created"
    assert apply(2) == "deployment.apps/web unchanged"
    assert apply(4) == "deployment.apps/web configured"
    applied = cluster.apps.read_namespaced_deployment("web", NAMESPACE)
    assert (applied.spec.replicas, applied.metadata.generation) == (4, 2)
