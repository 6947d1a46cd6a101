"""The kustomize builds tests/deploy checks: each overlay (and the base) rendered by Debian's kubectl, as a platform
engineer's ``kubectl apply -k`` would render it, plus the helpers that walk the objects' pod templates."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from services.kubesim.validation import CRD_FILES, crd_text

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("dev", "prod", "gpu-tp2")
BUILDS = ("base", *(f"overlays/{name}" for name in OVERLAYS))
PINNED = ("overlays/prod", "overlays/gpu-tp2")  # no latest tag here
SHARED_CRDS = ROOT.parent / "shared" / "crds"
KUBE_VERSION = "1.33"  # the schemas of the Kubernetes version kubesim reports; preStop sleep needs 1.30 or later
CUSTOM_KINDS = {("argoproj.io", "Rollout"): ("argoproj.io", "rollouts"),
                ("argoproj.io", "AnalysisTemplate"): ("argoproj.io", "analysistemplates"),
                ("keda.sh", "ScaledObject"): ("keda.sh", "scaledobjects")}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Rollout")


@functools.cache
def kubectl() -> str:
    """kubectl with a kustomize that knows components (v4 or later: kubectl 1.21 and later)."""
    found = shutil.which("kubectl")
    assert found, "kubectl is needed to build the kustomizations: apt-get install kubernetes-client (make test does)"
    result = subprocess.run([found, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    version = json.loads(result.stdout or "{}").get("kustomizeVersion", "") if result.returncode == 0 else ""
    major = re.match(r"v(\d+)\.", version)
    assert major and int(major.group(1)) >= 4, (
        f"{found}'s kustomize is {version or 'unknown'}: manifests/ needs kustomize v4 or later (kubectl 1.21 or "
        f"later; Debian bookworm's kubernetes-client is 1.20): install a newer kubectl (https://dl.k8s.io)")
    return found


@functools.cache
def build_text(build: str) -> str:
    """``kubectl kustomize manifests/<build>``; fails the test with kubectl's error."""
    result = subprocess.run([kubectl(), "kustomize", str(MANIFESTS / build)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"kubectl kustomize manifests/{build} failed:\n{result.stderr}"
    return result.stdout


def built(build: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(build_text(build)) if doc]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def group_of(obj: Obj) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def crd_schema(group: str, plural: str, version: str = "v1alpha1") -> Obj:
    """A CRD's openAPIV3Schema from ../shared/crds, or kubesim's packaged copy (equal to it; tests/contract checks
    that) where a clone has no ../shared beside it."""
    filename = CRD_FILES[(group, plural)]
    path = SHARED_CRDS / filename
    crd = yaml.safe_load(path.read_text() if path.is_file() else crd_text(filename))
    served = next(entry for entry in crd["spec"]["versions"] if entry["name"] == version)
    return served["schema"]["openAPIV3Schema"]


def pod_specs(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """Every pod spec an object carries, with where it is: a workload's template, an AnalysisTemplate Job's."""
    if obj["kind"] in (*WORKLOAD_KINDS, "Job"):
        yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]
    if obj["kind"] == "AnalysisTemplate":
        for metric in obj["spec"]["metrics"]:
            job = (metric.get("provider") or {}).get("job")
            if job:
                yield f"AnalysisTemplate/{obj['metadata']['name']}:{metric['name']}", job["spec"]["template"]["spec"]


def containers(obj: Obj) -> Iterator[tuple[str, Obj, Obj]]:
    """(where, pod spec, container) for every container, init containers included."""
    for where, spec in pod_specs(obj):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{where}/{container['name']}", spec, container
