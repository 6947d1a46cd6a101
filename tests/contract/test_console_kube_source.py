"""The console's Kubernetes source (console/sources/kube.py) against kubesim, through the official client:
list then one watch per kind, resume and relist on 410, absent kinds, DOWN with a reason, access reviews."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from console.sources.kube import KINDS, Kind, KubeSnapshot, KubeSource, Permission
from console.sources.poller import Health, Observed
from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.store import Store
from services.kubesim.validation import validate_schema
from tests.contract.conftest import NAMESPACE, TOKENS, Cluster, pod
from tests.waiting import until


def names(snapshot: Observed[KubeSnapshot], key: str) -> set[str]:
    assert snapshot.data is not None
    return {obj["metadata"]["name"] for obj in snapshot.data.objects(key)}


def run(body: Callable[[], Any]) -> Any:
    return asyncio.run(body())


@pytest.mark.kubesim_only(reason="counts the open watches in kubesim's store")
def test_lists_then_watches_each_kind_once_and_follows_changes(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, pod("before"))
    updates: list[Observed[KubeSnapshot]] = []

    async def body() -> None:
        source = KubeSource(str(cluster.kubeconfig), "kubesim", NAMESPACE, updates.append, interval_s=0.05)
        source.start()
        try:
            first = await until("LIVE", lambda: source.snapshot().health == Health.LIVE and source.snapshot())
            assert names(first, "pods") == {"before"}
            def watching() -> int:
                return int(cluster.store(lambda store: len(store.watchers)))

            await until("one watch per kind", lambda: watching() == len(KINDS))
            await asyncio.to_thread(cluster.core.create_namespaced_pod, NAMESPACE, pod("after"))
            await until("the new pod", lambda: names(source.snapshot(), "pods") == {"before", "after"})
            await asyncio.to_thread(cluster.core.delete_namespaced_pod, "before", NAMESPACE)
            await until("the deletion", lambda: names(source.snapshot(), "pods") == {"after"})
            await until("on_update with the deletion", lambda: updates and names(updates[-1], "pods") == {"after"})
            assert all(w.lists == 1 for w in source.watches)  # followed by watching, never relisted
            assert watching() == len(KINDS)
        finally:
            await source.stop()

    run(body)


@pytest.mark.kubesim_only(reason="kubesim's SIMULATED mark")
def test_says_it_is_talking_to_a_simulated_cluster(cluster: Cluster) -> None:
    async def body() -> None:
        source = KubeSource(str(cluster.kubeconfig), "kubesim", NAMESPACE, lambda _: None, interval_s=0.05)
        source.start()
        try:
            await until("the SIMULATED mark", lambda: source.simulated)
            snapshot = await until("data", lambda: (s := source.snapshot()).data is not None and s)
            assert snapshot.data.server == cluster.sim.url
            assert snapshot.data.context == "kubesim"
        finally:
            await source.stop()

    run(body)


@pytest.mark.kubesim_only(reason="kubesim's SIMULATED mark")
def test_no_snapshot_is_live_before_the_server_said_whether_it_is_simulated(cluster: Cluster) -> None:
    """The identity check runs on the console's loop; the watches on their threads. Holding the loop until every kind
    is listed puts the lists first (a CI run saw it happen by chance): the snapshot waits for the identity rather than
    call a simulated cluster real."""
    async def body() -> None:
        source = KubeSource(str(cluster.kubeconfig), "kubesim", NAMESPACE, lambda _: None, interval_s=0.05)
        source.start()
        try:
            deadline = time.monotonic() + 30
            while not all(w.state.listed for w in source.watches):  # blocking on purpose: the loop waits too
                assert time.monotonic() < deadline, "the kinds were not listed within 30 s"
                time.sleep(0.01)  # noqa: ASYNC251 - holding the loop is the point of the test
            assert source.snapshot().health is Health.WAITING
            snapshot = await until("LIVE", lambda: (s := source.snapshot()).health == Health.LIVE and s)
            assert snapshot.data is not None and snapshot.data.simulated
        finally:
            await source.stop()

    run(body)


@pytest.mark.kubesim_only(reason="a five-event history and a two-event watch queue")
def test_a_compacted_version_relists_and_nothing_is_lost(kube: Callable[..., Cluster]) -> None:
    """Twenty pods land in one go: the server drops the watcher whose queue of two overflowed, the resume from
    the last version it saw finds that version compacted out of a five-event history (410 Gone), and the kind is
    listed again, ending with every pod."""
    cluster = kube(store=Store(history=5, watch_queue=2, validators=[validate_schema]))
    cluster.core.create_namespaced_pod(NAMESPACE, pod("first"))
    pods = (Kind("pods", "", "v1", "pods"),)

    def burst(store: Store) -> None:
        kind = cluster.sim.api.registry.lookup("", "v1", "pods")  # type: ignore[union-attr]
        for n in range(20):
            store.create(kind, NAMESPACE, pod(f"burst-{n}"))

    async def body() -> None:
        source = KubeSource(str(cluster.kubeconfig), "kubesim", NAMESPACE, lambda _: None, interval_s=0.05,
                            kinds=pods)
        source.start()
        try:
            await until("LIVE", lambda: source.snapshot().health == Health.LIVE)
            await until("the watch", lambda: cluster.store(lambda store: len(store.watchers)) == 1)
            await asyncio.to_thread(cluster.store, burst)
            await until("a relist after 410 Gone", lambda: source.watches[0].lists >= 2)
            expected = {"first"} | {f"burst-{n}" for n in range(20)}
            await until("every pod", lambda: names(source.snapshot(), "pods") == expected)
            assert source.snapshot().health == Health.LIVE
        finally:
            await source.stop()

    run(body)


def test_a_kind_the_cluster_does_not_serve_is_absent_not_down(cluster: Cluster) -> None:
    kinds = (Kind("pods", "", "v1", "pods"), Kind("widgets", "example.com", "v1", "widgets"))

    async def body() -> None:
        source = KubeSource(str(cluster.kubeconfig), "kubesim", NAMESPACE, lambda _: None, interval_s=0.05,
                            kinds=kinds)
        source.start()
        try:
            snapshot = await until("widgets absent, pods listed",
                                   lambda: (s := source.snapshot()).health == Health.LIVE and s.data is not None
                                   and s.data.kinds["widgets"].absent and s)
            assert snapshot.health == Health.LIVE
            assert "widgets.example.com: not served by this cluster" == snapshot.data.kinds["widgets"].absent
        finally:
            await source.stop()

    run(body)


@pytest.mark.kubesim_only(reason="stops the server")
def test_an_unreachable_cluster_is_down_with_the_reason(cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.sim.url
    cluster.sim.stop()
    path = write_kubeconfig(tmp_path / "gone", url, TOKENS, cluster.sim.ca_pem)

    async def body() -> None:
        source = KubeSource(str(path), "kubesim", NAMESPACE, lambda _: None, interval_s=0.05, timeout_s=1.0)
        source.start()
        try:
            snapshot = await until("DOWN", lambda: (s := source.snapshot()).health == Health.DOWN and s)
            assert snapshot.error == f"cannot reach {url}: connection refused"
        finally:
            await source.stop()

    run(body)


@pytest.mark.parametrize("context, expected", [("nowhere", "has no context 'nowhere'; known: kubesim")])
@pytest.mark.kubesim_only(reason="kubesim's context names")
def test_a_context_the_kubeconfig_lacks_is_down_and_says_which(cluster: Cluster, context: str, expected: str) -> None:
    async def body() -> None:
        source = KubeSource(str(cluster.kubeconfig), context, NAMESPACE, lambda _: None)
        source.start()
        try:
            snapshot = source.snapshot()
            assert snapshot.health == Health.DOWN
            assert snapshot.error is not None and expected in snapshot.error
            assert str(cluster.kubeconfig) in snapshot.error
            assert (await source.access({"promote": Permission("patch", "argoproj.io", "rollouts", "status")})
                    )["promote"].allowed is False
        finally:
            await source.stop()

    run(body)


@pytest.mark.kubesim_only(reason="kubesim's context names and roles")
def test_access_reviews_allow_the_admin_and_explain_the_viewer(cluster: Cluster) -> None:
    wanted = {"rollout.promote": Permission("patch", "argoproj.io", "rollouts", "status"),
              "pods.read": Permission("list", "", "pods")}

    async def body(context: str) -> dict[str, Any]:
        source = KubeSource(str(cluster.kubeconfig), context, NAMESPACE, lambda _: None)
        source.start()
        try:
            return await source.access(wanted)
        finally:
            await source.stop()

    admin = asyncio.run(body("kubesim"))
    viewer = asyncio.run(body("kubesim-viewer"))
    assert admin["rollout.promote"].allowed and admin["pods.read"].allowed
    assert viewer["pods.read"].allowed
    assert not viewer["rollout.promote"].allowed
    assert viewer["rollout.promote"].reason.startswith("not allowed to patch rollouts/status")
