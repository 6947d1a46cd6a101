"""The batch API: ``/v1/files`` and ``/v1/batches`` in OpenAI's shapes (placeholder until the batch store lands)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.gateway.control import ControlPlane
from services.gateway.errors import error_body
from services.gateway.runtime import Gateway

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


def build_batch_app(gateway: Gateway, control: ControlPlane) -> ASGIApp:
    async def not_enabled(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = error_body(404, "the batch API is not enabled on this gateway (set batch.redis_url)")
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return not_enabled
