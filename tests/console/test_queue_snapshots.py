"""SVG snapshots of the Queue pane: in the console at 80x24 (the pane jumped to) with its cancel dialog on a prod
context, and alone at 120 columns and disabled. The batches' ages sit past whole minutes (tests/console/queue_data.py),
so the coarse ages drawn are the same every run.

Regenerate after an intended change: ``pytest tests/console/test_queue_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from console.app import PANE_IDS
from console.sources.poller import Health, Observed
from tests.console.queue_data import NOW, QueuePaneApp, disabled_queue
from tests.console.sample_data import snapshot_app

QUEUE_DIGIT = str(PANE_IDS.index("queue") + 1)


def test_console_80x24_queue(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=(80, 24), press=[QUEUE_DIGIT])


def test_console_120x40_queue(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=(120, 40), press=[QUEUE_DIGIT])


def test_cancel_confirm_on_prod_80x24(snap_compare) -> None:
    assert snap_compare(snapshot_app(prod=True), terminal_size=(80, 24), press=[QUEUE_DIGIT, "C"])


def test_queue_pane_wide(snap_compare) -> None:
    assert snap_compare(QueuePaneApp(), terminal_size=(160, 14))


def test_queue_pane_disabled_80_columns(snap_compare) -> None:
    observed = Observed("queue", disabled_queue(), NOW - 1.2, Health.LIVE)
    assert snap_compare(QueuePaneApp(observed=observed), terminal_size=(80, 8))
