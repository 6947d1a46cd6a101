"""A kubesim on a free loopback port per test, reached through the official client from the kubeconfig it writes.

Real-cluster mode: when ``SWITCHBOARD_CONTRACT_KUBECONFIG`` names a kubeconfig, ``kube()`` and ``cluster`` are that
cluster instead (its current context is the admin; the viewer is the context named by
``SWITCHBOARD_CONTRACT_VIEWER_CONTEXT``, ``<current>-viewer`` by default), each test in a fresh ``NAMESPACE`` that
is emptied and deleted afterwards, and the same assertions hold. Tests that can only run on kubesim (they read its
store, step or configure its controllers, or check its SIMULATED marks) carry ``@pytest.mark.kubesim_only(reason=...)``
and are deselected there; ``kube(**options)`` with kubesim options fails on a real cluster, naming the marker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from services.kubesim.controllers.base import Settings
from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.server import KubeSim
from services.kubesim.store import Store

ADMIN_TOKEN, VIEWER_TOKEN = "contract-admin-token", "contract-viewer-token"
TOKENS = {ADMIN_TOKEN: "admin", VIEWER_TOKEN: "viewer"}
NAMESPACE = "contract"
REAL_CLUSTER_ENV = "SWITCHBOARD_CONTRACT_KUBECONFIG"
VIEWER_CONTEXT_ENV = "SWITCHBOARD_CONTRACT_VIEWER_CONTEXT"
KUBESIM_ONLY = "kubesim_only"
NAMESPACE_GONE_S = 300.0  # a real namespace's deletion waits for its pods' graceful termination
# The controllers ``working_cluster`` runs on kubesim: quick enough that a Job finishes in well under a second.
WORKING = Settings(tick=0.05, ready_delay=0.2, job_seconds=0.3, crash_interval=0.2)
OWNED_LABEL = "switchboard.contract/owned"  # on the namespace real-cluster mode creates, so a leftover is recognised
CUSTOM_KINDS = (("argoproj.io", "v1alpha1", "rollouts"), ("argoproj.io", "v1alpha1", "analysisruns"),
                ("argoproj.io", "v1alpha1", "analysistemplates"), ("keda.sh", "v1alpha1", "scaledobjects"))


def real_kubeconfig() -> Path | None:
    """The real cluster's kubeconfig in real-cluster mode, else None (the default: kubesim)."""
    named = os.environ.get(REAL_CLUSTER_ENV, "").strip()
    return Path(named).expanduser() if named else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{KUBESIM_ONLY}(reason): the test needs kubesim itself (its store, its "
                                       f"controllers' settings, its SIMULATED marks); deselected when "
                                       f"{REAL_CLUSTER_ENV} names a real cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    kept, deselected = [], []
    for item in items:
        marker = item.get_closest_marker(KUBESIM_ONLY) if here in item.path.parents else None
        if marker is not None and not (marker.args or marker.kwargs.get("reason")):
            raise pytest.UsageError(f"{item.nodeid}: {KUBESIM_ONLY} needs a reason (why only kubesim can run it)")
        (deselected if marker is not None and real_kubeconfig() else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


class _NoSim:
    """``Cluster.sim`` on a real cluster: any use fails, naming the marker the test lacks."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"this test uses kubesim itself (cluster.sim.{name}) and cannot run on a real cluster: "
                    f"mark it @pytest.mark.{KUBESIM_ONLY}(reason=...)")


@dataclass
class Cluster:
    sim: KubeSim  # a _NoSim on a real cluster
    kubeconfig: Path
    admin: client.ApiClient
    viewer: client.ApiClient
    real: bool = False  # True in real-cluster mode

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.admin)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.admin)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.admin)

    def store(self, read: Callable[[Store], Any]) -> Any:
        """Reads the server's store on its own loop (for what no API shows: open watchers)."""
        api = self.sim.api
        assert api is not None
        return self.sim.call(lambda: read(api.store))


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    real = real_kubeconfig()
    if real is not None:
        yield from _real_cluster(real)
        return
    started: list[KubeSim] = []

    def make(**options: Any) -> Cluster:
        sim = KubeSim(TOKENS, **options).start()
        started.append(sim)
        path = write_kubeconfig(tmp_path / f"kubeconfig-{len(started)}", sim.url, TOKENS, sim.ca_pem)
        admin = config.new_client_from_config(config_file=str(path), context="kubesim")
        viewer = config.new_client_from_config(config_file=str(path), context="kubesim-viewer")
        client.CoreV1Api(admin).create_namespace({"metadata": {"name": NAMESPACE}})
        return Cluster(sim, path, admin, viewer)

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def cluster(kube: Callable[..., Cluster]) -> Cluster:
    return kube()


@pytest.fixture
def working_cluster(kube: Callable[..., Cluster]) -> Cluster:
    """A cluster whose controllers run: kubesim with quick controllers and one Ready node, or the real cluster."""
    if real_kubeconfig() is not None:
        return kube()
    made = kube(controllers=WORKING)
    add_ready_node(made, node("worker-1"))
    return made


def node(name: str, cpu: str = "32", memory: str = "256Gi", gpus: int = 0, product: str | None = None) -> dict:
    """A Node object as a kubelet would report it (kubesim's scheduler places pods on it)."""
    labels = {"kubernetes.io/hostname": name}
    capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    if product:
        labels["nvidia.com/gpu.product"] = product
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def add_ready_node(cluster: Cluster, item: dict) -> None:
    """Creates the node, then writes its status through the status subresource (a real node's kubelet would)."""
    created = cluster.core.create_node(item)
    cluster.core.replace_node_status(created.metadata.name, {**item, "metadata": {
        "name": created.metadata.name, "resourceVersion": created.metadata.resource_version}})


def _real_cluster(path: Path) -> Iterator[Callable[..., Cluster]]:
    """``kube`` in real-cluster mode: one fresh NAMESPACE for the test, emptied and deleted afterwards."""
    admin = config.new_client_from_config(config_file=str(path))
    contexts, current = config.list_kube_config_contexts(config_file=str(path))
    viewer_context = os.environ.get(VIEWER_CONTEXT_ENV) or f"{current['name']}-viewer"
    if viewer_context not in {context["name"] for context in contexts}:
        pytest.fail(f"{path} has no context {viewer_context!r} for the read-only identity: add one (see the "
                    f"README's contract-suite section) or name it in {VIEWER_CONTEXT_ENV}")
    viewer = config.new_client_from_config(config_file=str(path), context=viewer_context)
    core = client.CoreV1Api(admin)
    _remove_leftover(admin)
    core.create_namespace({"metadata": {"name": NAMESPACE, "labels": {OWNED_LABEL: "true"}}})
    made = Cluster(_NoSim(), path, admin, viewer, real=True)  # type: ignore[arg-type]

    def make(**options: Any) -> Cluster:
        if options:
            pytest.fail(f"kube({', '.join(options)}=...) configures kubesim, which a real cluster cannot do: mark "
                        f"the test @pytest.mark.{KUBESIM_ONLY}(reason=...)")
        return made

    try:
        yield make
    finally:
        _delete_namespace(admin)


def _remove_leftover(admin: client.ApiClient) -> None:
    """Deletes an interrupted run's namespace; refuses to touch a NAMESPACE this suite did not create."""
    try:
        found = client.CoreV1Api(admin).read_namespace(NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    if (found.metadata.labels or {}).get(OWNED_LABEL) != "true":
        pytest.fail(f"namespace {NAMESPACE} exists and was not made by the contract suite (no {OWNED_LABEL} label): "
                    "point the suite at a cluster where it may create and delete that namespace")
    _delete_namespace(admin)


def _delete_namespace(admin: client.ApiClient) -> None:
    """Empties NAMESPACE (pods at once, no grace period), deletes it and waits until it is gone. A real cluster
    would empty it itself, more slowly; kubesim does not cascade a namespace's deletion."""
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    now = {"grace_period_seconds": 0, "propagation_policy": "Background"}
    deletions: list[Callable[[], object]] = [
        lambda: apps.delete_collection_namespaced_deployment(NAMESPACE, **now),
        lambda: apps.delete_collection_namespaced_stateful_set(NAMESPACE, **now),
        lambda: apps.delete_collection_namespaced_replica_set(NAMESPACE, **now),
        lambda: client.BatchV1Api(admin).delete_collection_namespaced_job(NAMESPACE, **now),
        lambda: client.AutoscalingV2Api(admin).delete_collection_namespaced_horizontal_pod_autoscaler(NAMESPACE),
        lambda: core.delete_collection_namespaced_pod(NAMESPACE, **now),
        lambda: core.delete_collection_namespaced_config_map(NAMESPACE),
        lambda: core.delete_namespace(NAMESPACE),
    ]
    deletions[4:4] = [lambda kind=kind: client.CustomObjectsApi(admin).delete_collection_namespaced_custom_object(
        kind[0], kind[1], NAMESPACE, kind[2]) for kind in CUSTOM_KINDS]
    for delete in deletions:
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:  # a kind this cluster lacks (no Argo or KEDA CRDs), or a namespace already gone
                raise
    deadline = time.monotonic() + NAMESPACE_GONE_S
    while time.monotonic() < deadline:
        try:
            core.read_namespace(NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    pytest.fail(f"namespace {NAMESPACE} was still there {NAMESPACE_GONE_S:.0f} s after its deletion")


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "main", "image": "registry.local/app:1"}], **spec}}


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "registry.local/app:1"}]}}}}


def rollout(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
            "spec": {"replicas": 3, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "registry.local/app:1"}]}},
                     "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}}}
