"""The confirm dialog draws a several-line change as lines (a rollout's summary, then each patch) and says what a
destructive action takes away in that action's own words."""

from __future__ import annotations

import pytest
from textual.app import App

from console.actions.base import Danger
from console.screens import Confirmation, ConfirmScreen

pytestmark = pytest.mark.anyio


def dialog_text(app: App) -> str:
    return "\n".join(str(widget.render()) for widget in app.screen.query("Static"))


async def test_each_line_of_the_change_is_a_line_and_the_warning_is_the_actions_own() -> None:
    change = ('kubesim/ai-prod/rollouts/ai-api: abort: traffic back to stable, the canary scaled down\n'
              'PATCH ai-prod/rollouts/ai-api/status (merge): {"status": {"abort": true}}')
    confirmation = Confirmation(title="Abort the selected Argo rollout", change=change, danger=Danger.DESTRUCTIVE,
                                context="prod-eu", context_color="red", prod=True, type_to_confirm="ai-api",
                                warning="Traffic goes back to stable; the canary is scaled down.")
    app: App = App()
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(ConfirmScreen(confirmation))
        await pilot.pause()
        text = dialog_text(app)
        assert "␊" not in text
        assert 'scaled down\nPATCH ai-prod/rollouts/ai-api/status (merge): {"status": {"abort": true}}' in text
        assert "Traffic goes back to stable; the canary is scaled down." in text
        assert "the target gets no new requests" not in text


async def test_a_destructive_change_without_words_of_its_own_gets_no_borrowed_warning() -> None:
    confirmation = Confirmation(title="Delete a client key", change="delete key svc", danger=Danger.DESTRUCTIVE,
                                context="local", context_color="green")
    app: App = App()
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(ConfirmScreen(confirmation))
        await pilot.pause()
        assert "the target gets no new requests" not in dialog_text(app)
