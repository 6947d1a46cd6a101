"""Argo Rollouts in the Releases pane, acted on from the keyboard: against a real kubesim whose controllers move only
when the test ticks them (an injected clock), and a real gateway whose audit log records each action.

The rollout starts Paused at step 1/4 (setWeight 20 done, an indefinite pause): promote, abort then retry, undo,
a viewer's disabled keys with the access review's reason, a prod context's type-the-name confirmation, and an
audit the gateway cannot take (a warning; the patch stands)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from kubernetes import client, config
from textual.widgets import Button

from console.actions import REGISTRY
from console.app import KUBE_SOURCE, SwitchboardApp, create_app
from console.panes import ReleasesPane
from console.rollout_views import rollout_key
from console.screens import ConfirmScreen
from services.kubesim.controllers.base import Settings
from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.server import KubeSim
from tests.console.pilot_helpers import console_context, type_text, wait_for
from tests.gateway_harness import VIEWER_TOKEN, auth, free_port

pytestmark = pytest.mark.anyio
WIDE = (160, 48)
TOKENS = {"rollouts-admin": "admin", "rollouts-viewer": "viewer"}
NAMESPACE = "shop"
ARGO = ("argoproj.io", "v1alpha1")
STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
KEY = rollout_key(NAMESPACE, "web")
WITHIN_S = 20.0  # the console's watch and a loaded machine


class Cluster:
    """kubesim with one node; its controllers run only when ``tick`` is called, on a clock the test moves."""

    def __init__(self, tmp_path: Path) -> None:
        self.now = [1000.0]
        self.sim = KubeSim(TOKENS, controllers=Settings(tick=3600.0, ready_delay=1.0),
                           clock=lambda: self.now[0]).start()
        self.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", self.sim.url, TOKENS, self.sim.ca_pem)
        self.api = config.new_client_from_config(config_file=str(self.kubeconfig), context="kubesim")
        self.custom = client.CustomObjectsApi(self.api)
        core = client.CoreV1Api(self.api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "200"}
        node = {"metadata": {"name": "cpu-1"}, "status": {"capacity": capacity, "allocatable": capacity,
                                                           "conditions": [{"type": "Ready", "status": "True"}]}}
        created = core.create_node(node)
        core.replace_node_status("cpu-1", {**node, "metadata": {"name": "cpu-1",
                                                                "resourceVersion": created.metadata.resource_version}})

    def tick(self, times: int = 1, seconds: float = 1.1) -> None:
        controllers = self.sim.controllers
        assert controllers is not None
        for _ in range(times):
            self.now[0] += seconds
            self.sim.call(controllers.tick)

    def rollout(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "web")

    def paused_at_step_one(self) -> None:
        """Revision 1 healthy, then a new image: revision 2 sets weight 20 and pauses (step 1/4)."""
        labels = {"app": "web"}
        self.custom.create_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
            "spec": {"replicas": 5, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "registry.local/web:1"}]}},
                     "strategy": {"canary": {"steps": STEPS}}}})
        self.tick(times=8)
        assert self.rollout()["status"]["phase"] == "Healthy"
        self.custom.patch_namespaced_custom_object(*ARGO, NAMESPACE, "rollouts", "web", {"spec": {"template": {
            "spec": {"containers": [{"name": "main", "image": "registry.local/web:2"}]}}}})
        self.tick(times=8)
        status = self.rollout()["status"]
        assert (status["phase"], status["currentStepIndex"]) == ("Paused", 1), status

    def stop(self) -> None:
        self.api.close()
        self.sim.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    made.paused_at_step_one()
    yield made
    made.stop()


def console(gw: Any, cluster: Cluster, kube_context: str = "kubesim", **overrides: Any) -> SwitchboardApp:
    context = console_context(gw, kubeconfig=str(cluster.kubeconfig), kube_context=kube_context,
                              poll_interval_s=0.2, **overrides)
    return create_app(context, operator="alice@test")


def row(app: SwitchboardApp) -> Any:
    return next((r for r in app.rollouts.rows(app.cluster()) if r.key == KEY), None)


async def select_rollout(pilot: Any, app: SwitchboardApp) -> None:
    await pilot.press("6")
    await wait_for(pilot, lambda: row(app) is not None, within_s=WITHIN_S, what="the rollout in the Releases pane")
    app.query_one(ReleasesPane).body.move_to(KEY)
    await wait_for(pilot, lambda: app.selected_rollout() is not None, what="the rollout selected")
    await wait_for(pilot, lambda: app.rollouts.access is not None, within_s=WITHIN_S,
                   what="the access review")


async def confirm_with(pilot: Any, app: SwitchboardApp, reason: str, type_name: str | None = None) -> None:
    assert isinstance(app.screen, ConfirmScreen)
    await pilot.press("tab")
    await type_text(pilot, reason)
    if type_name is not None:
        await pilot.press("tab")
        await type_text(pilot, type_name)
    await pilot.press("enter")
    assert app.screen.focused is not None and app.screen.focused.id == "ok"
    await pilot.press("enter")


def kube_audit(gw: Any) -> list[dict[str, Any]]:
    entries = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]
    return [e for e in entries if e["kind"] == "kubernetes"]


async def test_promote_from_the_keyboard_sends_the_plugins_patch_shows_pending_and_is_audited(split_gateway,
                                                                                          cluster: Cluster) -> None:
    app = console(split_gateway, cluster)
    async with app.run_test(size=WIDE) as pilot:
        await select_rollout(pilot, app)
        shown = row(app)
        assert (shown.phase_label, shown.step, shown.steps_total, shown.desired_weight) == ("॥ Paused", 1, 4, 20)
        assert shown.revision == 2
        await wait_for(pilot, lambda: app.availability("rollout_promote") is True, what="promote allowed")
        assert app.availability("rollout_retry") is None  # greyed: only when Degraded
        await pilot.press("O")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.confirmation.change.splitlines() == [
            "kubesim/shop/rollouts/web: promote: clear the pause",
            'PATCH shop/rollouts/web/status (merge): {"status": {"pauseConditions": null}}']
        await confirm_with(pilot, app, "canary looks fine")
        await wait_for(pilot, lambda: not cluster.rollout()["status"].get("pauseConditions"),
                       what="the status patch at the cluster")
        await wait_for(pilot, lambda: row(app).pending and "pending" in str(
            app.query_one(ReleasesPane).body.get_cell(KEY, "phase")), within_s=WITHIN_S,
            what="the row pending until the controller observes the promote")
        assert app.availability("rollout_promote") is None  # not twice while pending
        cluster.tick(times=8)  # the controller moves on: setWeight 50, then the next pause
        await wait_for(pilot, lambda: not row(app).pending and row(app).step == 3, within_s=WITHIN_S,
                       what="the promote observed")
        assert row(app).desired_weight == 50
    status = cluster.rollout()["status"]
    assert (status["phase"], status["currentStepIndex"]) == ("Paused", 3)
    [entry] = kube_audit(split_gateway)
    assert (entry["action"], entry["target"], entry["reason"], entry["operator"]) == (
        "rollout.promote", "kubesim/shop/rollouts/web", "canary looks fine", "alice@test")
    assert entry["after"] == {"detail": ['PATCH shop/rollouts/web/status (merge): {"status": {"pauseConditions": '
                                         'null}}'], "outcome": "ok"}


async def test_abort_then_retry(split_gateway, cluster: Cluster) -> None:
    app = console(split_gateway, cluster)
    async with app.run_test(size=WIDE) as pilot:
        await select_rollout(pilot, app)
        await wait_for(pilot, lambda: app.availability("rollout_abort") is True, what="abort allowed")
        await pilot.press("X")
        assert app.screen.confirmation.change.splitlines()[1:] == [  # type: ignore[attr-defined]
            'PATCH shop/rollouts/web/status (merge): {"status": {"abort": true}}']
        await confirm_with(pilot, app, "errors up")
        await wait_for(pilot, lambda: cluster.rollout()["status"].get("abort") is True, what="the abort patch")
        cluster.tick(times=3)
        await wait_for(pilot, lambda: row(app).phase == "Degraded" and not row(app).pending, within_s=WITHIN_S,
                       what="Degraded in the pane")
        assert (row(app).icon, row(app).aborted, row(app).desired_weight) == ("✖", True, 0)
        await wait_for(pilot, lambda: app.availability("rollout_retry") is True, what="retry allowed")
        assert app.availability("rollout_promote") is None
        await pilot.press("T")
        assert app.screen.confirmation.change.splitlines()[1:] == [  # type: ignore[attr-defined]
            'PATCH shop/rollouts/web/status (merge): {"status": {"abort": false}}']
        await confirm_with(pilot, app, "fixed the config")
        await wait_for(pilot, lambda: cluster.rollout()["status"].get("abort") is False, what="the retry patch")
        cluster.tick(times=8)
        await wait_for(pilot, lambda: row(app).phase == "Paused" and not row(app).aborted, within_s=WITHIN_S,
                       what="the steps started again")
    assert [(e["action"], e["after"]["outcome"]) for e in reversed(kube_audit(split_gateway))] == [
        ("rollout.abort", "ok"), ("rollout.retry", "ok")]


async def test_undo_goes_back_to_the_previous_revisions_template(split_gateway, cluster: Cluster) -> None:
    app = console(split_gateway, cluster)
    async with app.run_test(size=WIDE) as pilot:
        await select_rollout(pilot, app)
        await wait_for(pilot, lambda: app.availability("rollout_undo") is True, what="undo allowed")
        await pilot.press("U")
        summary, patch = app.screen.confirmation.change.splitlines()  # type: ignore[attr-defined]
        assert summary == "kubesim/shop/rollouts/web: undo to revision 1"
        assert patch.startswith('PATCH shop/rollouts/web (json-patch): [{"op": "replace", "path": "/spec/template"')
        assert "registry.local/web:1" in patch and "rollouts-pod-template-hash" not in patch
        await confirm_with(pilot, app, "back to v1")
        await wait_for(pilot, lambda: cluster.rollout()["spec"]["template"]["spec"]["containers"][0]["image"]
                       == "registry.local/web:1", what="the template replaced")
        cluster.tick(times=8)
        await wait_for(pilot, lambda: not row(app).pending and row(app).phase == "Healthy", within_s=WITHIN_S,
                       what="back on revision 1, healthy")
    [entry] = kube_audit(split_gateway)
    assert entry["action"] == "rollout.undo" and entry["after"]["outcome"] == "ok"


async def test_a_viewer_sees_the_actions_disabled_with_the_access_reviews_reason(split_gateway,
                                                                                 cluster: Cluster) -> None:
    app = console(split_gateway, cluster, kube_context="kubesim-viewer")
    async with app.run_test(size=WIDE) as pilot:
        await select_rollout(pilot, app)
        await wait_for(pilot, lambda: app.snapshots[KUBE_SOURCE].data is not None, what="the cluster")
        state = app.action_state()
        for action_id in ("rollout_promote", "rollout_promote_full", "rollout_abort", "rollout_undo"):
            assert app.availability(action_id) is None, action_id
        why = REGISTRY["rollout_promote"].unavailable(state)
        assert why is not None and why.startswith("not allowed to patch rollouts/status"), why
        assert REGISTRY["rollout_undo"].unavailable(state).startswith("not allowed to patch rollouts")  # type: ignore[union-attr]
        await pilot.press("O")
        assert not isinstance(app.screen, ConfirmScreen)
    assert cluster.rollout()["status"]["phase"] == "Paused" and not kube_audit(split_gateway)


async def test_a_prod_context_makes_the_operator_type_the_rollouts_name(split_gateway, cluster: Cluster) -> None:
    app = console(split_gateway, cluster, prod=True, color="red")
    async with app.run_test(size=WIDE) as pilot:
        await select_rollout(pilot, app)
        await wait_for(pilot, lambda: app.availability("rollout_promote") is True, what="promote allowed")
        await pilot.press("O")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.confirmation.type_to_confirm == "web"
        await pilot.press("tab")
        await type_text(pilot, "ship it")
        await pilot.press("enter")  # the name is still missing: on to the type-to-confirm field
        assert isinstance(app.screen, ConfirmScreen) and app.screen.query_one("#ok", Button).disabled
        await pilot.press("escape")  # cancelled: nothing sent
        assert not isinstance(app.screen, ConfirmScreen) and cluster.rollout()["status"].get("pauseConditions")
        await pilot.press("O")
        await confirm_with(pilot, app, "ship it", type_name="web")
        await wait_for(pilot, lambda: not cluster.rollout()["status"].get("pauseConditions"),
                       what="the promote after typing the name")
    assert [e["action"] for e in kube_audit(split_gateway)] == ["rollout.promote"]


async def test_an_audit_that_cannot_be_written_is_a_warning_and_the_patch_stands(cluster: Cluster) -> None:
    nowhere = SimpleNamespace(url=f"http://127.0.0.1:{free_port()}")  # no gateway: its panes are DOWN
    app = console(nowhere, cluster)
    async with app.run_test(size=WIDE) as pilot:
        await select_rollout(pilot, app)
        await wait_for(pilot, lambda: app.availability("rollout_promote") is True, what="promote allowed")
        await pilot.press("O")
        await confirm_with(pilot, app, "gateway is down")
        await wait_for(pilot, lambda: any(title == "Audit" for _, title, _ in app.notices), within_s=WITHIN_S,
                       what="the audit warning")
    [(severity, message)] = [(s, m) for s, title, m in app.notices if title == "Audit"]
    assert severity == "warning" and message.startswith("not written to the gateway's audit log")
    assert not cluster.rollout()["status"].get("pauseConditions")
