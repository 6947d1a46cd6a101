"""Fixed batch-queue snapshots (``GET /admin/queue``) for the Queue pane's tests and SVG snapshots, the pane alone
in an app, and a loopback admin API that serves them (``QueueAdminAPI``).

Batch ages are measured against the wall clock the app reads, so ``queue_snapshot(wall)`` places the batches
relative to ``wall``; the ages sit a few seconds past a whole minute or hour, so the coarse age drawn
(``12m``, ``2h``) is the same however long the test takes to render.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import unquote

from textual.app import App, ComposeResult

from console.panes.queue import QueuePane
from console.sources.poller import Health, Observed
from services.admin_api import OPERATOR_HEADER, BatchProgress, QueueSnapshot, QueueStream, QueueWorker
from tests.loopback import LoopbackServer, QuietHandler

MINUTE, HOUR = 60.0, 3600.0
NOW = 10_000.0  # the frozen monotonic clock (as in sample_data)
SLACK_S = 5.0  # past the whole minute: a slow render still draws the same coarse age


def batch(batch_id: str, status: str, total: int, completed: int, failed: int, age_s: float, wall: float,
          **overrides: Any) -> BatchProgress:
    values: dict[str, Any] = {"id": batch_id, "endpoint": "/v1/chat/completions", "status": status, "total": total,
                              "completed": completed, "failed": failed, "created_at": wall - age_s - SLACK_S,
                              "owner": "nightly-evals", "description": None}
    values.update(overrides)
    return BatchProgress(**values)


def queue_snapshot(wall: float) -> QueueSnapshot:
    """Chat busy with three workers, completions backed up with none; batches running, cancelling and finished."""
    chat = QueueStream(endpoint="chat", stream="switchboard:batch:stream:chat", length=1204, pending=24,
                       oldest_age_s=125.0, completed_per_s=18.4, retries_total=37, workers=[
                           QueueWorker(name="worker-7d9f-a", pending=8, idle_s=0.2),
                           QueueWorker(name="worker-7d9f-b", pending=16, idle_s=0.4),
                           QueueWorker(name="worker-7d9f-c", pending=0, idle_s=41.0)])
    completions = QueueStream(endpoint="completions", stream="switchboard:batch:stream:completions", length=300,
                              pending=0, oldest_age_s=912.0, completed_per_s=0.0, retries_total=0, workers=[])
    return QueueSnapshot(enabled=True, streams=[chat, completions], batches=[
        batch("batch_6f1c2a9e0b7d4e31", "in_progress", 2000, 1104, 12, 12 * MINUTE, wall,
              description="nightly eval: support answers"),
        batch("batch_91d0c3aa57e24b08", "in_progress", 300, 0, 0, 15 * MINUTE, wall, owner="search-prod",
              endpoint="/v1/completions", description="embeddings back-fill"),
        batch("batch_0a4e77c1d9b35f62", "cancelling", 500, 210, 3, 40 * MINUTE, wall, owner=None),
        batch("batch_c2b85e0f13a94d7e", "completed", 1000, 988, 12, 2 * HOUR, wall,
              description="weekly summaries"),
        batch("batch_5d3fa8b2e61c0497", "failed", 0, 0, 0, 3 * HOUR, wall, owner="support-bot"),
    ])


def openai_batch(progress: BatchProgress) -> dict[str, Any]:
    """The Batch object the admin API answers for one batch (OpenAI's shape; the admin API adds ``owner_name``)."""
    return {"id": progress.id, "object": "batch", "endpoint": progress.endpoint, "errors": None,
            "input_file_id": "file-input", "completion_window": "24h", "status": progress.status,
            "output_file_id": None, "error_file_id": None, "created_at": int(progress.created_at),
            "request_counts": {"total": progress.total, "completed": progress.completed, "failed": progress.failed},
            "metadata": {"description": progress.description} if progress.description else None}


def disabled_queue() -> QueueSnapshot:
    return QueueSnapshot(enabled=False, reason="batch.redis_url is not set in the gateway config")


class QueuePaneApp(App[None]):
    """The Queue pane alone, fed once with ``snapshot`` (or ``observed`` as is), the batches' cursor focused."""

    def __init__(self, snapshot: QueueSnapshot | None = None, observed: Observed[Any] | None = None,
                 wall: float | None = None) -> None:
        super().__init__()
        self.wall = time.time() if wall is None else wall
        self.observed = observed or Observed("queue", snapshot or queue_snapshot(self.wall), NOW - 1.2, Health.LIVE)

    def compose(self) -> ComposeResult:
        yield QueuePane("9", id="queue")

    def on_mount(self) -> None:
        pane = self.query_one(QueuePane)
        pane.show(self.observed, NOW, self.wall)
        pane.body.focus()


class QueueAdminAPI(LoopbackServer):
    """The gateway's queue admin API on loopback, speaking its JSON: ``GET /admin/queue``, ``GET /admin/batches``,
    ``GET /admin/batches/{id}`` (OpenAI's Batch objects with ``owner_name``) and ``POST /admin/batches/{id}/cancel``
    (the batch turns ``cancelling``, a finished one is a 409; each cancel is kept with its body and operator header
    in ``cancels``). ``mode``: "ok", "disabled", "error" (503 with
    ``error_message``) or "absent" (404 everywhere: a gateway from before the queue). Other paths answer 404."""

    def __init__(self, snapshot: QueueSnapshot | None = None) -> None:
        self.snapshot = snapshot or queue_snapshot(time.time())
        self.mode = "ok"
        self.error_message = "redis at redis:6379 unreachable"
        self.cancels: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        lock = threading.Lock()
        api = self

        class Handler(QuietHandler):
            def _refuse(self) -> bool:
                if api.mode == "absent":
                    self.send_json(404, {"error": {"message": "Not Found", "code": "not_found"}})
                elif api.mode == "error":
                    self.send_json(503, {"error": {"message": api.error_message, "type": "server_error"}})
                else:
                    return False
                return True

            def _batch(self, batch_id: str) -> BatchProgress | None:
                return next((b for b in api.snapshot.batches if b.id == batch_id), None)

            def do_GET(self) -> None:
                path = unquote(self.path.split("?", 1)[0])
                with lock:
                    api.requests.append(("GET", path))
                if not path.startswith(("/admin/queue", "/admin/batches")):
                    self.send_json(404, {"error": {"message": "Not Found", "code": "not_found"}})
                elif self._refuse():
                    return
                elif path == "/admin/queue":
                    body = disabled_queue() if api.mode == "disabled" else api.snapshot
                    self.send_json(200, body.model_dump(mode="json"))
                elif path == "/admin/batches":
                    data = [openai_batch(b) | {"owner_name": b.owner} for b in api.snapshot.batches]
                    self.send_json(200, {"object": "list", "data": data, "has_more": False})
                elif (found := self._batch(path.removeprefix("/admin/batches/"))) is not None:
                    self.send_json(200, openai_batch(found) | {"owner_name": found.owner})
                else:
                    self.send_json(404, {"error": {"message": f"no batch {path}", "code": "not_found"}})

            def do_POST(self) -> None:
                path = unquote(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                with lock:
                    api.requests.append(("POST", path))
                if self._refuse():
                    return
                batch_id = path.removeprefix("/admin/batches/").removesuffix("/cancel")
                found = self._batch(batch_id) if path.endswith("/cancel") else None
                if found is None:
                    self.send_json(404, {"error": {"message": f"no batch {batch_id}", "code": "not_found"}})
                    return
                if found.status in ("completed", "failed", "expired"):  # the gateway's rule, with the batch as is
                    self.send_json(409, {"error": {"message": f"batch {batch_id} is {found.status} and cannot be "
                                                              "cancelled", "code": "refused"},
                                         "current": openai_batch(found)})
                    return
                with lock:
                    api.cancels.append({"batch": batch_id, "body": body,
                                        "operator": self.headers.get(OPERATOR_HEADER)})
                    cancelled = found.model_copy(update={"status": "cancelling"})
                    api.snapshot = api.snapshot.model_copy(update={
                        "batches": [cancelled if b.id == batch_id else b for b in api.snapshot.batches]})
                self.send_json(200, openai_batch(cancelled))  # the gateway answers the store's object: no owner_name

        super().__init__(Handler)
