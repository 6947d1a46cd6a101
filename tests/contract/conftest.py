"""A kubesim on a free loopback port per test, reached through the official client from the kubeconfig it writes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.server import KubeSim
from services.kubesim.store import Store

ADMIN_TOKEN, VIEWER_TOKEN = "contract-admin-token", "contract-viewer-token"
TOKENS = {ADMIN_TOKEN: "admin", VIEWER_TOKEN: "viewer"}
NAMESPACE = "contract"


@dataclass
class Cluster:
    sim: KubeSim
    kubeconfig: Path
    admin: client.ApiClient
    viewer: client.ApiClient

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
