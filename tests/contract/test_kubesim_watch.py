"""kubesim's watch through the official client: resume by resourceVersion, 410 after compaction, bookmarks,
timeoutSeconds, selectors, and a watcher that stops reading being dropped rather than buffered without bound."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

from services.kubesim.store import Store
from tests.contract.conftest import ADMIN_TOKEN, NAMESPACE, Cluster, pod

SAFETY_TIMEOUT = 120  # seconds: only bounds a broken run; every wait below ends on an event


def collect(cluster: Cluster, count: int, kind: str = "pod", **kwargs: Any) -> tuple[list[dict[str, Any]], watch.Watch]:
    """The first ``count`` events of a watch of pods (or ``kind``: "config_map") in NAMESPACE (then the connection
    is closed)."""
    watcher = watch.Watch()
    events = []
    lister = getattr(cluster.core, f"list_namespaced_{kind}")
    for event in watcher.stream(lister, NAMESPACE, timeout_seconds=SAFETY_TIMEOUT,
                                **kwargs):
        events.append(event)
        if len(events) == count:
            break
    return events, watcher


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["type"], event["object"].metadata.name) for event in events]


def when_watching(cluster: Cluster, count: int, action: Callable[[], None]) -> threading.Thread:
    """Runs ``action`` on a thread once ``count`` watchers are registered on the server."""

    def run() -> None:
        while cluster.store(lambda store: len(store.watchers)) < count:
            threading.Event().wait(0.01)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.kubesim_only(reason="it waits on kubesim's store for the watch to be registered before writing")
def test_resuming_from_the_last_resource_version_loses_and_repeats_nothing(cluster: Cluster) -> None:
    core = cluster.core
    core.create_namespaced_pod(NAMESPACE, pod("p0"))
    core.create_namespaced_pod(NAMESPACE, pod("p1"))
    listed = core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    core.create_namespaced_pod(NAMESPACE, pod("p2"))
    live = when_watching(cluster, 1, lambda: core.create_namespaced_pod(NAMESPACE, pod("live")))
    first, _ = collect(cluster, 2, resource_version=listed)
    live.join(SAFETY_TIMEOUT)
    resume_at = first[-1]["object"].metadata.resource_version
    core.patch_namespaced_pod("p0", NAMESPACE, {"metadata": {"labels": {"v": "2"}}})  # while disconnected
    core.delete_namespaced_pod("p1", NAMESPACE)
    core.create_namespaced_pod(NAMESPACE, pod("p3"))
    second, _ = collect(cluster, 3, resource_version=resume_at)
    events = first + second
    assert summary(events) == [("ADDED", "p2"), ("ADDED", "live"), ("MODIFIED", "p0"), ("DELETED", "p1"),
                               ("ADDED", "p3")]
    versions = [int(event["object"].metadata.resource_version) for event in events]
    assert versions == sorted(set(versions)) and versions[0] > int(listed)


def test_a_watch_without_resource_version_starts_with_every_object_added(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, pod("p0"))
    cluster.core.create_namespaced_pod(NAMESPACE, pod("p1"))
    events, _ = collect(cluster, 2)
    assert summary(events) == [("ADDED", "p0"), ("ADDED", "p1")]


@pytest.mark.kubesim_only(reason="it shrinks kubesim's history to compact it on demand")
def test_a_compacted_resource_version_is_410_then_a_relist_resumes(kube: Callable[..., Cluster]) -> None:
    cluster = kube(store=Store(history=5))
    old = cluster.core.create_namespaced_pod(NAMESPACE, pod("p0")).metadata.resource_version
    for index in range(1, 7):
        cluster.core.create_namespaced_pod(NAMESPACE, pod(f"p{index}"))
    with pytest.raises(ApiException) as gone:
        collect(cluster, 1, resource_version=old)
    assert gone.value.status == 410 and "too old resource version" in gone.value.reason
    relisted = cluster.core.list_namespaced_pod(NAMESPACE)
    assert len(relisted.items) == 7
    cluster.core.delete_namespaced_pod("p3", NAMESPACE)
    events, _ = collect(cluster, 1, resource_version=relisted.metadata.resource_version)
    assert summary(events) == [("DELETED", "p3")]


@pytest.mark.kubesim_only(reason="it sets kubesim's bookmark interval")
def test_bookmarks_carry_the_current_resource_version(kube: Callable[..., Cluster]) -> None:
    cluster = kube(bookmark_interval=0.05)
    made = cluster.core.create_namespaced_pod(NAMESPACE, pod("p0"))
    events, watcher = collect(cluster, 1, resource_version=made.metadata.resource_version,
                              allow_watch_bookmarks=True)
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["raw_object"]["metadata"]["resourceVersion"] == made.metadata.resource_version
    assert watcher.resource_version == made.metadata.resource_version


@pytest.mark.kubesim_only(reason="it sets kubesim's bookmark interval and counts its open watchers")
def test_timeout_seconds_ends_the_stream_and_bookmarks_only_come_when_asked(kube: Callable[..., Cluster]) -> None:
    cluster = kube(bookmark_interval=0.05)
    made = cluster.core.create_namespaced_pod(NAMESPACE, pod("p0"))
    events = list(watch.Watch().stream(cluster.core.list_namespaced_pod, NAMESPACE, timeout_seconds=1,
                                       resource_version=made.metadata.resource_version))
    assert events == []
    assert cluster.store(lambda store: len(store.watchers)) == 0


def test_a_watch_sends_only_what_its_selector_matches_and_transitions_across_it(cluster: Cluster) -> None:
    # ConfigMaps: a real cluster's scheduler and kubelet would add their own MODIFIED events to pods.
    listed = cluster.core.list_namespaced_config_map(NAMESPACE).metadata.resource_version
    for name, app in (("a", "api"), ("b", "batch"), ("c", "api")):
        cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": name, "labels": {"app": app}}})
    cluster.core.patch_namespaced_config_map("b", NAMESPACE, {"metadata": {"labels": {"app": "api"}}})
    cluster.core.patch_namespaced_config_map("a", NAMESPACE, {"metadata": {"labels": {"app": "web"}}})
    cluster.core.patch_namespaced_config_map("c", NAMESPACE, {"metadata": {"labels": {"v": "2"}}})
    events, _ = collect(cluster, 5, "config_map", resource_version=listed, label_selector="app=api")
    # As on a real API server: starting to match is ADDED, ceasing to match is DELETED.
    assert summary(events) == [("ADDED", "a"), ("ADDED", "c"), ("ADDED", "b"), ("DELETED", "a"), ("MODIFIED", "c")]


@pytest.mark.kubesim_only(reason="it sizes kubesim's watch queue and counts its open watchers")
def test_a_watcher_that_stops_reading_is_dropped_not_buffered(kube: Callable[..., Cluster]) -> None:
    cluster = kube(store=Store(watch_queue=4))
    context = ssl.create_default_context(cadata=cluster.sim.ca_pem.decode())
    raw = context.wrap_socket(socket.create_connection((cluster.sim.host, cluster.sim.port)),
                              server_hostname=cluster.sim.host)
    try:
        raw.sendall(f"GET /api/v1/namespaces/{NAMESPACE}/configmaps?watch=true HTTP/1.1\r\n"
                    f"Host: {cluster.sim.host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode())
        while cluster.store(lambda store: len(store.watchers)) < 1:
            threading.Event().wait(0.01)
        blob = "x" * 256 * 1024
        written = 0
        while cluster.store(lambda store: len(store.watchers)) and written < 400:  # never read from ``raw``
            cluster.core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": f"cm{written}"},
                                                                  "data": {"blob": blob}})
            written += 1
        assert cluster.store(lambda store: len(store.watchers)) == 0, f"still watching after {written} writes"
    finally:
        raw.close()
    cluster.core.create_namespaced_pod(NAMESPACE, pod("after"))
    assert summary(collect(cluster, 1)[0]) == [("ADDED", "after")]
