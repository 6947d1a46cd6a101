"""The Queue pane's view model: a ``QueueSnapshot`` (``GET /admin/queue``) as rows, pure and Textual-free.

Per stream: depth (entries not yet finished), pending (held by a worker), the oldest entry's age, the workers of the
consumer group, throughput over the last minute and retries; per batch: status, a progress bar, counts, owner and
age. Every state an operator must notice is said in words (``no workers``, ``stalled``, ``cancelling``), so colour
is never the only signal. The same rows feed ``switchboard batch list`` (console.actions.batches).
"""

from __future__ import annotations

from dataclasses import dataclass

from console.units import duration
from console.views.pods import age_text
from services.admin_api import BatchProgress, QueueSnapshot, QueueStream

BAR_WIDTH = 12
DONE, FAILED, LEFT = "█", "▒", "·"  # finished, failed, not yet: three shapes, not three colours
IN_FLIGHT = ("validating", "in_progress", "finalizing", "cancelling")
CANCELLABLE = ("validating", "in_progress")  # OpenAI's rule: a batch can be cancelled until it finalizes
THROUGHPUT_WINDOW_S = 60.0  # ``completed_per_s`` is measured over the last minute
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


@dataclass(frozen=True)
class StreamRow:
    key: str  # the endpoint: stable across refreshes
    endpoint: str
    depth: str
    pending: str
    oldest: str  # "2m05s", "-" when empty
    workers: str  # "3 (2 busy)", "none"
    throughput: str  # "12.5/s"
    retries: str
    note: str  # "no workers", "stalled", "starting", "drains in ~3m", "idle"
    alarm: bool  # the note is something to act on


@dataclass(frozen=True)
class BatchRow:
    key: str  # the batch id: what a cancel is addressed to
    id: str
    endpoint: str  # "chat" or "completions"
    status: str
    bar: str  # "[██████▒·····]  58%"
    done: str  # "580/1000"
    failed: str
    owner: str
    age: str  # kubectl's coarse age: 45s, 12m, 5h
    description: str
    in_flight: bool


@dataclass(frozen=True)
class QueueView:
    enabled: bool
    reason: str  # why the queue cannot be read ("" when it can)
    streams: tuple[StreamRow, ...]
    batches: tuple[BatchRow, ...]

    @property
    def summary(self) -> str:
        """The pane title's note: ``2 streams · 3 in flight``."""
        if not self.enabled:
            return "disabled"
        flying = sum(1 for b in self.batches if b.in_flight)
        return f"{len(self.streams)} stream{'' if len(self.streams) == 1 else 's'} · {flying} in flight"


def count(value: int) -> str:
    return f"{value:,}"


def rate(per_s: float) -> str:
    return f"{per_s:.1f}/s" if per_s < 100 else f"{per_s:,.0f}/s"


def progress_bar(total: int, completed: int, failed: int, width: int = BAR_WIDTH) -> str:
    """``[██████▒·····]  58%``: completed, then failed, then what is left; the percentage counts both as done."""
    if total <= 0:
        return f"[{LEFT * width}]    -"
    ok = round(width * min(completed, total) / total)
    bad = min(round(width * min(completed + failed, total) / total), width) - ok
    done = min(completed + failed, total)
    return f"[{DONE * ok}{FAILED * bad}{LEFT * (width - ok - bad)}] {100 * done // total:>3}%"


def _workers(stream: QueueStream) -> str:
    if not stream.workers:
        return "none"
    busy = sum(1 for w in stream.workers if w.pending > 0)
    return f"{len(stream.workers)} ({busy} busy)"


def _note(stream: QueueStream) -> tuple[str, bool]:
    if stream.length == 0:
        return "idle", False
    if not stream.workers:
        return "no workers", True
    if stream.completed_per_s <= 0:  # nothing finished in the throughput's minute: stalled, unless that is new
        young = stream.oldest_age_s is not None and stream.oldest_age_s < THROUGHPUT_WINDOW_S
        return ("starting", False) if young else ("stalled", True)
    return f"drains in ~{duration(stream.length / stream.completed_per_s)}", False


def stream_row(stream: QueueStream) -> StreamRow:
    note, alarm = _note(stream)
    return StreamRow(key=stream.endpoint, endpoint=stream.endpoint, depth=count(stream.length),
                     pending=count(stream.pending), oldest=duration(stream.oldest_age_s), workers=_workers(stream),
                     throughput=rate(stream.completed_per_s), retries=count(stream.retries_total), note=note,
                     alarm=alarm)


def batch_row(batch: BatchProgress, wall_time: float) -> BatchRow:
    return BatchRow(key=batch.id, id=batch.id, endpoint=ENDPOINTS.get(batch.endpoint, batch.endpoint),
                    status=batch.status, bar=progress_bar(batch.total, batch.completed, batch.failed),
                    done=f"{count(batch.completed + batch.failed)}/{count(batch.total)}", failed=count(batch.failed),
                    owner=batch.owner or "-", age=age_text(wall_time - batch.created_at),
                    description=batch.description or "", in_flight=batch.status in IN_FLIGHT)


def batch_order(batch: BatchProgress) -> tuple[bool, float]:
    """Batches in flight first, newest first within each group."""
    return batch.status not in IN_FLIGHT, -batch.created_at


def queue_view(snapshot: QueueSnapshot, wall_time: float) -> QueueView:
    if not snapshot.enabled:
        return QueueView(False, snapshot.reason or "the batch queue is not enabled (batch.redis_url)", (), ())
    streams = tuple(stream_row(s) for s in sorted(snapshot.streams, key=lambda s: s.endpoint))
    batches = tuple(batch_row(b, wall_time) for b in sorted(snapshot.batches, key=batch_order))
    return QueueView(True, snapshot.reason or "", streams, batches)
