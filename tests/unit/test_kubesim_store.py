"""kubesim's object store on its own: what no API call can show cheaply."""

from __future__ import annotations

import re

from services.kubesim.discovery import Registry
from services.kubesim.store import Store


def test_generated_names_use_the_api_servers_alphabet_and_never_collide() -> None:
    """3,000 pods from one generateName: five hex characters would almost surely repeat a name (a 409 the
    ReplicaSet controller then has to retry); the API server's alphabet, drawn again when taken, never does."""
    registry = Registry()
    namespaces, pods = registry.lookup("", "v1", "namespaces"), registry.lookup("", "v1", "pods")
    assert namespaces is not None and pods is not None
    store = Store()
    store.create(namespaces, "", {"metadata": {"name": "ai-prod"}})
    names = {store.create(pods, "ai-prod", {"metadata": {"generateName": "ai-api-7c9f-"},
                                            "spec": {"containers": [{"name": "api", "image": "a:1"}]}}
                          )["metadata"]["name"] for _ in range(3000)}
    assert len(names) == 3000
    assert all(re.fullmatch(r"ai-api-7c9f-[bcdfghjklmnpqrstvwxz2456789]{5}", name) for name in names)
