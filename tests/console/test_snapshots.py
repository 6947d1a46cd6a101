"""SVG snapshots of the console with fixed data and a frozen clock (no network, same pixels every run).

Regenerate after an intended change: ``pytest tests/console/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from tests.console.sample_data import KeysPaneApp, snapshot_app

WIDE = (120, 40)


def test_live(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=WIDE)


def test_stale_and_down(snap_compare) -> None:
    assert snap_compare(snapshot_app(feed="stale"), terminal_size=WIDE)


def test_routing_with_staged_change(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=WIDE, press=["2", "plus", "plus", "down", "minus"])


def test_readonly(snap_compare) -> None:
    assert snap_compare(snapshot_app(readonly=True), terminal_size=WIDE, press=["2"])


def test_confirm_modal_on_prod(snap_compare) -> None:
    assert snap_compare(snapshot_app(prod=True), terminal_size=WIDE, press=["2", "plus", "plus", "a"])


def test_help(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=WIDE, press=["question_mark"])


def test_80x24(snap_compare) -> None:
    assert snap_compare(snapshot_app(), terminal_size=(80, 24), press=["2", "plus"])


def test_80x24_confirm_modal(snap_compare) -> None:
    assert snap_compare(snapshot_app(prod=True), terminal_size=(80, 24), press=["2", "plus", "a"])


def test_providers_80x24(snap_compare) -> None:
    """TTFT and total latency apart; at 80 columns trend, breaker, cooldown and the EMAs give way."""
    assert snap_compare(snapshot_app(), terminal_size=(80, 24))


def test_keys_pane(snap_compare) -> None:
    assert snap_compare(KeysPaneApp(), terminal_size=(120, 12))


def test_keys_pane_80_columns(snap_compare) -> None:
    assert snap_compare(KeysPaneApp(), terminal_size=(80, 12))


def test_hostile_strings_rendered_harmless(snap_compare) -> None:
    """Escape sequences and bidi overrides in names, reasons and errors are drawn as visible escapes."""
    assert snap_compare(snapshot_app(feed="hostile"), terminal_size=WIDE)
