"""The batch API: ``/v1/files`` and ``/v1/batches`` in OpenAI's shapes, so the official SDK's
``client.files`` and ``client.batches`` work unchanged against the gateway.

A plain ASGI callable like the data plane (these paths are few and cold; no framework is loaded for
them). Client keys apply: a key sees only its own files and batches (another key's are answered 404,
as if they did not exist); in open mode nothing has an owner. The work itself lives in
:mod:`services.batch`; this module speaks HTTP and supplies the gateway's own request checks to the
input file's validation (:func:`services.batch.validate.parse_input`), which runs in a thread so that
a 50,000-line file does not hold up the completion path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from redis.exceptions import RedisError

from services.batch.formats import ENDPOINTS, FINAL_STATUSES
from services.batch.multipart import FormError, parse_form
from services.batch.store import BatchStore, QueueFull
from services.batch.validate import BodyRefused, InvalidFile, parse_input
from services.gateway.control import ControlPlane
from services.gateway.errors import ClientGone, RequestError, error_body
from services.gateway.intake import loads_strict, parse_request, read_limited
from services.gateway.keys import ClientKey
from services.gateway.metrics import GatewayMetrics
from services.gateway.runtime import Gateway

log = logging.getLogger("switchboard.gateway.batch")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, bytes, bytes]  # status, body, content type

JSON = b"application/json"
JSON_BODY_LIMIT = 64 * 1024  # POST /v1/batches takes a few ids and the metadata
FORM_OVERHEAD = 64 * 1024  # multipart headers and the purpose field around the file
UPLOAD_TIMEOUT_S = 300.0  # a large file on a slow link; JSON bodies keep limits.body_read_timeout_s
METADATA_KEYS, METADATA_KEY_LEN, METADATA_VALUE_LEN = 16, 64, 512  # OpenAI's limits
QUEUE_SCRAPE_TIMEOUT_S = 2.0


def _json(status: int, value: Any) -> Answer:
    return status, json.dumps(value).encode(), JSON


def not_found(what: str, ident: str) -> RequestError:
    return RequestError(404, f"No such {what}: '{ident[:100]}'", code="not_found")


class BatchAPI:
    def __init__(self, gateway: Gateway, control: ControlPlane) -> None:
        self.gw = gateway
        self.control = control
        self.store: BatchStore | None = gateway.batch_store

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        extra: list[tuple[bytes, bytes]] = []
        try:
            if self.store is None:
                raise RequestError(404, "the batch API is not enabled on this gateway (set batch.redis_url)",
                                   code="batch_not_enabled")
            status, body, content_type = await self._route(self.store, scope, receive)
        except RequestError as exc:
            status, body, content_type, extra = exc.status, exc.body(), JSON, exc.headers()
        except ClientGone:
            return
        except (RedisError, OSError) as exc:
            log.warning("batch store unavailable: %s", type(exc).__name__)
            status, body, content_type = 503, error_body(503, "the batch store (Redis) is unavailable; retry "
                                                              "shortly", code="batch_store_unavailable"), JSON
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                                *extra]})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, store: BatchStore, scope: dict[str, Any], receive: Receive) -> Answer:
        method = scope["method"]
        parts = scope["path"].rstrip("/").split("/")[2:]  # "/v1/files/x/content" -> ["files", "x", "content"]
        headers = dict(scope["headers"])
        key = self.gw.access.authenticate(headers.get(b"authorization"))
        owner = key.id if key is not None else ""
        kind, rest = parts[0], parts[1:]
        if kind == "files":
            if not rest and method == "POST":
                body = await read_limited(receive, store.settings.max_file_bytes + FORM_OVERHEAD, UPLOAD_TIMEOUT_S)
                return await self._upload(store, key, headers.get(b"content-type", b"").decode("latin-1"), body)
            if len(rest) == 1 and method == "GET":
                return await self._file(store, rest[0], owner)
            if len(rest) == 1 and method == "DELETE":
                return await self._delete_file(store, rest[0], owner)
            if len(rest) == 2 and rest[1] == "content" and method == "GET":
                return await self._file_content(store, rest[0], owner)
        elif kind == "batches":
            if not rest and method == "POST":
                body = await read_limited(receive, JSON_BODY_LIMIT, self.gw.config.limits.body_read_timeout_s)
                return await self._create(store, key, body)
            if not rest and method == "GET":
                return await self._list(store, owner, scope.get("query_string", b""))
            if len(rest) == 1 and method == "GET":
                return await self._batch(store, rest[0], owner)
            if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
                return await self._cancel(store, rest[0], owner)
        raise RequestError(404, f"{method} {scope['path'][:200]} is not served here", code="not_found")

    # ---- files -----------------------------------------------------------------------------------

    def _body_check(self, key: ClientKey | None) -> Callable[[str, str], None]:
        """The gateway's own checks of a request body (those of a live request), and the key's routes."""
        routes = self.gw.config.routes

        def check(url: str, encoded: str) -> None:
            try:
                payload = parse_request(ENDPOINTS[url], encoded.encode(), routes)  # type: ignore[arg-type]
            except RequestError as exc:
                raise BodyRefused(exc.message) from None
            if key is not None and not key.allows_route(payload["model"]):
                raise BodyRefused(f"client key '{key.name}' may not use route '{payload['model']}'; its routes are: "
                                  f"{', '.join(key.routes)}")

        return check

    async def _validate(self, key: ClientKey | None, content: bytes, endpoint: str | None, file_id: str | None,
                        store: BatchStore) -> tuple[str, list]:
        try:
            return await asyncio.to_thread(parse_input, content, endpoint=endpoint,
                                           max_lines=store.settings.max_lines, check_body=self._body_check(key))
        except InvalidFile as exc:
            if file_id is None:  # at upload
                raise RequestError(400, f"{exc}; the file was not stored", code="invalid_batch_input",
                                   param="file") from None
            raise RequestError(400, f"input file {file_id}: {exc}; nothing was queued", code="invalid_batch_input",
                               param="input_file_id") from None

    async def _upload(self, store: BatchStore, key: ClientKey | None, content_type: str, body: bytes) -> Answer:
        try:
            form = parse_form(content_type, body)
        except FormError as exc:
            raise RequestError(400, str(exc)) from None
        purpose = form.get("purpose")
        if purpose is None or purpose.data != b"batch":
            shown = purpose.data[:40].decode("utf-8", "replace") if purpose is not None else None
            raise RequestError(400, f"'purpose' must be \"batch\" (the only purpose served here), not {shown!r}",
                               param="purpose")
        upload = form.get("file")
        if upload is None:
            raise RequestError(400, "the form has no 'file' field", param="file")
        limit = store.settings.max_file_bytes
        if len(upload.data) > limit:
            raise RequestError(413, f"file larger than {limit} bytes (batch.max_file_bytes)",
                               code="file_too_large", param="file")
        await self._validate(key, upload.data, None, None, store)
        filename = (upload.filename or "batch.jsonl")[:255]
        created = await store.files.create(upload.data, filename=filename, purpose="batch",
                                           owner=key.id if key is not None else "")
        return _json(200, created)

    async def _file(self, store: BatchStore, file_id: str, owner: str) -> Answer:
        found = await store.files.get(file_id, owner)
        if found is None:
            raise not_found("file", file_id)
        return _json(200, found)

    async def _delete_file(self, store: BatchStore, file_id: str, owner: str) -> Answer:
        if not await store.files.delete(file_id, owner):
            raise not_found("file", file_id)
        return _json(200, {"id": file_id, "object": "file", "deleted": True})

    async def _file_content(self, store: BatchStore, file_id: str, owner: str) -> Answer:
        content = await store.files.content(file_id, owner)
        if content is None:
            raise not_found("file", file_id)
        return 200, content, b"application/jsonl"

    # ---- batches ---------------------------------------------------------------------------------

    async def _create(self, store: BatchStore, key: ClientKey | None, raw: bytes) -> Answer:
        request = loads_strict(raw)
        if not isinstance(request, dict):
            raise RequestError(400, "request body must be a JSON object")
        file_id = request.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise RequestError(400, "'input_file_id' is required", param="input_file_id")
        endpoint = request.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise RequestError(400, f"'endpoint' must be one of {', '.join(ENDPOINTS)}, not "
                               f"{json.dumps(endpoint)[:80]}", param="endpoint")
        window = request.get("completion_window", "24h")
        if window != "24h":
            raise RequestError(400, f"'completion_window' must be \"24h\", not {json.dumps(window)[:40]}",
                               param="completion_window")
        metadata = _metadata(request.get("metadata"))
        owner = key.id if key is not None else ""
        meta = await store.files.meta(file_id)
        if meta is None or meta.get("owner", "") != owner:
            raise not_found("file", file_id)
        if meta.get("purpose") != "batch":
            raise RequestError(400, f"file {file_id} has purpose '{meta.get('purpose')}'; a batch needs a file "
                               "uploaded with purpose \"batch\"", param="input_file_id")
        content = await store.files.content(file_id, owner)
        if content is None:
            raise not_found("file", file_id)
        _, requests = await self._validate(key, content, endpoint, file_id, store)
        try:
            batch = await store.enqueue(owner=owner, owner_name=key.name if key is not None else None,
                                        input_file_id=file_id, endpoint=endpoint, requests=requests,
                                        completion_window=window, metadata=metadata)
        except QueueFull as exc:
            raise RequestError(429, f"{exc}; nothing was queued", code="batch_queue_full",
                               error_type="invalid_request_error") from None
        return _json(200, batch)

    async def _batch(self, store: BatchStore, batch_id: str, owner: str) -> Answer:
        batch = await store.get_batch(batch_id, owner)
        if batch is None:
            raise not_found("batch", batch_id)
        return _json(200, batch)

    async def _list(self, store: BatchStore, owner: str, query_string: bytes) -> Answer:
        query = parse_qs(query_string.decode("latin-1"))
        after = query.get("after", [None])[0]
        raw_limit = query.get("limit", ["20"])[0]
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            raise RequestError(400, f"'limit' must be an integer from 1 to 100, not {raw_limit[:20]!r}",
                               param="limit")
        batches, has_more = await store.list_batches(owner, after=after, limit=int(raw_limit))
        return _json(200, {"object": "list", "data": batches, "first_id": batches[0]["id"] if batches else None,
                           "last_id": batches[-1]["id"] if batches else None, "has_more": has_more})

    async def _cancel(self, store: BatchStore, batch_id: str, owner: str) -> Answer:
        batch = await store.get_batch(batch_id, owner)
        if batch is None:
            raise not_found("batch", batch_id)
        if batch["status"] in FINAL_STATUSES - {"cancelled"}:
            raise RequestError(409, f"batch {batch_id} is {batch['status']} and cannot be cancelled",
                               code="batch_not_cancellable")
        return _json(200, await store.cancel(batch_id))

    # ---- metrics ---------------------------------------------------------------------------------

    async def publish_gauges(self) -> None:
        """Refresh the queue's gauges from Redis (called when /metrics is scraped); bounded in time, and a
        Redis that does not answer only sets ``switchboard_batch_queue_readable`` to 0."""
        if self.store is None:
            return
        metrics = self.gw.metrics
        try:
            async with asyncio.timeout(QUEUE_SCRAPE_TIMEOUT_S):
                snapshot = await self.store.queue_snapshot()
        except TimeoutError:
            metrics.batch_queue_readable.set(0)
            return
        publish_queue(metrics, snapshot)


def publish_queue(metrics: GatewayMetrics, snapshot: Any) -> None:
    metrics.batch_queue_readable.set(0 if snapshot.reason else 1)
    if snapshot.reason:
        return
    for stream in snapshot.streams:
        metrics.child("batch_queue_length", stream.endpoint).set(stream.length)
        metrics.child("batch_queue_pending", stream.endpoint).set(stream.pending)
        metrics.child("batch_queue_oldest_age", stream.endpoint).set(stream.oldest_age_s or 0)
        metrics.child("batch_queue_workers", stream.endpoint).set(len(stream.workers))
        metrics.child("batch_results_rate", stream.endpoint).set(stream.completed_per_s)
        metrics.child("batch_retries", stream.endpoint).set(stream.retries_total)
    counts = dict.fromkeys(("validating", "in_progress", "finalizing", "completed", "failed", "expired",
                            "cancelling", "cancelled"), 0)
    for batch in snapshot.batches:
        counts[batch.status] = counts.get(batch.status, 0) + 1
    for status, count in counts.items():
        metrics.child("batch_batches", status).set(count)


def _metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's metadata: up to 16 string pairs, keys up to 64 characters, values up to 512."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > METADATA_KEYS or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= METADATA_KEY_LEN and len(v) <= METADATA_VALUE_LEN
            for k, v in value.items()):
        raise RequestError(400, f"'metadata' must be an object of at most {METADATA_KEYS} string values, keys up to "
                           f"{METADATA_KEY_LEN} characters and values up to {METADATA_VALUE_LEN}", param="metadata")
    return value


def build_batch_app(gateway: Gateway, control: ControlPlane) -> BatchAPI:
    return BatchAPI(gateway, control)

