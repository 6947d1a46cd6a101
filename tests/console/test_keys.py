"""Keys, footer, help and palette come from the action registry; read-only hides writes. Fixed data, no network."""

from __future__ import annotations

import pytest

from console.actions import CONSOLE_ACTIONS, visible_actions
from console.app import create_app
from console.panes.keybar import KeyBar
from console.screens import ConfirmScreen, HelpScreen
from tests.console.pilot_helpers import type_text, wait_for
from tests.console.sample_data import context, snapshot_app

pytestmark = pytest.mark.anyio
WRITES = {a.id for a in CONSOLE_ACTIONS if a.writes}


def footer_text(app) -> str:
    return app.query_one(KeyBar).plain


async def test_bindings_come_from_the_registry() -> None:
    app = snapshot_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection() == ("chat", "openai-mini"))
        ids = {b.binding.id for b in app.screen.active_bindings.values()}
        assert {a.id for a in CONSOLE_ACTIONS} - {"palette"} <= ids | {"next_pane"}
        assert "Apply" in footer_text(app) and "Drain" in footer_text(app)
        assert app.availability("apply_weights") is None, "greyed until something is staged"
        assert [entry[0] for entry in app.palette_entries()] == [a.id for a in visible_actions(False)
                                                                 if a.id != "palette"]


async def test_readonly_hides_writes_everywhere() -> None:
    app = snapshot_app(readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "plus")
        active = {b.binding.id for b in app.screen.active_bindings.values()}
        assert WRITES.isdisjoint(active) and {"refresh", "pause", "help", "quit"} <= active
        assert "Apply" not in footer_text(app) and "Drain" not in footer_text(app)
        assert "Refresh" in footer_text(app)
        assert "READ-ONLY" in str(app.query_one("#context-bar").render())
        assert WRITES.isdisjoint(entry[0] for entry in app.palette_entries())
        await pilot.press("a", "d", "u")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = " ".join(row.description for row in app.screen.actions)
        assert "Refresh" in help_text and "Apply" not in help_text and "Drain" not in help_text


async def test_keys_are_remapped_by_action_id() -> None:
    app = snapshot_app(keys={"apply_weights": "ctrl+s", "shift_up": "k"})
    assert app.keys["apply_weights"] == "ctrl+s" and app.keys["shift_up"] == "k" and app.keys["drain"] == "d"
    async with app.run_test(size=(120, 40)) as pilot:
        assert "ctrl+s Apply" in footer_text(app) and "k +5" in footer_text(app)
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection() == ("chat", "openai-mini"))
        await pilot.press("k")
        assert app.staged is not None and app.staged.after["openai-mini"] == 55
        await pilot.press("a")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ConfirmScreen)
    with pytest.raises(ValueError, match="unknown action id"):
        create_app(context(), keys={"launch_rockets": "l"}, poll=False)


async def test_prod_confirm_needs_the_typed_name() -> None:
    app = snapshot_app(prod=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "plus", "a")
        screen = app.screen
        assert isinstance(screen, ConfirmScreen) and screen.confirmation.type_to_confirm == "chat"
        ok = screen.query_one("#ok")
        await pilot.press("tab")
        await type_text(pilot, "why")
        assert ok.disabled, "the name is not typed yet"
        await pilot.press("enter")  # on to the name field
        await type_text(pilot, "cha")
        assert ok.disabled
        await type_text(pilot, "t")
        assert not ok.disabled


async def test_digits_and_tab_move_between_panes_at_80x24() -> None:
    app = snapshot_app()
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.active_pane == "providers"
        await pilot.press("3")
        assert app.active_pane == "engine" and app.query_one("#engine").has_class("-active")
        await pilot.press("tab")
        assert app.active_pane == "audit"
        await pilot.press("tab")
        assert app.active_pane == "client-keys"
        await pilot.press("tab")
        assert app.active_pane == "releases"
        await pilot.press("tab")
        assert app.active_pane == "gpu-pods"
        await pilot.press("tab", "tab")
        assert app.active_pane == "queue"
        await pilot.press("tab")
        assert app.active_pane == "benchmarks"
        await pilot.press("tab")
        assert app.active_pane == "providers"
        await pilot.press("shift+tab")
        assert app.active_pane == "benchmarks"
        assert app.query_one("#routing").outer_size.height == 1, "inactive panes collapse to their title at 80x24"


async def test_command_palette_runs_registry_actions() -> None:
    app = snapshot_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.selection() == ("chat", "openai-mini"))
        await pilot.press("ctrl+p")
        await type_text(pilot, "drain the")
        await pilot.pause(0.3)  # the palette searches in the background
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the drain confirmation")
        assert app.screen.confirmation.change.startswith("drain target openai-mini")


async def test_palette_hides_writes_in_readonly() -> None:
    app = snapshot_app(readonly=True)
    async with app.run_test(size=(120, 40)):
        names = " ".join(name for _, name, _ in app.palette_entries())
        assert "Drain" not in names and "Apply" not in names and "Refresh every source" in names
