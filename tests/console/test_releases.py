"""The Releases pane and its actions: snapshots on fixed data, Argo's preconditions, and promote / abort
through the confirm modal against a live gateway (a release created through POST /admin/releases)."""

from __future__ import annotations

import io

import httpx
import pytest
from rich.console import Console

from console.actions import REGISTRY
from console.actions.releases import ENTRIES, release_action_state
from console.app import SwitchboardApp, create_app
from console.panes import ReleasesPane
from console.panes.releases import rollout_view
from console.panes.rollout import detail
from console.screens import ConfirmScreen
from tests.console.pilot_helpers import console_context, type_text, wait_for
from tests.console.sample_data import (
    CLEAR_SCREEN,
    WINDOW_TITLE,
    ReleasesPaneApp,
    hostile_releases,
    observed,
    release_list,
    snapshot_app,
)
from tests.gateway_harness import VIEWER_TOKEN, auth

WIDE = (120, 40)
RELEASE_ACTIONS = ("release_promote", "release_promote_full", "release_pause_resume", "release_abort", "release_retry")
PAUSE_STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]


# ---- snapshots ------------------------------------------------------------------------------------


def test_pane_wide(snap_compare) -> None:
    """Phase, step 4/6 with its kind, time in step and left in the pause, weights, gates with samples, arms,
    history newest first."""
    assert snap_compare(ReleasesPaneApp(select="haiku-next"), terminal_size=(120, 24))


def test_pane_80x24_rolled_back(snap_compare) -> None:
    """Below 114 columns the detail goes under the list; a failed gate in red, the weight at 0 of a desired 10."""
    assert snap_compare(ReleasesPaneApp(select="sonnet-4-1"), terminal_size=(80, 24))


def test_console_releases_pane(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=WIDE, press=["6", "down"])


def test_console_80x24_releases(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=(80, 24), press=["6", "down"])


def test_abort_confirm_on_prod_shows_the_analysis(snap_compare) -> None:
    assert snap_compare(snapshot_app(prod=True), terminal_size=WIDE, press=["6", "down", "A"])


def test_releases_readonly(snap_compare) -> None:
    assert snap_compare(snapshot_app(readonly=True), terminal_size=WIDE, press=["6", "down"])


# ---- rendering and preconditions on fixed data ------------------------------------------------------


async def select(pilot, app: SwitchboardApp, name: str) -> None:
    await pilot.press("6")
    pane = app.query_one(ReleasesPane)
    pane.body.move_to(name)
    await wait_for(pilot, lambda: app.selected_release() is not None and app.selected_release()[0].spec.name == name,
                   what=f"release {name} selected")


def allowed(app: SwitchboardApp) -> set[str]:
    return {a for a in RELEASE_ACTIONS if app.availability(a) is True}


@pytest.mark.anyio
async def test_argo_preconditions_follow_the_selected_release() -> None:
    app = snapshot_app()
    async with app.run_test(size=WIDE) as pilot:
        assert allowed(app) == set(), "no release selected: every release action greyed"
        await select(pilot, app, "haiku-next")  # Progressing
        assert allowed(app) == {"release_promote", "release_promote_full", "release_pause_resume", "release_abort"}
        await select(pilot, app, "prompt-v3")  # Paused
        assert allowed(app) == {"release_promote", "release_promote_full", "release_pause_resume", "release_abort"}
        await select(pilot, app, "sonnet-4-1")  # Degraded, aborted
        assert allowed(app) == {"release_retry"}
        await select(pilot, app, "mini-2025")  # Healthy
        assert allowed(app) == set()
        await pilot.press("2")
        assert allowed(app) == set(), "the Routing pane is active: no release is selected"


def test_argo_preconditions_per_phase() -> None:
    """What the CLI verbs check before sending (the console's keys use the same entries)."""
    progressing, paused, degraded, healthy = release_list().releases
    expected = {  # verb: the phases it may run in
        "promote": {"Progressing", "Paused"}, "promote-full": {"Progressing", "Paused"}, "pause": {"Progressing"},
        "resume": {"Paused"}, "abort": {"Progressing", "Paused"}, "retry": {"Degraded"},
    }
    for verb, phases in expected.items():
        runs = {r.phase for r in (progressing, paused, degraded, healthy)
                if ENTRIES[verb].precondition(release_action_state(r)) is None}
        assert runs == phases, verb
    aborted = progressing.model_copy(update={"aborted": True})
    assert ENTRIES["promote"].precondition(release_action_state(aborted)) == "release is aborted (retry first)"
    assert ENTRIES["abort"].precondition(release_action_state(aborted)) is None


