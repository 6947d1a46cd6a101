"""The GPU pods and Autoscaling panes in the app: fed through ``app.receive`` like the cluster source does, reached
by their digit keys, the ``/`` filter, every state of the source (none configured, waiting, down, a kind absent),
a thousand pods, SVG snapshots on seed-like data, and the seed scenario on a real kubesim."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from console.app import KUBE_SOURCE, PANE_IDS, SwitchboardApp, create_app
from console.panes import AutoscalingPane, GpuPodsPane
from console.panes.gpu_pods import MAX_ROWS, NO_CLUSTER
from console.sources.poller import Health, Observed
from services.kubesim.cli import start
from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.scenario import load
from tests.console.pilot_helpers import console_context, type_text, wait_for
from tests.console.sample_data import (
    A100,
    CLEAR_SCREEN,
    CLIPBOARD,
    NOW,
    RLO,
    feed_cluster,
    kube_event,
    kube_node,
    kube_pod,
    kube_snapshot,
    observed,
    owner,
    seed_cluster,
    snapshot_app,
)
from tests.console.test_sanitize import screen_of, unsafe

pytestmark = pytest.mark.anyio
SIZE = (120, 40)
GPU_DIGIT = str(PANE_IDS.index("gpu-pods") + 1)
HPA_DIGIT = str(PANE_IDS.index("autoscaling") + 1)
TOKENS = {"console-admin": "admin"}


def cluster_app(snapshot=None) -> SwitchboardApp:  # type: ignore[no-untyped-def]
    app = snapshot_app()
    feed_cluster(app, seed_cluster(time.time()) if snapshot is None else snapshot)
    return app


def gpu_table(app: SwitchboardApp):  # type: ignore[no-untyped-def]
    return app.query_one(GpuPodsPane).body


async def test_the_digit_keys_reach_both_panes_and_the_rows_say_what_matters() -> None:
    app = cluster_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(GPU_DIGIT)
        assert app.active_pane == "gpu-pods" and app.focused is gpu_table(app)
        table = gpu_table(app)
        assert table.row_keys[:3] == ["workload:StatefulSet vllm-server", "ai-prod/vllm-server-0",
                                      "ai-prod/vllm-server-1"]
        vllm = "ai-prod/vllm-server-0"
        assert [table.get_cell(vllm, c) for c in ("pod", "gpus", "node", "model", "status")] == [
            "  vllm-server-0", "4", "gpu-a100-0", "A100-SXM4-80GB", "1/1 Running"]
        crashing = "ai-prod/ai-api-6d5f7c9b8-klmno"
        assert table.get_cell(crashing, "status") == "! 0/1 CrashLoopBackOff"  # words, not only red
        assert table.get_cell(crashing, "warning") == "BackOff: Back-off restarting failed container api"
        assert table.get_cell("ai-prod/vllm-server-1", "status") == "! 0/1 Unschedulable"
        assert table.get_cell("ai-prod/vllm-server-1", "warning").startswith("FailedScheduling: 0/6 nodes")
        assert table.get_cell("workload:Rollout ai-api", "status") == "3 pods, 1 !"
        assert "6 pods" in app.query_one(GpuPodsPane).title_plain
        await pilot.press(HPA_DIGIT)
        assert app.active_pane == "autoscaling"
        text = app.query_one(AutoscalingPane).text
        assert "HPA ai-api-hpa → Deployment ai-api" in text
        assert "AT MAX" in text
        assert "why formula: ceil(95% / 70% x 20) = 28 (cpu)" in text
        assert "why capped at maxReplicas 20 (the formula wants 28)" in text
        assert "ScalingLimited True TooManyReplicas" in text
        assert "ScaledObject queue-worker (HPA keda-hpa-queue-worker)" in text


async def test_slash_filters_the_pods_and_escape_clears_it() -> None:
    app = cluster_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(GPU_DIGIT, "slash")
        await type_text(pilot, "a100")
        table = gpu_table(app)
        await wait_for(pilot, lambda: table.row_keys == ["workload:StatefulSet vllm-server",
                                                         "ai-prod/vllm-server-0"], what="only the A100 pod")
        assert "/a100" in app.query_one(GpuPodsPane).title_plain
        await type_text(pilot, "7")  # digits are filter text here, not pane jumps
        assert app.active_pane == "gpu-pods"
        await wait_for(pilot, lambda: "no pod, workload or node matches 'a1007'" in str(table._empty_note),
                       what="the no-match note")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(table.row_keys) == 9, what="every row back")
        assert app.focused is table and app.query_one(GpuPodsPane).needle == ""
        await pilot.press("slash")
        await type_text(pilot, "rollout")
        await pilot.press("enter")  # keeps the filter, back to the rows
        assert app.focused is table
        assert table.row_keys[0] == "workload:Rollout ai-api" and len(table.row_keys) == 4
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(table.row_keys) == 9, what="every row back")


async def test_a_context_without_a_cluster_says_so_in_both_panes() -> None:
    app = snapshot_app()
    assert KUBE_SOURCE not in app.snapshots
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(GPU_DIGIT)
        assert gpu_table(app)._empty_note == NO_CLUSTER
        assert app.query_one(AutoscalingPane).text == NO_CLUSTER


async def test_waiting_down_and_absent_kinds_are_said() -> None:
    app = snapshot_app()
    app.receive(Observed(KUBE_SOURCE))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert gpu_table(app)._empty_note == "waiting for the cluster"
        assert app.query_one(AutoscalingPane).text == "waiting for the cluster"
        assert "WAITING" in app.query_one(GpuPodsPane).title_plain
        refused = "kubernetes at https://127.0.0.1:6443: connection refused"
        app.receive(Observed(KUBE_SOURCE, None, None, Health.DOWN, refused))
        await wait_for(pilot, lambda: gpu_table(app)._empty_note == refused, what="the DOWN reason")
        assert app.query_one(AutoscalingPane).text == refused
        assert "DOWN" in app.query_one(AutoscalingPane).title_plain
        app.receive(observed(KUBE_SOURCE, seed_cluster(time.time(), keda=False)))
        await wait_for(pilot, lambda: "ScaledObjects: not served by this cluster" in app.query_one(
            AutoscalingPane).text, what="the absent KEDA note")
        forbidden = kube_snapshot({}, absent={"pods": "pods.core: forbidden for this user"})
        app.receive(observed(KUBE_SOURCE, forbidden))
        await wait_for(pilot, lambda: gpu_table(app)._empty_note == "pods.core: forbidden for this user",
                       what="the pods' absence")


async def test_a_thousand_pods_render_a_screenful_and_the_filter_finds_the_rest() -> None:
    wall = time.time()
    pods = [kube_pod(f"worker-{n:04d}", owners=owner("StatefulSet", f"shard-{n // 100}"), gpus=1, node="gpu-0",
                     created=wall - 60) for n in range(1000)]
    app = cluster_app(kube_snapshot({"pods": pods, "nodes": [kube_node("gpu-0", A100)]}))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(GPU_DIGIT)
        table = gpu_table(app)
        assert len(table.row_keys) == MAX_ROWS
        assert table.get_cell("more:", "pod").startswith(f"… {1000 - (MAX_ROWS - 3)} more pods")
        await pilot.press("slash")
        await type_text(pilot, "worker-0999")
        await wait_for(pilot, lambda: table.row_keys == ["workload:StatefulSet shard-9", "ai-prod/worker-0999"],
                       what="the filtered pod")


def hostile_cluster(wall: float):  # type: ignore[no-untyped-def]
    """Server strings carrying clear-screen, clipboard and bidi sequences in names, events, reasons and metrics."""
    snapshot = seed_cluster(wall)
    objects = {kind: list(state.objects.values()) for kind, state in snapshot.kinds.items()}
    objects["pods"].append(kube_pod(f"evil{CLEAR_SCREEN}pod", owners=owner("StatefulSet", f"gpu{RLO}set"), gpus=1,
                                    node="gpu-a100-1", ready=False, created=wall - 60))
    objects["events"].append(kube_event(f"evil{CLEAR_SCREEN}pod", "Failed", f"pull {CLIPBOARD}denied", wall))
    hpa = objects["hpas"][0]
    hpa["status"]["conditions"][2]["reason"] = f"TooMany{CLEAR_SCREEN}"
    return kube_snapshot(objects)


async def test_hostile_cluster_strings_are_drawn_as_visible_escapes() -> None:
    wall = 1_795_730_000.0
    gpu = await screen_of(KubePaneApp(GpuPodsPane, hostile_cluster(wall)), (120, 20))
    assert unsafe(gpu.replace("\n", "")) == []
    assert "evil␛[2Jpod" in gpu and "StatefulSet gpu<U+202E>" in gpu and "Failed: pull ␛]52;c" in gpu
    hpa = await screen_of(KubePaneApp(AutoscalingPane, hostile_cluster(wall)), (120, 20))
    assert unsafe(hpa.replace("\n", "")) == [] and "TooMany␛[2J" in hpa


# ---- SVG snapshots ----------------------------------------------------------------------------------------------


class KubePaneApp(App[None]):
    """One cluster pane alone, fed a cluster (the seed-like one) at a fixed wall time."""

    def __init__(self, pane: type[GpuPodsPane] | type[AutoscalingPane], snapshot=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.pane_type, self.wall = pane, 1_795_730_000.0
        self.snapshot = snapshot or seed_cluster(self.wall)

    def compose(self) -> ComposeResult:
        yield self.pane_type("7", id="pane")

    def on_mount(self) -> None:
        pane = self.query_one("#pane", self.pane_type)
        pane.show(observed(KUBE_SOURCE, self.snapshot, age_s=0.8), NOW, self.wall)
        pane.body.focus()


def test_gpu_pods_pane_wide(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(KubePaneApp(GpuPodsPane), terminal_size=(120, 40))


def test_autoscaling_pane_wide(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(KubePaneApp(AutoscalingPane), terminal_size=(120, 40))


def test_gpu_pods_pane_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(KubePaneApp(GpuPodsPane), terminal_size=(80, 24))


def test_autoscaling_pane_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(KubePaneApp(AutoscalingPane), terminal_size=(80, 24))


def test_console_80x24_gpu_pods_filtered(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """In the console at 80 columns: the pane fills the screen, the filter line at its foot."""
    assert snap_compare(cluster_app(), terminal_size=(80, 24), press=[GPU_DIGIT, "slash", "a", "i"])


# ---- the seed on a real kubesim ---------------------------------------------------------------------------------


@pytest.fixture
def seed_kubeconfig(tmp_path: Path) -> Iterator[Path]:
    sim, _ = start(load("seed"), TOKENS)
    try:
        yield write_kubeconfig(tmp_path / "kubeconfig", sim.url, TOKENS, sim.ca_pem)
    finally:
        sim.stop()


async def test_the_seed_on_kubesim_shows_vllm_on_an_a100_node(split_gateway, seed_kubeconfig: Path) -> None:
    app = create_app(console_context(split_gateway, kubeconfig=str(seed_kubeconfig), kube_context="kubesim"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(GPU_DIGIT)
        table = gpu_table(app)
        vllm = "ai-prod/vllm-server-0"
        await wait_for(pilot, lambda: vllm in table.row_keys and table.get_cell(vllm, "model") == "A100-SXM4-80GB",
                       within_s=60, what="vllm-server-0 on an A100 node")
        assert table.get_cell(vllm, "gpus") == "4"
        assert table.get_cell(vllm, "node").startswith("gpu-a100-")
        assert "workload:ai-prod/StatefulSet vllm-server" in table.row_keys  # the context spans namespaces
        await pilot.press(HPA_DIGIT)
        await wait_for(pilot, lambda: "HPA ai-api-hpa → Deployment ai-api" in app.query_one(AutoscalingPane).text,
                       within_s=60, what="the seed's HPA")


async def test_the_one_second_tick_does_not_rebuild_the_pods_from_the_same_snapshot() -> None:
    """The tick moves the titles' ages only: the pods' rows are rebuilt for a new snapshot or when the minute turns
    (their ages), not every second (on 1,000 pods that was most of the console's CPU)."""
    app = cluster_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        pane = app.query_one(GpuPodsPane)
        for _ in range(2):  # a second try if the minute turned during the first
            minute, groups = int(time.time() // 60), pane._groups
            app._tick()
            await pilot.pause()
            if int(time.time() // 60) == minute:
                break
        assert groups is not None and pane._groups is groups
        feed_cluster(app, seed_cluster(time.time()))
        await wait_for(pilot, lambda: pane._groups is not groups, what="the rows rebuilt for a new snapshot")
