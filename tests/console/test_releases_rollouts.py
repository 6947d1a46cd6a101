"""The Releases pane with the gateway's canary releases and an Argo Rollout side by side, fed through
``app.receive`` with the pollers off: a rollout paused at 10% reads as the plugin's ``get rollout`` does
(॥ Paused, step 1/4, the pause condition, the AnalysisRun's ✔ ✖ ? ⚠ counts), at 80x24 and at 120x40."""

from __future__ import annotations

from typing import Any

import pytest

from console.app import PANE_IDS, SwitchboardApp
from console.panes import ReleasesPane
from console.rollout_views import HASH_LABEL, REVISION_ANNOTATION
from console.sources.kube import KubeSnapshot
from tests.console.pilot_helpers import wait_for
from tests.console.sample_data import feed_cluster, kube_snapshot, snapshot_app
from tests.console.test_sanitize import drawn_text

pytestmark = pytest.mark.anyio
RELEASES_DIGIT = str(PANE_IDS.index("releases") + 1)
GATEWAY_RELEASES = 4  # tests.console.sample_data.release_list
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "10m"}}]
PAUSED_KEY = "rollout:ai-prod/ai-api"
# Down the list from the first gateway release to the Argo rollout (rollouts follow the gateway's releases).
TO_THE_ROLLOUT = ["down"] * GATEWAY_RELEASES


def argo_rollout(name: str, *, step: int, phase: str, message: str, abort: bool = False,
                 pause_reason: str | None = None, analysis_run: str | None = None) -> dict[str, Any]:
    """A canary Rollout (4 steps: 10%, pause, 50%, pause 10m) as Argo's controller writes its status."""
    status: dict[str, Any] = {
        "observedGeneration": "5", "phase": phase, "message": message, "currentStepIndex": step,
        "currentPodHash": f"{name}-new", "stableRS": f"{name}-old", "replicas": 10, "updatedReplicas": 1,
        "readyReplicas": 10, "availableReplicas": 10, "abort": abort,
        "canary": ({"currentBackgroundAnalysisRunStatus": {"name": analysis_run, "status": "Running"}}
                   if analysis_run else {}),
    }
    if pause_reason:
        status["pauseConditions"] = [{"reason": pause_reason, "startTime": "2026-11-26T10:00:00Z"}]
        status["controllerPause"] = True
    if abort:
        status["abortedAt"] = "2026-11-26T10:05:00Z"
    return {"metadata": {"name": name, "namespace": "ai-prod", "uid": f"uid-{name}", "generation": 5,
                         "annotations": {REVISION_ANNOTATION: "3"}},
            "spec": {"replicas": 10, "strategy": {"canary": {"steps": STEPS}}}, "status": status}


def replicaset(rollout: str, which: str, revision: int, available: int) -> dict[str, Any]:
    return {"metadata": {"name": f"{rollout}-{which}", "namespace": "ai-prod",
                         "labels": {HASH_LABEL: f"{rollout}-{which}"},
                         "annotations": {REVISION_ANNOTATION: str(revision)},
                         "ownerReferences": [{"kind": "Rollout", "uid": f"uid-{rollout}", "controller": True}]},
            "status": {"availableReplicas": available}}


def analysis_run(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ai-prod"},
            "status": {"phase": "Running", "message": "", "metricResults": [
                {"name": "error-rate", "phase": "Successful", "successful": 3},
                {"name": "p99-latency", "phase": "Running", "successful": 2, "inconclusive": 1, "error": 1,
                 "message": "prometheus: timeout"}]}}


def rollouts_cluster(*, degraded: bool = False) -> KubeSnapshot:
    """ai-api paused at 10% (1 of 10 pods on the canary) with a background analysis; with ``degraded``, also web,
    aborted on its first step."""
    rollouts = [argo_rollout("ai-api", step=1, phase="Paused", message="CanaryPauseStep",
                             pause_reason="CanaryPauseStep", analysis_run="ai-api-new-3")]
    sets = [replicaset("ai-api", "new", 3, 1), replicaset("ai-api", "old", 2, 9)]
    if degraded:
        rollouts.append(argo_rollout("web", step=0, phase="Degraded", abort=True,
                                     message="RolloutAborted: Rollout aborted update to revision 3"))
        sets += [replicaset("web", "new", 3, 0), replicaset("web", "old", 2, 10)]
    return kube_snapshot({"rollouts": rollouts, "replicasets": sets, "analysisruns": [analysis_run("ai-api-new-3")]})


def releases_app(*, degraded: bool = False) -> SwitchboardApp:
    app = snapshot_app()
    feed_cluster(app, rollouts_cluster(degraded=degraded))
    return app


async def test_a_paused_argo_rollout_is_listed_after_the_gateway_releases_and_reads_as_the_plugin() -> None:
    app = releases_app()
    async with app.run_test(size=(120, 90)) as pilot:  # tall enough for the whole detail
        await pilot.press(RELEASES_DIGIT, *TO_THE_ROLLOUT)
        pane = app.query_one(ReleasesPane)
        await wait_for(pilot, lambda: pane.selected_release == PAUSED_KEY, what="the Argo rollout selected")
        assert pane.body.row_keys[:GATEWAY_RELEASES] == ["haiku-next", "prompt-v3", "sonnet-4-1", "mini-2025"]
        assert "1 Argo rollout" in pane.title_plain
        screen = drawn_text(app.export_screenshot())
        for shown in ("ai-api  ॥ Paused  step 1/4 pause (until promoted)",  # icon, phase, step i/n and its kind
                      "10%  = desired",  # 1 of 10 available pods on the canary, as the 10% step asks
                      "» CanaryPauseStep",  # the pause condition
                      "background analysis ai-api-new-3: Running",
                      "error-rate", "✔ 3", "p99-latency", "✔ 2 ? 1 ⚠ 1", "prometheus: timeout",
                      "Argo rollout ai-prod/ai-api · revision 3 · Canary, replica weights"):
            assert shown in screen, f"{shown!r} is not on the screen:\n{screen}"


def test_releases_with_a_paused_rollout_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(releases_app(), terminal_size=(80, 24), press=[RELEASES_DIGIT, *TO_THE_ROLLOUT])


def test_releases_with_a_paused_rollout_120x40(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(releases_app(), terminal_size=(120, 40), press=[RELEASES_DIGIT, *TO_THE_ROLLOUT])