@pytest.mark.anyio
async def test_readonly_hides_every_release_action() -> None:
    app = snapshot_app(readonly=True)
    async with app.run_test(size=WIDE) as pilot:
        await select(pilot, app, "prompt-v3")
        assert {a: app.availability(a) for a in RELEASE_ACTIONS} == dict.fromkeys(RELEASE_ACTIONS, False)
        plain = app.query_one("#keys").plain
        assert "Promote" not in plain and "Abort" not in plain
        await pilot.press("A")
        assert not isinstance(app.screen, ConfirmScreen)


@pytest.mark.anyio
async def test_help_names_the_release_keys() -> None:
    app = snapshot_app()
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("question_mark")
        rows = {(row.key, row.description) for row in app.screen.actions}
    keys = {"release_promote": "P", "release_promote_full": "F", "release_pause_resume": "s", "release_abort": "A",
            "release_retry": "R"}
    for action_id, key in keys.items():
        assert (key, REGISTRY[action_id].description) in rows


def test_hostile_release_strings_are_drawn_as_escapes() -> None:
    """Message, history reason and actor carry clear-screen, title, clipboard and bidi sequences."""
    out = Console(width=120, file=io.StringIO(), record=True, color_system=None)
    out.print(detail(rollout_view(hostile_releases().releases[0])))
    text = out.export_text()
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert CLEAR_SCREEN not in text and WINDOW_TITLE not in text
    for escaped in ("rolled back␛[2J␛]0;PWNED␇", "eve␛[H", "gate␛]52;c;cGF5bG9hZA==␇<U+202E>"):
        assert escaped in text


@pytest.mark.anyio
async def test_the_pane_follows_new_snapshots_and_keeps_the_selection() -> None:
    app = snapshot_app()
    async with app.run_test(size=WIDE) as pilot:
        await select(pilot, app, "prompt-v3")
        newer = release_list(version=8)
        promoted = newer.releases[1].model_copy(update={"phase": "Progressing", "step_index": 2,
                                                          "desired_weight": 100, "actual_weight": 100})
        newer.releases[1] = promoted
        app.receive(observed("releases", newer))
        await wait_for(pilot, lambda: app.selected_release() is not None and app.selected_release()[1] == 8,
                       what="the newer list")
        release, _ = app.selected_release()
        assert release.spec.name == "prompt-v3" and release.phase == "Progressing"
        assert app.query_one(ReleasesPane).body.get_cell("prompt-v3", "step") == "3/3"
        assert allowed(app) == {"release_promote", "release_promote_full", "release_pause_resume", "release_abort"}


# ---- against a live gateway ------------------------------------------------------------------------


