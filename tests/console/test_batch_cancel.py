"""Cancelling a batch from the Queue pane: the key acts on the batch under the cursor, the dialog names the batch and
what a cancel does, the reason and the operator reach the gateway's ``POST /admin/batches/{id}/cancel`` (which audits
it as batch.cancel); finished batches grey the key, read-only hides it, a prod context makes the operator type the id,
and a refusal changes nothing. The gateway here is a loopback stand-in speaking the admin JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from console.actions import REGISTRY
from console.app import PANE_IDS, SwitchboardApp, create_app
from console.contexts import Context
from console.panes import QueuePane
from console.screens import ConfirmScreen
from tests.console.pilot_helpers import type_text, wait_for
from tests.console.queue_data import QueueAdminAPI

pytestmark = pytest.mark.anyio
QUEUE_DIGIT = str(PANE_IDS.index("queue") + 1)
RUNNING, FINISHED = "batch_6f1c2a9e0b7d4e31", "batch_c2b85e0f13a94d7e"
SIZE = (120, 40)
WITHIN_S = 10.0


@pytest.fixture
def api() -> Iterator[QueueAdminAPI]:
    server = QueueAdminAPI().start()
    yield server
    server.stop()


def console(api: QueueAdminAPI, **overrides: Any) -> SwitchboardApp:
    values: dict[str, Any] = {"name": "test", "admin_url": api.url, "token_env": None, "engine_url": None,
                              "poll_interval_s": 0.2, "timeout_s": 1.0}
    values.update(overrides)
    return create_app(Context(**values), operator="alice@bastion", down_after_s=60.0)


async def on_batch(pilot: Any, app: SwitchboardApp, batch_id: str) -> None:
    await pilot.press(QUEUE_DIGIT)
    pane = app.query_one(QueuePane)
    await wait_for(pilot, lambda: batch_id in pane.body.row_keys, WITHIN_S, "the batches")
    assert pane.body.move_to(batch_id)
    await wait_for(pilot, lambda: app.action_state().batch_status is not None, WITHIN_S, "the selection")


def dialog_text(app: SwitchboardApp) -> str:
    screen = app.screen
    assert isinstance(screen, ConfirmScreen)
    return f"{screen.confirmation.title}\n{screen.confirmation.change}\n{screen.confirmation.warning}"


async def test_cancel_sends_the_reason_and_the_operator_for_the_selected_batch(api: QueueAdminAPI) -> None:
    app = console(api)
    async with app.run_test(size=SIZE) as pilot:
        await on_batch(pilot, app, RUNNING)
        assert app.availability("batch_cancel") is True
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), WITHIN_S, "the confirm dialog")
        text = dialog_text(app)
        assert f"cancel batch {RUNNING} (chat, key nightly-evals): in_progress" in text
        assert "1,116/2,000 done, 12 failed" in text and "nightly eval: support answers" in text
        assert "No new request of this batch starts" in text
        assert app.screen.focused is not None and app.screen.focused.id == "cancel", "focus starts on Cancel"
        await pilot.press("tab")
        await type_text(pilot, "eval job superseded")
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: api.cancels, WITHIN_S, "the cancel request")
        pane = app.query_one(QueuePane)
        await wait_for(pilot, lambda: pane.body.get_cell(RUNNING, "status") == "cancelling", WITHIN_S,
                       "the batch cancelling in the pane")
    assert api.cancels == [{"batch": RUNNING, "body": {"reason": "eval job superseded"}, "operator": "alice@bastion"}]
    assert ("Applied", f"cancel: batch {RUNNING}") in [(title, message) for _, title, message in app.notices]


async def test_escape_sends_nothing(api: QueueAdminAPI) -> None:
    app = console(api)
    async with app.run_test(size=SIZE) as pilot:
        await on_batch(pilot, app, RUNNING)
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), WITHIN_S, "the confirm dialog")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), WITHIN_S, "the dialog closed")
    assert api.cancels == [] and ("POST", f"/admin/batches/{RUNNING}/cancel") not in api.requests


async def test_a_finished_batch_greys_the_key_and_says_why(api: QueueAdminAPI) -> None:
    app = console(api)
    async with app.run_test(size=SIZE) as pilot:
        await on_batch(pilot, app, FINISHED)
        assert app.availability("batch_cancel") is None  # shown greyed
        assert REGISTRY["batch_cancel"].unavailable(app.action_state()) == "batch is completed"
        await pilot.press("C")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("1")  # another pane: no batch selected
        assert REGISTRY["batch_cancel"].unavailable(app.action_state()) == "select a batch in the Queue pane"
    assert api.cancels == []


async def test_read_only_hides_the_cancel_key(api: QueueAdminAPI) -> None:
    app = console(api, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await on_batch(pilot, app, RUNNING)
        assert app.availability("batch_cancel") is False
        assert "Cancel batch" not in app.query_one("#keys").plain  # type: ignore[attr-defined]
        await pilot.press("C")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
    assert api.cancels == []


async def test_a_prod_context_makes_the_operator_type_the_batch_id(api: QueueAdminAPI) -> None:
    app = console(api, name="prod-eu", color="red", prod=True)
    async with app.run_test(size=SIZE) as pilot:
        await on_batch(pilot, app, RUNNING)
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), WITHIN_S, "the confirm dialog")
        assert app.screen.confirmation.type_to_confirm == RUNNING  # type: ignore[attr-defined]
        await pilot.press("tab")
        await type_text(pilot, "superseded")
        await pilot.press("enter")
        assert app.screen.query_one("#ok").disabled, "the id is not typed yet"
        await type_text(pilot, RUNNING)
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: api.cancels, WITHIN_S, "the cancel request")
    assert [c["batch"] for c in api.cancels] == [RUNNING]


async def test_a_refused_cancel_changes_nothing_and_says_so(api: QueueAdminAPI) -> None:
    app = console(api)
    async with app.run_test(size=SIZE) as pilot:
        await on_batch(pilot, app, RUNNING)
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), WITHIN_S, "the confirm dialog")
        api.mode = "error"
        api.error_message = "batch already finalizing"
        await pilot.press("tab")
        await type_text(pilot, "too late")
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: any(t.startswith("Refused (503)") for _, t, _ in app.notices), WITHIN_S,
                       "the refusal")
    assert api.cancels == []
    assert ("error", "Refused (503): nothing changed", "batch already finalizing") in app.notices


async def test_a_batch_that_finished_meanwhile_is_a_refusal_not_a_crash(api: QueueAdminAPI) -> None:
    """The gateway's 409 carries the batch as ``current`` (not a gateway state): shown as a refusal."""
    app = console(api)
    async with app.run_test(size=SIZE) as pilot:
        await on_batch(pilot, app, RUNNING)
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), WITHIN_S, "the confirm dialog")
        api.snapshot = api.snapshot.model_copy(update={"batches": [
            b.model_copy(update={"status": "completed"}) if b.id == RUNNING else b for b in api.snapshot.batches]})
        await pilot.press("tab")
        await type_text(pilot, "too late")
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: any(t.startswith("Refused (409)") for _, t, _ in app.notices), WITHIN_S,
                       "the refusal")
    assert api.cancels == []
    assert ("error", "Refused (409): nothing changed", f"batch {RUNNING} is completed and cannot be cancelled") \
        in app.notices
