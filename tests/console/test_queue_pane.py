"""The Queue pane and its source: ``GET /admin/queue`` read over HTTP from a loopback admin API speaking the
gateway's JSON, drawn as streams and batches; a disabled, absent or failing queue says why and never breaks the pane;
server strings are drawn as visible escapes."""

from __future__ import annotations

import time

import pytest

from console.app import PANE_IDS, create_app
from console.contexts import Context
from console.panes import QueuePane
from console.sources.gateway import AdminError, GatewayClient
from console.sources.poller import Health, Observed
from services.admin_api import QueueSnapshot
from tests.console.pilot_helpers import wait_for
from tests.console.queue_data import NOW, QueueAdminAPI, QueuePaneApp, batch, disabled_queue, queue_snapshot
from tests.console.test_sanitize import CLEAR_SCREEN, CLIPBOARD, RLO, WINDOW_TITLE, drawn_text, unsafe

pytestmark = pytest.mark.anyio
QUEUE_DIGIT = str(PANE_IDS.index("queue") + 1)
WITHIN_S = 10.0  # polls on a loaded machine


@pytest.fixture
def api() -> QueueAdminAPI:
    server = QueueAdminAPI().start()
    yield server
    server.stop()


# ---- the source ---------------------------------------------------------------------------------------------------


async def test_the_source_reads_the_queue_over_http(api: QueueAdminAPI) -> None:
    client = GatewayClient(api.url, token=None)
    try:
        assert await client.queue() == api.snapshot
        api.mode = "disabled"
        assert await client.queue() == disabled_queue()
    finally:
        await client.aclose()


async def test_a_gateway_without_the_queue_api_reads_as_a_disabled_queue(api: QueueAdminAPI) -> None:
    api.mode = "absent"
    client = GatewayClient(api.url, token=None)
    try:
        snapshot = await client.queue()
    finally:
        await client.aclose()
    assert not snapshot.enabled and "404" in (snapshot.reason or "")


async def test_a_failing_queue_api_is_an_error_the_poller_reports(api: QueueAdminAPI) -> None:
    api.mode = "error"
    client = GatewayClient(api.url, token=None)
    try:
        with pytest.raises(AdminError) as refused:
            await client.queue()
    finally:
        await client.aclose()
    assert refused.value.status == 503 and refused.value.message == api.error_message


# ---- the pane alone -----------------------------------------------------------------------------------------------


async def test_streams_and_batches_are_drawn_with_bars_and_words() -> None:
    app = QueuePaneApp()
    async with app.run_test(size=(120, 14)) as pilot:
        await pilot.pause()
        pane = app.query_one(QueuePane)
        assert pane.streams.row_keys == ["chat", "completions"]
        assert pane.streams.get_cell("completions", "note") == "no workers"
        assert pane.streams.get_cell("chat", "workers") == "3 (2 busy)"
        assert pane.body.row_keys[:3] == ["batch_6f1c2a9e0b7d4e31", "batch_91d0c3aa57e24b08", "batch_0a4e77c1d9b35f62"]
        assert pane.body.get_cell("batch_6f1c2a9e0b7d4e31", "bar") == "[███████·····]  55%"
        assert pane.body.get_cell("batch_0a4e77c1d9b35f62", "status") == "cancelling"
        assert pane.selected_batch == "batch_6f1c2a9e0b7d4e31"
        await pilot.press("down")
        assert pane.selected_batch == "batch_91d0c3aa57e24b08"
        assert "2 streams · 3 in flight" in pane.title_plain


async def test_at_80_columns_the_progress_and_counts_stay() -> None:
    app = QueuePaneApp()
    async with app.run_test(size=(80, 14)) as pilot:
        await pilot.pause()
        pane = app.query_one(QueuePane)
        assert pane.body.shown_columns == ["id", "status", "bar", "done", "age"]
        assert "no workers" in drawn_text(app.export_screenshot())


