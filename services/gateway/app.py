"""The gateway's ASGI application.

A plain ASGI callable rather than a framework: the data plane is two POST paths on the hot path,
and a framework's request objects and middleware stack cost more than all of routing and health.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from services.gateway.access import BATCH_KEY_HEADER
from services.gateway.auth import Principal, TokenSet
from services.gateway.control import ControlPlane
from services.gateway.errors import ClientGone, ClientStalled, RequestError, error_body, error_object
from services.gateway.intake import overloaded, parse_request, read_body
from services.gateway.keys import ClientKey
from services.gateway.metrics import GatewayMetrics, status_class
from services.gateway.providers.base import Endpoint
from services.gateway.proxy import routing_context, serve_complete, serve_stream
from services.gateway.routing import NoTargetError
from services.gateway.runtime import Gateway

log = logging.getLogger("switchboard.gateway")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

COMPLETION_PATHS: dict[str, Endpoint] = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
JSON = b"application/json"


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = JSON,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *(headers or ())]})
    await send({"type": "http.response.body", "body": body})


ADMIN_PREFIX = "/admin"
BATCH_PREFIXES = ("/v1/files", "/v1/batches")
SESSION_HEADER = "x-switchboard-session"  # keeps a conversation on one arm of a canary release
PRIORITY_HEADER = "x-switchboard-priority"  # "batch": yields to interactive traffic near the concurrency limit


def yielding(metrics: GatewayMetrics) -> RequestError:
    """The refusal for a batch request while interactive traffic fills the gateway: the worker waits it out."""
    metrics.child("refused", "yielding_to_interactive").inc()
    return RequestError(503, "batch requests yield to interactive traffic while the gateway is busy; retry shortly",
                        code="yielding_to_interactive", retry_after_s=1)


class GatewayApp:
    """The data plane, health and metrics; the admin API too unless it has its own listener."""

    def __init__(self, gateway: Gateway, control: ControlPlane, tokens: TokenSet, serve_admin: bool = True) -> None:
        from services.gateway.admin import build_admin_app
        from services.gateway.batch_api import build_batch_app

        self.gw = gateway
        self.control = control
        self.tokens = tokens
        self.admin = build_admin_app(control, tokens)
        self.batch = build_batch_app(gateway, control)
        self.serve_admin = serve_admin
        self._routes: dict[tuple[str, str], Callable[[], Awaitable[tuple[int, bytes, bytes]]]] = {
            ("GET", "/health"): self._health,
            ("GET", "/ready"): self._ready,
            ("GET", "/metrics"): self._metrics,
        }

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        endpoint = COMPLETION_PATHS.get(path)
        if endpoint is not None and method == "POST":
            await self._completion(endpoint, scope, receive, send)
            return
        if path.startswith(BATCH_PREFIXES):
            await self.batch(scope, receive, send)
            return
        if self.serve_admin and path.startswith(ADMIN_PREFIX):
            await self.admin(scope, receive, send)
            return
        if path == "/v1/models" and method == "GET":
            await self._models(scope, send)
            return
        handler = self._routes.get((method, path))
        if handler is None:
            known = endpoint is not None or path == "/v1/models" or any(p == path for _, p in self._routes)
            status = 405 if known else 404
            await _respond(send, status, error_body(status, f"{method} {path} is not served here"))
            return
        status, body, content_type = await handler()
        await _respond(send, status, body, content_type)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.gw.start_providers()
                await self.control.start()
                await self.gw.meter.start(list(self.gw.access.ring.by_id.values()))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gw.meter.stop()
                await self.control.stop()
                await self.gw.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _completion(self, endpoint: Endpoint, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = perf_counter()
        gw = self.gw
        route = "unknown"
        status = 500
        headers, authorization = _request_headers(scope)
        refusal = None
        if gw.in_flight >= gw.config.limits.max_concurrent_requests:
            refusal = overloaded(gw.config.limits, gw.metrics)
        elif headers.get(PRIORITY_HEADER) == "batch" and gw.in_flight >= self._batch_room:
            refusal = yielding(gw.metrics)
        if refusal is not None:
            await _respond(send, refusal.status, refusal.body(), headers=refusal.headers())
            return
        gw.in_flight += 1
        guard = _DisconnectGuard(send, receive)
        send = guard.send
        try:
            client = self._caller(authorization, headers)
            raw = await read_body(receive, gw.config.limits, gw.metrics)
            payload = parse_request(endpoint, raw, gw.config.routes)
            route = payload["model"]
            gw.access.admit(client, route, headers)
            sticky = headers.get(SESSION_HEADER) or (client.id if client is not None else None)
            plan = gw.router.plan(route, routing_context(headers, payload), sticky)
            guard.arm()
            serve = serve_stream if payload.get("stream") else serve_complete
            gw.metrics.child("in_flight", route).inc()
            try:
                status = await serve(gw, endpoint, plan, payload, send, started, client)
            finally:
                gw.metrics.child("in_flight", route).dec()
        except RequestError as exc:
            status = exc.status
            await _respond(send, status, exc.body(), headers=exc.headers())
        except NoTargetError as exc:
            status = 503
            await _respond(send, status, error_body(503, str(exc), code="no_available_target"))
        except ClientStalled:
            await guard.abort()
            status = 408
        except ClientGone:
            status = 499
        except asyncio.CancelledError:
            if not guard.client_gone or guard.task.uncancel() > 0:
                raise
            status = 499
        except Exception:
            log.exception("unexpected error serving %s", scope["path"])
            status = 500
            if not guard.started:
                await _respond(send, 500, error_body(500, "internal gateway error"))
            elif not guard.finished:  # a stream under way: end it with an in-band error event, no [DONE]
                event = error_object(500, "internal gateway error", code="internal_error")
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(event).encode() + b"\n\n"})
        finally:
            gw.in_flight -= 1
            guard.disarm()
            if route in gw.config.routes:
                gw.metrics.child("requests", route, status_class(status)).inc()

    @property
    def _batch_room(self) -> float:
        """In-flight requests past which batch-priority requests yield to interactive ones."""
        return self.gw.config.batch.yield_at * self.gw.config.limits.max_concurrent_requests

    def _caller(self, authorization: bytes | None, headers: dict[str, str]) -> ClientKey | None:
        """The client key a request acts as: the caller's own, or, for a batch worker's token, the batch's key."""
        batch_key = headers.get(BATCH_KEY_HEADER)
        if batch_key is not None:
            return self.gw.access.act_for(self._principal(authorization), batch_key)
        try:
            return self.gw.access.authenticate(authorization)
        except RequestError as exc:
            principal = self._principal(authorization) if exc.code == "invalid_api_key" else None
            if principal is not None and principal.role == "worker":
                raise RequestError(401, f"a worker token sends batch requests only: {BATCH_KEY_HEADER} is required",
                                   code="batch_key_required", error_type="invalid_request_error") from None
            raise

    def _principal(self, authorization: bytes | None) -> Principal | None:
        return self.tokens.authenticate(authorization.decode("latin-1")) if authorization else None

    async def _health(self) -> tuple[int, bytes, bytes]:
        return 200, b'{"status":"ok"}', JSON

    async def _ready(self) -> tuple[int, bytes, bytes]:
        ready, reason = self.gw.ready()
        body = json.dumps({"status": "ready" if ready else "not_ready", "reason": reason,
                           "degraded": self.control.degraded}).encode()
        return (200 if ready else 503), body, JSON

    async def _metrics(self) -> tuple[int, bytes, bytes]:
        for target in self.gw.config.targets:
            self.gw.publish_health(target)
        self.control.canary.publish_gauges()
        await self.batch.publish_gauges()
        return 200, self.gw.metrics.render(), self.gw.metrics.content_type.encode()

    async def _models(self, scope: dict[str, Any], send: Send) -> None:
        """The routes the caller may name in ``model`` (all of them in open mode)."""
        try:
            client = self.gw.access.authenticate(_request_headers(scope)[1])
        except RequestError as exc:
            await _respond(send, exc.status, exc.body(), headers=exc.headers())
            return
        data = [{"id": name, "object": "model", "created": int(self.gw.started_at), "owned_by": "switchboard"}
                for name in self.gw.access.visible_routes(client, list(self.gw.config.routes))]
        await _respond(send, 200, json.dumps({"object": "list", "data": data}).encode())


