"""Audit: the latest admin changes, newest first: time, operator, action, target, reason, before -> after."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult

from console.panes.base import Pane
from console.panes.format import utc_time
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from console.text import safe_text
from services.admin_api import AuditPage, AuditRecord

COLUMNS = (
    ("Time UTC", "time", 8),
    ("Operator", "operator", 16),
    ("Action", "action", 11),
    ("Target", "target", 16),
    ("Reason", "reason", 22),
    ("Change", "change", 28),
)

ACTION_STYLE = {"drain": "magenta", "undrain": "green", "set_weights": "cyan", "create_key": "green",
                "enable_key": "green", "disable_key": "magenta", "delete_key": "red"}


class AuditPane(Pane):
    TITLE = "Audit"

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="audit-table")

    @property
    def body(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    def show(self, observed: Observed[AuditPage], now: float) -> None:
        self.show_health(observed, now)
        page = observed.data
        if not self.changed(page, observed.error):
            return
        if page is None:
            self.body.show_empty("waiting for the gateway" if observed.error is None else observed.error)
        elif not page.entries:
            self.body.show_empty("no changes yet")
        else:
            self.body.sync([_row(entry) for entry in page.entries])


def change(before: Any, after: Any) -> str:
    """``a 50->70, b 50->30`` for weights, ``drained false->true`` for drains, ``created key 'svc' (paid)``
    for a record that appears (``deleted ...`` when it goes), else ``before -> after``."""
    if before is None and isinstance(after, dict):
        return f"created {_record(after)}"
    if after is None and isinstance(before, dict):
        return f"deleted {_record(before)}"
    if isinstance(before, dict) and isinstance(after, dict):
        keys = list(dict.fromkeys([*before, *after]))
        parts = [f"{k} {_v(before.get(k))}->{_v(after.get(k))}" for k in keys if before.get(k) != after.get(k)]
        return ", ".join(parts) or "no change"
    return f"{_v(before)} -> {_v(after)}"


def _record(record: dict[str, Any]) -> str:
    name = record.get("name")
    if name is None:
        return "record"
    return f"'{name}'" + (f" ({record['tier']})" if "tier" in record else "")


def _v(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


def _row(entry: AuditRecord) -> Row:
    action_style = ACTION_STYLE.get(entry.action, "")
    cells = (
        utc_time(entry.time),
        safe_text(entry.operator or entry.actor),
        safe_text(entry.action, style=action_style),
        safe_text(entry.target),
        safe_text(entry.reason),
        safe_text(change(entry.before, entry.after)),
    )
    return f"v{entry.version}", cells
