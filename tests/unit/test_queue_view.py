"""The Queue pane's view model: streams and batches as rows, every alarm in words, batches in flight first."""

from __future__ import annotations

from console.views.queue import progress_bar, queue_view
from services.admin_api import QueueSnapshot, QueueStream, QueueWorker
from tests.console.queue_data import HOUR, MINUTE, batch, disabled_queue, queue_snapshot

WALL = 1_795_730_000.0


def stream(endpoint: str = "chat", length: int = 10, workers: int = 1, rate: float = 2.0) -> QueueStream:
    return QueueStream(endpoint=endpoint, stream=f"p:stream:{endpoint}", length=length, pending=min(length, 3),
                       oldest_age_s=30.0 if length else None, completed_per_s=rate, retries_total=1,
                       workers=[QueueWorker(name=f"w{n}", pending=1 if n == 0 else 0, idle_s=1.0)
                                for n in range(workers)])


def test_progress_bar_shows_done_failed_and_left_as_different_characters() -> None:
    assert progress_bar(100, 50, 25, width=8) == "[████▒▒··]  75%"
    assert progress_bar(100, 0, 0, width=8) == "[········]   0%"
    assert progress_bar(10, 10, 0, width=8) == "[████████] 100%"
    assert progress_bar(0, 0, 0, width=8) == "[········]    -"  # an empty (or failed at validation) batch


def test_progress_bar_never_overflows_on_counts_past_the_total() -> None:
    """A request done twice is stored once, but a racing snapshot may still count past the total."""
    assert progress_bar(10, 9, 5, width=10) == "[█████████▒] 100%"


def test_streams_name_what_needs_attention_in_words() -> None:
    snapshot = QueueSnapshot(enabled=True, streams=[
        stream("chat", length=100, workers=2, rate=10.0), stream("completions", length=5, workers=0, rate=0.0),
        stream("embeddings", length=7, workers=1, rate=0.0).model_copy(update={"oldest_age_s": 75.0}),
        stream("legacy", length=0, workers=1, rate=0.0)])
    rows = {row.key: row for row in queue_view(snapshot, WALL).streams}
    assert (rows["chat"].note, rows["chat"].alarm) == ("drains in ~10s", False)
    assert (rows["completions"].note, rows["completions"].alarm) == ("no workers", True)
    assert (rows["embeddings"].note, rows["embeddings"].alarm) == ("stalled", True)
    assert (rows["legacy"].note, rows["legacy"].alarm) == ("idle", False)
    assert rows["chat"].workers == "2 (1 busy)" and rows["completions"].workers == "none"
    assert rows["chat"].oldest == "30s" and rows["legacy"].oldest == "-"
    assert rows["chat"].throughput == "10.0/s"


def test_a_stream_younger_than_the_throughput_window_is_starting_not_stalled() -> None:
    young = stream("chat", length=5, workers=1, rate=0.0).model_copy(update={"oldest_age_s": 12.0})
    [row] = queue_view(QueueSnapshot(enabled=True, streams=[young]), WALL).streams
    assert (row.note, row.alarm) == ("starting", False)


def test_batches_in_flight_come_first_newest_first() -> None:
    view = queue_view(queue_snapshot(WALL), WALL)
    assert [b.status for b in view.batches] == ["in_progress", "in_progress", "cancelling", "completed", "failed"]
    assert [b.age for b in view.batches] == ["12m", "15m", "40m", "2h", "3h"]
    assert view.summary == "2 streams · 3 in flight"


def test_a_batch_row_carries_counts_owner_and_endpoint() -> None:
    snapshot = QueueSnapshot(enabled=True, batches=[
        batch("batch_a", "in_progress", 2000, 1104, 12, 5 * MINUTE, WALL, description="evals"),
        batch("batch_b", "completed", 10, 10, 0, HOUR, WALL, owner=None, endpoint="/v1/completions")])
    first, second = queue_view(snapshot, WALL).batches
    assert (first.done, first.failed, first.owner, first.endpoint, first.description) == (
        "1,116/2,000", "12", "nightly-evals", "chat", "evals")
    assert first.bar.endswith(" 55%") and first.in_flight
    assert (second.owner, second.endpoint, second.in_flight) == ("-", "completions", False)


def test_a_disabled_queue_says_why() -> None:
    view = queue_view(disabled_queue(), WALL)
    assert not view.enabled and view.reason == "batch.redis_url is not set in the gateway config"
    assert view.summary == "disabled" and view.streams == () and view.batches == ()
    assert "batch.redis_url" in queue_view(QueueSnapshot(enabled=False), WALL).reason


def test_an_enabled_queue_that_cannot_be_read_keeps_the_reason() -> None:
    view = queue_view(QueueSnapshot(enabled=True, reason="redis at redis:6379 unreachable"), WALL)
    assert view.enabled and view.reason == "redis at redis:6379 unreachable"
