"""Audit: the latest admin changes and the console's cluster actions, newest first: time, operator, action,
target, reason, and what changed (console/views/audit.py words it)."""

from __future__ import annotations

from textual.app import ComposeResult

from console.panes.base import Pane
from console.panes.format import utc_time
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from console.text import safe_text
from console.views.audit import describe
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


def _row(entry: AuditRecord) -> Row:
    action_style = ACTION_STYLE.get(entry.action, "")
    cells = (
        utc_time(entry.time),
        safe_text(entry.operator or entry.actor),
        safe_text(entry.action, style=action_style),
        safe_text(entry.target),
        safe_text(entry.reason),
        safe_text(describe(entry)),
    )
    return f"{entry.kind}:{entry.version}:{entry.time!r}", cells  # an external entry shares its version