def _request_headers(scope: dict[str, Any]) -> tuple[dict[str, str], bytes | None]:
    """The routing headers (``x-switchboard-*``) and the raw Authorization value, in one pass."""
    routing: dict[str, str] = {}
    authorization = None
    for name, value in scope["headers"]:
        if name.startswith(b"x-switchboard-"):
            routing[name.decode("latin-1")] = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value
    return routing, authorization


class _DisconnectGuard:
    """Cancels the request's task when the client goes away, so the upstream request is cancelled too.

    Watching costs a task per request, so it starts only once a request has run for
    ``WATCH_AFTER_S``: most answers are done by then, and a client that left earlier is noticed
    at that point. After the last body message uvicorn's ``receive`` also answers
    ``http.disconnect``; ``send`` tracks the response's end so that is not taken for the client leaving.
    """

    WATCH_AFTER_S = 0.2

    def __init__(self, send: Send, receive: Receive) -> None:
        self._send = send
        self._receive = receive
        self.task = asyncio.current_task()
        self.started = False  # the response's status line went out: a later failure can only end the body
        self.finished = False
        self.client_gone = False
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            self.finished = True
        await self._send(message)

    async def abort(self) -> None:
        """Reset the connection of a client that stopped reading: a polite close would leave the kernel
        holding the unsent bytes for a reader that takes none. uvicorn's send is a method of its request
        cycle, which holds the transport; one loop turn lets uvicorn see the connection go."""
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0)

    def arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.WATCH_AFTER_S, self._start_watching)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def _start_watching(self) -> None:
        if not self.finished:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self.finished and self.task and not self.task.done():
            self.client_gone = True
            self.task.cancel()
