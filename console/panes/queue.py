"""Queue: the batch queue's streams (depth, pending, oldest age, workers, throughput) above the batches with their
progress bars; the batch under the cursor is the one the cancel key acts on. The rows come from
console.views.queue; this module only draws them (every cell passes the table's sanitizer)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from console.panes.base import Pane
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from console.text import safe_text
from console.views.queue import BatchRow, QueueView, StreamRow, queue_view
from services.admin_api import QueueSnapshot

STREAM_COLUMNS = (
    ("Stream", "endpoint", 11),
    ("Depth", "depth", 7),
    ("Pending", "pending", 7),
    ("Oldest", "oldest", 6),
    ("Workers", "workers", 10),
    ("Done/s", "rate", 7),
    ("Retries", "retries", 7),
    ("State", "note", 16),
)
STREAM_DROPS = ("retries",)
BATCH_COLUMNS = (
    ("Batch", "id", 22),
    ("Status", "status", 11),
    ("Progress", "bar", 19),
    ("Done", "done", 11),
    ("Failed", "failed", 6),
    ("Owner", "owner", 14),
    ("Age", "age", 5),
    ("Endpoint", "endpoint", 11),
    ("Description", "description", 24),
)
BATCH_DROPS = ("description", "endpoint", "owner", "failed")
STATUS_STYLE = {"in_progress": "cyan", "validating": "cyan", "finalizing": "cyan", "cancelling": "yellow",
                "completed": "green", "cancelled": "dim", "expired": "yellow", "failed": "bold red"}


class QueuePane(Pane):
    TITLE = "Queue"

    DEFAULT_CSS = """
    QueuePane > #queue-streams { height: 2; }
    """

    def compose(self) -> ComposeResult:
        streams = KeyedTable(STREAM_COLUMNS, id="queue-streams", optional=STREAM_DROPS)
        streams.can_focus = False  # the batches take the cursor: they are what an action is about
        yield streams
        yield KeyedTable(BATCH_COLUMNS, id="queue-batches", optional=BATCH_DROPS)

    @property
    def streams(self) -> KeyedTable:
        return self.query_one("#queue-streams", KeyedTable)

    @property
    def body(self) -> KeyedTable:
        return self.query_one("#queue-batches", KeyedTable)

    @property
    def selected_batch(self) -> str | None:
        """The id of the batch under the cursor."""
        return self.body.cursor_key

    def show(self, observed: Observed[QueueSnapshot], now: float, wall_time: float) -> None:
        """``now``: the monotonic clock data ages are measured with; ``wall_time`` (Unix): the batches' ages."""
        snapshot = observed.data
        view = queue_view(snapshot, wall_time) if snapshot is not None else None
        self.show_health(observed, now, view.summary if view is not None else "")
        if not self.changed(snapshot, observed.error, int(wall_time)):
            return
        if view is None:
            self._streams_note("waiting for the gateway" if observed.error is None else observed.error)
            self.body.show_empty("")
        elif not view.enabled:
            self._streams_note(f"queue disabled: {view.reason}")
            self.body.show_empty("")
        else:
            self._show_view(view)

    def _streams_note(self, note: str) -> None:
        self.streams.styles.height = 2
        self.streams.show_empty(note)

    def _show_view(self, view: QueueView) -> None:
        if view.reason:
            self._streams_note(f"queue unreadable: {view.reason}")
        elif view.streams:
            self.streams.styles.height = len(view.streams) + 1
            self.streams.sync([stream_cells(row) for row in view.streams])
        else:
            self._streams_note("no streams yet (the first batch creates them)")
        if view.batches:
            self.body.sync([batch_cells(row) for row in view.batches])
        else:
            self.body.show_empty("no batches in the last hour")


def stream_cells(row: StreamRow) -> Row:
    return row.key, (safe_text(row.endpoint, style="bold"), row.depth, row.pending, row.oldest, row.workers,
                     row.throughput, row.retries, Text(row.note, style="bold red" if row.alarm else "dim"))


def batch_cells(row: BatchRow) -> Row:
    style = STATUS_STYLE.get(row.status, "")
    return row.key, (safe_text(row.id, style="bold" if row.in_flight else "dim"), Text(row.status, style=style),
                     Text(row.bar, style=style), row.done, row.failed, row.owner, row.age, row.endpoint,
                     row.description)