def create_release(gw, name: str = "rel", steps: list | None = None) -> dict:
    answer = httpx.post(f"{gw.url}/admin/releases", headers=auth(operator="setup@test"), json={
        "name": name, "pool": "split", "stable": "a", "canary": "b", "steps": steps or PAUSE_STEPS,
        "analysis_interval_s": 0.2, "reason": "test release"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def live_release(gw, name: str = "rel") -> dict:
    listing = httpx.get(f"{gw.url}/admin/releases", headers=auth(VIEWER_TOKEN)).json()
    return next(r for r in listing["releases"] if r["spec"]["name"] == name)


def audit(gw) -> list[dict]:
    return httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]


async def paused_and_selected(pilot, app: SwitchboardApp, name: str = "rel") -> None:
    await wait_for(pilot, lambda: app.snapshots["releases"].data is not None and any(
        r.spec.name == name and r.phase == "Paused" for r in app.snapshots["releases"].data.releases),
        within_s=15, what=f"release {name} Paused (the controller's first steps)")
    await select(pilot, app, name)


async def confirm_with(pilot, app: SwitchboardApp, reason: str, type_name: str | None = None) -> None:
    assert isinstance(app.screen, ConfirmScreen)
    assert app.screen.focused is not None and app.screen.focused.id == "cancel", "focus must start on Cancel"
    await pilot.press("tab")
    await type_text(pilot, reason)
    if type_name is not None:
        await pilot.press("tab")
        await type_text(pilot, type_name)
    await pilot.press("enter")
    assert app.screen.focused is not None and app.screen.focused.id == "ok"
    await pilot.press("enter")


@pytest.mark.anyio
async def test_promote_through_the_confirm_modal(split_gateway) -> None:
    gw = split_gateway
    create_release(gw)
    app = create_app(console_context(gw, poll_interval_s=0.2), operator="alice@test")
    async with app.run_test(size=WIDE) as pilot:
        await paused_and_selected(pilot, app)
        await pilot.press("P")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        change = dialog.confirmation.change
        assert "promote release rel: Paused, step 2/3 pause (until promoted)" in change
        assert "error rate" in change and "inconclusive" in change, "the dialog shows the current analysis"
        await confirm_with(pilot, app, "looks good")
        await wait_for(pilot, lambda: live_release(gw)["step_index"] >= 2, what="the promote at the gateway")
        await wait_for(pilot, lambda: app.selected_release() is not None and app.selected_release()[0].phase
                       == "Healthy", within_s=15, what="the release Healthy in the pane")
    promote = [e for e in audit(gw) if e["reason"] == "looks good"]
    assert len(promote) == 1 and promote[0]["operator"] == "alice@test" and "promote" in promote[0]["action"]


@pytest.mark.anyio
async def test_abort_on_a_prod_context_types_the_release_name(split_gateway) -> None:
    gw = split_gateway
    create_release(gw)
    app = create_app(console_context(gw, poll_interval_s=0.2, prod=True, color="red"), operator="alice@test")
    async with app.run_test(size=WIDE) as pilot:
        await paused_and_selected(pilot, app)
        await pilot.press("A")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.confirmation.type_to_confirm == "rel"
        await confirm_with(pilot, app, "roll it back", type_name="rel")
        await wait_for(pilot, lambda: live_release(gw)["phase"] == "Degraded", what="the abort at the gateway")
        await wait_for(pilot, lambda: allowed(app) == {"release_retry"}, what="only retry left in the console")
    release = live_release(gw)
    assert release["aborted"] and release["actual_weight"] == 0
    assert [e["operator"] for e in audit(gw) if e["reason"] == "roll it back"] == ["alice@test"]


@pytest.mark.anyio
async def test_cancel_sends_nothing(split_gateway) -> None:
    gw = split_gateway
    create_release(gw)
    app = create_app(console_context(gw, poll_interval_s=0.2), operator="alice@test")
    async with app.run_test(size=WIDE) as pilot:
        await paused_and_selected(pilot, app)
        before = live_release(gw)
        await pilot.press("A")
        await pilot.press("enter")  # focus starts on Cancel
        assert not isinstance(app.screen, ConfirmScreen)
    assert live_release(gw)["phase"] == before["phase"] == "Paused"
    assert not [e for e in audit(gw) if e["operator"] == "alice@test"]


@pytest.mark.anyio
async def test_a_change_behind_the_consoles_back_is_a_409_naming_who(split_gateway) -> None:
    gw = split_gateway
    create_release(gw)
    app = create_app(console_context(gw, poll_interval_s=0.2), operator="alice@test")
    async with app.run_test(size=WIDE) as pilot:
        await paused_and_selected(pilot, app)
        for poller in app.pollers.values():
            poller.paused = True  # the console keeps showing the version it read
        shown_version = app.selected_release()[1]
        async with httpx.AsyncClient() as client:
            other = await client.post(f"{gw.url}/admin/targets/a/drain", headers=auth(operator="bob@elsewhere"),
                                      json={"reason": "bob's drain"})
        assert other.status_code == 200 and other.json()["version"] > shown_version
        await pilot.press("A")
        await confirm_with(pilot, app, "abort on old data")
        await wait_for(pilot, lambda: any(s == "error" for s, _, _ in app.notices), what="the 409")
        errors = [message for severity, _, message in app.notices if severity == "error"]
        assert "changed by bob@elsewhere" in errors[-1]
    assert live_release(gw)["phase"] == "Paused", "a stale abort changes nothing"
    assert not [e for e in audit(gw) if e["reason"] == "abort on old data"]


@pytest.mark.anyio
async def test_one_key_resumes_a_paused_release(split_gateway) -> None:
    gw = split_gateway
    create_release(gw)
    app = create_app(console_context(gw, poll_interval_s=0.2), operator="alice@test")
    async with app.run_test(size=WIDE) as pilot:
        await paused_and_selected(pilot, app)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.confirmation.title == "Resume the selected release"
        await confirm_with(pilot, app, "carry on")
        await wait_for(pilot, lambda: any(e["reason"] == "carry on" for e in audit(gw)), what="the resume")
    [entry] = [e for e in audit(gw) if e["reason"] == "carry on"]
    assert "resume" in entry["action"] and entry["operator"] == "alice@test"
