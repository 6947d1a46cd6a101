"""Serving one completion request: walk the routing plan, apply the action for each error class.

Error actions: 429 cools the target down for its Retry-After (clamped) and moves on at once;
5xx, timeouts, connect errors and malformed answers retry the same target with jittered
exponential backoff inside a small budget, then move on; 401/403/404 cool down without retry;
any other 4xx goes back to the client. Streams fall back only before their first byte reaches
the client; afterwards a failure becomes an in-band error event and no ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from services.gateway.context import ContextError, RoutingContext
from services.gateway.errors import FINAL_STATUS, RequestError, error_body
from services.gateway.health import ErrorClass
from services.gateway.keys import ClientKey
from services.gateway.metrics import status_class
from services.gateway.providers.base import Endpoint, StreamChunk, UpstreamError, UpstreamStream, Usage
from services.gateway.routing import Plan
from services.gateway.runtime import Gateway

Send = Callable[[dict[str, Any]], Awaitable[None]]

DONE = b"data: [DONE]\n\n"


@dataclass
class Outcome:
    """What one request did, for headers, metrics and the overhead figure."""

    attempts: int = 0
    upstream_s: float = 0.0
    target: str | None = None
    last_error: UpstreamError | None = None
    tried: list[str] = field(default_factory=list)
    client: ClientKey | None = None  # the calling client key, charged for tokens and spend


class ClientGone(Exception):
    """The client disconnected; the upstream work was cancelled."""


def _record_usage(gw: Gateway, outcome: Outcome, target: str, usage: Usage | None) -> None:
    if usage is None:
        return
    provider = gw.config.targets[target].provider
    gw.metrics.child("tokens", target, provider, "input").inc(usage.prompt_tokens)
    gw.metrics.child("tokens", target, provider, "output").inc(usage.completion_tokens)
    price = gw.config.targets[target].price
    cost = usage.prompt_tokens / 1000 * price.input_per_1k + usage.completion_tokens / 1000 * price.output_per_1k
    if cost:
        gw.metrics.child("cost", target).inc(cost)
    if outcome.client is not None:
        gw.meter.record(outcome.client, usage.prompt_tokens + usage.completion_tokens, cost)


def _record_failure(gw: Gateway, pool: str, target: str, err: UpstreamError) -> None:
    health = gw.health[target]
    health.on_failure(err.error_class)
    cooldowns = gw.config.cooldowns
    if err.error_class is ErrorClass.RATE_LIMIT:
        wait = err.retry_after if err.retry_after is not None else cooldowns.rate_limit_default_s
        health.cool_down(min(cooldowns.rate_limit_max_s, max(cooldowns.rate_limit_min_s, wait)), "rate_limit")
    elif err.error_class is ErrorClass.AUTH:
        health.cool_down(cooldowns.auth_s, "auth")
    provider = gw.config.targets[target].provider
    status = status_class(err.status) if err.status else "none"
    gw.metrics.child("attempts", pool, target, provider, status).inc()
    gw.metrics.child("errors", target, provider, err.error_class.value).inc()


def _record_success(gw: Gateway, pool: str, target: str, latency_s: float) -> None:
    gw.health[target].on_success(latency_s)
    provider = gw.config.targets[target].provider
    gw.metrics.child("attempts", pool, target, provider, "2xx").inc()


def _retryable(err: UpstreamError) -> bool:
    return err.error_class in (ErrorClass.SERVER, ErrorClass.TIMEOUT, ErrorClass.CONNECT, ErrorClass.MALFORMED)


class AttemptLoop:
    """Walks a plan; ``run`` calls ``attempt(pool, target)`` until one succeeds or the plan is spent."""

    def __init__(self, gw: Gateway, plan: Plan, outcome: Outcome) -> None:
        self.gw = gw
        self.plan = plan
        self.outcome = outcome
        self.sleep_budget = gw.config.retry.budget_s

    def _backoff(self, retry: int) -> float:
        retry_cfg = self.gw.config.retry
        ceiling = min(retry_cfg.backoff_max_s, retry_cfg.backoff_base_s * (2**retry))
        return random.uniform(ceiling / 2, ceiling)

    async def run(self, attempt: Callable[[str, str], Awaitable[Any]]) -> Any:
        gw, outcome = self.gw, self.outcome
        for index, (pool, target) in enumerate(self.plan.attempts):
            health = gw.health[target]
            if not self.plan.forced and not health.available():
                continue
            if outcome.tried:
                gw.metrics.child(
                    "fallbacks", self.plan.route, outcome.tried[-1],
                    outcome.last_error.error_class.value if outcome.last_error else "unavailable",
                ).inc()
            outcome.tried.append(target)
            retries = 0
            while True:
                outcome.attempts += 1
                health.on_attempt_start()
                started = perf_counter()
                try:
                    return await attempt(pool, target)
                except UpstreamError as err:
                    outcome.upstream_s += perf_counter() - started
                    outcome.last_error = err
                    _record_failure(gw, pool, target, err)
                    if err.error_class is ErrorClass.CLIENT:
                        raise
                    last = index == len(self.plan.attempts) - 1
                    can_retry = _retryable(err) and retries < gw.config.retry.max_retries
                    if not can_retry or not (health.available() or (self.plan.forced and last)):
                        break
                    delay = self._backoff(retries)
                    if delay > self.sleep_budget:
                        break
                    self.sleep_budget -= delay
                    retries += 1
                    await asyncio.sleep(delay)
                    outcome.upstream_s += delay  # waiting is not gateway overhead
                except BaseException:
                    outcome.upstream_s += perf_counter() - started
                    health.on_abandoned()
                    raise
        raise outcome.last_error or UpstreamError(ErrorClass.CONNECT, "no target was available")


def _headers(outcome: Outcome, overhead_ms: float, content_type: bytes, extra: list | None = None) -> list:
    headers = [
        (b"content-type", content_type),
        (b"x-switchboard-target", (outcome.target or "").encode()),
        (b"x-switchboard-attempts", str(outcome.attempts).encode()),
        (b"x-switchboard-overhead-ms", f"{overhead_ms:.3f}".encode()),
    ]
    return headers + (extra or [])


def final_error(outcome: Outcome) -> tuple[int, bytes]:
    """The response for a request whose every attempt failed."""
    err = outcome.last_error
    if err is None:
        return 503, error_body(503, "no target is available", code="no_available_target")
    if err.error_class is ErrorClass.CLIENT:
        status = err.status or 400
        if err.body and isinstance(err.body.get("error"), dict):
            return status, json.dumps(err.body).encode()
        return status, error_body(status, err.message)
    status = FINAL_STATUS[err.error_class]
    tried = ", ".join(outcome.tried)
    return status, error_body(status, f"all targets failed (tried {tried}); last error: {err.message}",
                              code=err.error_class.value)


async def serve_complete(
    gw: Gateway, endpoint: Endpoint, plan: Plan, payload: dict[str, Any], send: Send, started: float,
    client: ClientKey | None = None,
) -> int:
    outcome = Outcome(client=client)

    async def attempt(pool: str, target: str) -> bytes:
        provider = gw.provider(target)
        timeouts = gw.config.targets[target].timeouts
        body = {**payload, "model": gw.config.targets[target].model}
        t0 = perf_counter()
        try:
            async with asyncio.timeout(timeouts.total_s):
                result = await provider.complete(endpoint, body, timeouts)
        except TimeoutError:
            raise UpstreamError(ErrorClass.TIMEOUT, f"no answer within {timeouts.total_s:g} s") from None
        elapsed = perf_counter() - t0
        outcome.upstream_s += elapsed
        outcome.target = target
        _record_success(gw, pool, target, elapsed)
        provider_name = gw.config.targets[target].provider
        gw.metrics.child("upstream_latency", target, provider_name).observe(elapsed)
        _record_usage(gw, outcome, target, result.usage)
        return result.body

    try:
        body = await AttemptLoop(gw, plan, outcome).run(attempt)
        status = 200
    except UpstreamError:
        status, body = final_error(outcome)
    overhead = perf_counter() - started - outcome.upstream_s
    gw.metrics.child("overhead", plan.route).observe(overhead)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": _headers(outcome, overhead * 1000, b"application/json",
                            [(b"content-length", str(len(body)).encode())]),
    })
    await send({"type": "http.response.body", "body": body})
    return status


async def _next_chunk(stream: UpstreamStream, deadline: float, what: str) -> StreamChunk | None:
    try:
        async with asyncio.timeout_at(deadline):
            return await anext(stream.chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise UpstreamError(ErrorClass.TIMEOUT, f"upstream {what}") from None


async def serve_stream(
    gw: Gateway, endpoint: Endpoint, plan: Plan, payload: dict[str, Any], send: Send, started: float,
    client: ClientKey | None = None,
) -> int:
    outcome = Outcome(client=client)
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    loop = asyncio.get_running_loop()

    async def attempt(pool: str, target: str) -> tuple[str, UpstreamStream, StreamChunk, float, float]:
        provider = gw.provider(target)
        timeouts = gw.config.targets[target].timeouts
        body = {**payload, "model": gw.config.targets[target].model}
        t0 = perf_counter()
        first_deadline = loop.time() + min(timeouts.ttft_s, timeouts.total_s)
        try:
            async with asyncio.timeout_at(first_deadline):
                stream = await provider.open_stream(endpoint, body, timeouts)
        except TimeoutError:
            raise UpstreamError(ErrorClass.TIMEOUT, f"no first token within {timeouts.ttft_s:g} s") from None
        try:
            first = await _next_chunk(stream, first_deadline, f"sent no first token within {timeouts.ttft_s:g} s")
            if first is None:
                raise UpstreamError(ErrorClass.MALFORMED, "upstream stream ended before any chunk")
        except BaseException:
            await stream.aclose()
            raise
        ttft = perf_counter() - t0
        outcome.upstream_s += ttft
        outcome.target = target
        gw.metrics.child("ttft", target, gw.config.targets[target].provider).observe(ttft)
        return pool, stream, first, t0, ttft

    try:
        pool, stream, chunk, t0, ttft = await AttemptLoop(gw, plan, outcome).run(attempt)
    except UpstreamError:
        status, body = final_error(outcome)
        overhead = perf_counter() - started - outcome.upstream_s
        gw.metrics.child("overhead", plan.route).observe(overhead)
        await send({"type": "http.response.start", "status": status,
                    "headers": _headers(outcome, overhead * 1000, b"application/json")})
        await send({"type": "http.response.body", "body": body})
        return status

    target = outcome.target or ""
    timeouts = gw.config.targets[target].timeouts
    overhead = perf_counter() - started - outcome.upstream_s
    gw.metrics.child("overhead", plan.route).observe(overhead)
    total_deadline = loop.time() - (perf_counter() - t0) + timeouts.total_s
    try:
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": _headers(outcome, overhead * 1000, b"text/event-stream",
                                [(b"cache-control", b"no-cache")]),
        })
        while chunk is not None:
            if include_usage or not chunk.usage_only:
                await send({"type": "http.response.body", "body": b"data: " + chunk.data + b"\n\n", "more_body": True})
            deadline = min(loop.time() + timeouts.stall_s, total_deadline)
            chunk = await _next_chunk(stream, deadline, f"stalled for more than {timeouts.stall_s:g} s")
    except UpstreamError as err:
        _record_failure(gw, pool, target, err)
        _record_usage(gw, outcome, target, stream.usage)
        event = {"error": {"message": f"upstream failed mid-stream: {err.message}", "type": "upstream_error",
                           "param": None, "code": err.error_class.value}}
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(event).encode() + b"\n\n"})
        return 200
    except BaseException:
        gw.health[target].on_abandoned()
        raise
    finally:
        await stream.aclose()
    _record_success(gw, pool, target, ttft)
    gw.metrics.child("upstream_latency", target, gw.config.targets[target].provider).observe(perf_counter() - t0)
    _record_usage(gw, target, stream.usage)
    await send({"type": "http.response.body", "body": DONE})
    return 200


def parse_request(endpoint: Endpoint, raw: bytes, routes: dict) -> dict[str, Any]:
    """Validate the parts of the body the gateway relies on; the rest goes upstream untouched."""
    try:
        payload = json.loads(raw)
    except ValueError:
        raise RequestError(400, "request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required: one of " + ", ".join(routes), param="model")
    if model not in routes:
        raise RequestError(404, f"The model '{model}' does not exist; routes are: {', '.join(routes)}",
                           code="model_not_found", param="model")
    if endpoint == "chat":
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "'messages' must be a non-empty array", param="messages")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise RequestError(400, "each message must be an object with a 'role'", param="messages")
    elif not isinstance(payload.get("prompt"), str | list):
        raise RequestError(400, "'prompt' must be a string or an array of strings", param="prompt")
    if not isinstance(payload.get("stream", False), bool):
        raise RequestError(400, "'stream' must be a boolean", param="stream")
    return payload


def routing_context(headers: dict[str, str], payload: dict[str, Any]) -> RoutingContext:
    try:
        return RoutingContext(headers, payload)
    except ContextError as exc:
        raise RequestError(400, str(exc)) from None