@pytest.mark.parametrize(("observed", "shown"), [
    (Observed("queue", disabled_queue(), NOW - 1, Health.LIVE), "queue disabled: batch.redis_url is not set"),
    (Observed("queue", QueueSnapshot(enabled=True, reason="redis at redis:6379 unreachable"), NOW - 1, Health.LIVE),
     "queue unreadable: redis at redis:6379 unreachable"),
    (Observed("queue", None, None, Health.DOWN, "gateway at http://gw:8080 unreachable"),
     "gateway at http://gw:8080 unreachable"),
    (Observed("queue", None, None, Health.WAITING), "waiting for the gateway"),
    (Observed("queue", QueueSnapshot(enabled=True), NOW - 1, Health.LIVE), "no streams yet"),
])
async def test_a_queue_that_cannot_be_shown_says_why(observed: Observed[QueueSnapshot], shown: str) -> None:
    app = QueuePaneApp(observed=observed)
    async with app.run_test(size=(100, 10)) as pilot:
        await pilot.pause()
        assert shown in drawn_text(app.export_screenshot())
        assert app.query_one(QueuePane).selected_batch is None


async def test_server_strings_are_drawn_as_visible_escapes() -> None:
    wall = time.time()
    hostile = queue_snapshot(wall)
    hostile.streams[0].endpoint = f"chat{CLEAR_SCREEN}"
    hostile.batches = [batch(f"batch_{RLO}x", "in_progress", 10, 1, 0, 60.0, wall, owner=f"eve{WINDOW_TITLE}",
                             endpoint=f"/x{CLEAR_SCREEN}", description=f"d{CLIPBOARD}")]
    app = QueuePaneApp(hostile, wall=wall)
    async with app.run_test(size=(160, 12)) as pilot:
        await pilot.pause()
        drawn = drawn_text(app.export_screenshot())
    assert unsafe(drawn.replace("\n", "")) == []
    for visible in ("chat␛[2J", "batch_<U+202E>x", "eve␛]0;PWNED␇", "/x␛[2J", "d␛]52;c;cGF5bG9hZA==␇"):
        assert visible in drawn


async def test_a_disabled_queue_reason_from_the_server_is_sanitized() -> None:
    observed = Observed("queue", QueueSnapshot(enabled=False, reason=f"off{CLEAR_SCREEN}"), NOW - 1, Health.LIVE)
    app = QueuePaneApp(observed=observed)
    async with app.run_test(size=(100, 8)) as pilot:
        await pilot.pause()
        drawn = drawn_text(app.export_screenshot())
    assert "queue disabled: off␛[2J" in drawn and unsafe(drawn.replace("\n", "")) == []


# ---- in the console, polled ---------------------------------------------------------------------------------------


async def test_the_console_polls_the_queue_and_keeps_the_rows_when_it_fails(api: QueueAdminAPI) -> None:
    ctx = Context(name="test", admin_url=api.url, token_env=None, engine_url=None, poll_interval_s=0.2,
                  timeout_s=1.0)
    app = create_app(ctx, down_after_s=60.0)
    async with app.run_test(size=(120, 50)) as pilot:  # tall enough for the queue's note beside nine other panes
        pane = app.query_one(QueuePane)
        await pilot.press(QUEUE_DIGIT)
        await wait_for(pilot, lambda: pane.body.row_keys, WITHIN_S, "the batches")
        assert app.active_pane == "queue" and "LIVE" in pane.title_plain
        assert ("GET", "/admin/queue") in api.requests

        api.mode = "error"
        await wait_for(pilot, lambda: "STALE" in pane.title_plain, WITHIN_S, "the queue STALE")
        assert api.error_message in pane.title_plain
        assert len(pane.body.row_keys) == 5, "the last rows stay while the source fails"

        api.mode = "disabled"
        await wait_for(pilot, lambda: "disabled" in pane.title_plain, WITHIN_S, "the queue disabled")
        assert pane.body.row_keys == [] and "batch.redis_url" in drawn_text(app.export_screenshot())
