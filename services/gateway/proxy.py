"""Serving one completion request: walk the routing plan, apply the action for each error class.

Error actions: 429 cools the target down for its Retry-After (clamped) and moves on at once;
5xx, timeouts, connect errors and malformed answers retry the same target with jittered
exponential backoff inside a small budget, then move on (a 503 or Anthropic 529 that carries a
Retry-After also cools the target down for it, so the next try goes elsewhere); 401/403/404 cool
down without retry; any other 4xx goes back to the client and says nothing about the target's
health. Streams fall back only before their first byte reaches the client; afterwards a failure
becomes an in-band error event and no ``[DONE]``.

Deadlines: each attempt has its target's ``ttft_s`` (to the first chunk, or to the response headers
of a non-stream answer) and ``total_s``; the whole request, retries and fallbacks and the stream
included, has ``limits.request_timeout_s`` (by default the largest ``total_s`` it may try). Writes
to a streaming client are under the same stall and total deadlines, so a client that stops reading
cannot hold an upstream connection.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from services.admin_api import JudgeSettings
from services.gateway.config import Target
from services.gateway.context import ContextError, RoutingContext
from services.gateway.errors import FINAL_STATUS, ClientStalled, RequestError, error_body
from services.gateway.health import UNHEALTHY, ErrorClass
from services.gateway.judge import StreamText, answer_text, request_text
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
    pool: str | None = None  # the pool of the attempt that answered


class RequestDeadline(Exception):
    """The request's own deadline ran out during an attempt: no verdict on the target."""


@dataclass(frozen=True)
class Deadline:
    """When one phase of an attempt must be over (loop time), and whether that is the target's own limit
    (a timeout then counts against the target) or the request's, which says nothing certain about it."""

    at: float
    own: bool

    def expired(self) -> None:
        """Called when ``at`` passed: raises RequestDeadline unless it was the target's own limit."""
        if not self.own:
            raise RequestDeadline


def _record_usage(gw: Gateway, outcome: Outcome, pool: str, target: str, usage: Usage | None) -> None:
    if usage is None:
        return
    provider = gw.config.targets[target].provider
    gw.metrics.child("tokens", target, provider, "input").inc(usage.prompt_tokens)
    gw.metrics.child("tokens", target, provider, "output").inc(usage.completion_tokens)
    price = gw.config.targets[target].price
    cost = usage.prompt_tokens / 1000 * price.input_per_1k + usage.completion_tokens / 1000 * price.output_per_1k
    if cost:
        gw.metrics.child("cost", target).inc(cost)
    gw.canary.observe_cost(pool, target, cost)
    if outcome.client is not None:
        gw.meter.record(outcome.client, usage.prompt_tokens + usage.completion_tokens, cost)


OVERLOADED_STATUSES = (503, 529)  # 529: Anthropic's overloaded_error


def _record_failure(gw: Gateway, pool: str, target: str, err: UpstreamError) -> None:
    health = gw.health[target]
    health.on_failure(err.error_class)
    cooldowns = gw.config.cooldowns
    if err.error_class is ErrorClass.RATE_LIMIT:
        wait = err.retry_after if err.retry_after is not None else cooldowns.rate_limit_default_s
        health.cool_down(min(cooldowns.rate_limit_max_s, max(cooldowns.rate_limit_min_s, wait)), "rate_limit")
    elif err.status in OVERLOADED_STATUSES and err.retry_after is not None:
        wait = min(cooldowns.rate_limit_max_s, max(cooldowns.rate_limit_min_s, err.retry_after))
        health.cool_down(wait, "overloaded")
    elif err.error_class is ErrorClass.AUTH:
        health.cool_down(cooldowns.auth_s, "auth")
    provider = gw.config.targets[target].provider
    status = status_class(err.status) if err.status else "none"
    gw.metrics.child("attempts", pool, target, provider, status).inc()
    gw.metrics.child("errors", target, provider, err.error_class.value).inc()
    if err.error_class in UNHEALTHY:  # the caller's own mistakes say nothing about a release's arm
        gw.canary.observe_failure(pool, target)


def _record_success(gw: Gateway, pool: str, target: str, total_s: float) -> None:
    """A whole answer: total latency into health and the upstream_latency histogram."""
    gw.health[target].on_success(total_s)
    provider = gw.config.targets[target].provider
    gw.metrics.child("attempts", pool, target, provider, "2xx").inc()
    gw.metrics.child("upstream_latency", target, provider).observe(total_s)
    gw.canary.observe_success(pool, target, total_s)


def failure_status(err: UpstreamError) -> int:
    """The status that best describes a failed request to the client and in the requests metric."""
    if err.error_class is ErrorClass.CLIENT:
        return err.status or 400
    return FINAL_STATUS[err.error_class]


def _retryable(err: UpstreamError) -> bool:
    return err.error_class in (ErrorClass.SERVER, ErrorClass.TIMEOUT, ErrorClass.CONNECT, ErrorClass.MALFORMED)


class AttemptLoop:
    """Walks a plan; ``run`` calls ``attempt(pool, target)`` until one succeeds or the plan is spent."""

    def __init__(self, gw: Gateway, plan: Plan, outcome: Outcome) -> None:
        self.gw = gw
        self.plan = plan
        self.outcome = outcome
        self.sleep_budget = gw.config.retry.budget_s
        self.loop = asyncio.get_running_loop()
        limit = gw.config.limits.request_timeout_s
        if limit is None:
            limit = max(gw.config.targets[target].timeouts.total_s for _, target in plan.attempts)
        self.timeout_s = limit
        self.deadline: float | None = None  # loop time; set when the first attempt starts

    def deadline_for(self, seconds: float, start: float | None = None) -> Deadline:
        """A phase's deadline: ``seconds`` from ``start`` (default now), or the request's deadline if that
        comes first. The request's deadline starts with the first attempt, so that attempt can always use
        its own limit when it is the largest (a tie counts as the target's own)."""
        now = self.loop.time() if start is None else start
        if self.deadline is None:
            self.deadline = now + self.timeout_s
        own = now + seconds
        return Deadline(own, True) if own <= self.deadline else Deadline(self.deadline, False)

    def _past_deadline(self, wait_s: float = 0.0) -> bool:
        return self.deadline is not None and self.loop.time() + wait_s >= self.deadline

    def deadline_error(self) -> UpstreamError:
        return UpstreamError(ErrorClass.TIMEOUT, f"the request's deadline of {self.timeout_s:g} s passed")

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
                if self._past_deadline():
                    outcome.last_error = self.deadline_error()
                    raise outcome.last_error
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
                    if delay > self.sleep_budget or self._past_deadline(delay):
                        break
                    self.sleep_budget -= delay
                    retries += 1
                    await asyncio.sleep(delay)
                    outcome.upstream_s += delay  # waiting is not gateway overhead
                except RequestDeadline:
                    outcome.upstream_s += perf_counter() - started
                    health.on_abandoned()
                    outcome.last_error = self.deadline_error()
                    raise outcome.last_error from None
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
    status = failure_status(err)
    if err.error_class is ErrorClass.CLIENT:
        if err.body and isinstance(err.body.get("error"), dict):
            return status, json.dumps(err.body).encode()
        return status, error_body(status, err.message)
    tried = ", ".join(outcome.tried)
    return status, error_body(status, f"all targets failed (tried {tried}); last error: {err.message}",
                              code=err.error_class.value)


def _retry_after(gw: Gateway, plan: Plan) -> list[tuple[bytes, bytes]]:
    """``retry-after`` for a final 429: whole seconds until a target in the chain leaves its cooldown."""
    wait = gw.router.seconds_until_available(plan)
    return [(b"retry-after", str(max(1, math.ceil(wait))).encode())]


async def _send_json(gw: Gateway, plan: Plan, outcome: Outcome, send: Send, started: float,
                     status: int, body: bytes) -> int:
    overhead = perf_counter() - started - outcome.upstream_s
    gw.metrics.child("overhead", plan.route).observe(overhead)
    extra = [(b"content-length", str(len(body)).encode())]
    if status == 429:
        extra += _retry_after(gw, plan)
    await send({"type": "http.response.start", "status": status,
                "headers": _headers(outcome, overhead * 1000, b"application/json", extra)})
    await send({"type": "http.response.body", "body": body})
    return status


async def serve_complete(
    gw: Gateway, endpoint: Endpoint, plan: Plan, payload: dict[str, Any], send: Send, started: float,
    client: ClientKey | None = None,
) -> int:
    outcome = Outcome(client=client)
    attempts = AttemptLoop(gw, plan, outcome)

    async def attempt(pool: str, target: str) -> bytes:
        provider = gw.provider(target)
        timeouts = gw.config.targets[target].timeouts
        body = upstream_body(gw.config.targets[target], endpoint, payload)
        t0 = perf_counter()
        deadline = attempts.deadline_for(timeouts.total_s)
        try:
            async with asyncio.timeout_at(deadline.at):
                result = await provider.complete(endpoint, body, timeouts)
        except TimeoutError:
            deadline.expired()
            raise UpstreamError(ErrorClass.TIMEOUT, f"no answer within {timeouts.total_s:g} s") from None
        elapsed = perf_counter() - t0
        outcome.upstream_s += elapsed
        outcome.target, outcome.pool = target, pool
        _record_success(gw, pool, target, elapsed)
        _record_usage(gw, outcome, pool, target, result.usage)
        return result.body

    try:
        body = await attempts.run(attempt)
        status = 200
    except UpstreamError:
        status, body = final_error(outcome)
    status = await _send_json(gw, plan, outcome, send, started, status, body)
    if status == 200 and outcome.pool is not None and outcome.target is not None:
        sample = _judge_sample(gw, outcome.pool, outcome.target)
        if sample is not None:  # after the answer went out: judging never delays it
            gw.judge.offer(*sample, request_text(endpoint, payload), answer_text(endpoint, body))
    return status


def upstream_body(target: Target, endpoint: Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
    """The client's body for this target: its model name, and its system prompt (a prompt version) first."""
    body = {**payload, "model": target.model}
    if target.system_prompt is not None and endpoint == "chat":
        body["messages"] = [{"role": "system", "content": target.system_prompt}, *payload["messages"]]
    return body


def _judge_sample(gw: Gateway, pool: str, target: str) -> tuple[str, str, JudgeSettings] | None:
    """(window, arm, settings) when this answer, from an arm of a release that grades, is sampled."""
    active = gw.router.releases.get(pool)
    if active is None or active.judge is None or target not in (active.stable, active.canary):
        return None
    if not gw.judge.should_sample(active.judge):
        return None
    return active.step_key, "canary" if target == active.canary else "stable", active.judge


async def _send_by(send: Send, message: dict[str, Any], deadline: float) -> None:
    """Send to the client, giving up at ``deadline``. A client that stops reading makes the server's
    send wait on flow control; without a deadline it would hold the upstream stream open for ever."""
    try:
        async with asyncio.timeout_at(deadline):
            await send(message)
    except TimeoutError:
        raise ClientStalled from None


@dataclass
class _OpenStream:
    """A stream whose first chunk arrived: what relaying the rest needs."""

    pool: str
    target: str
    stream: UpstreamStream
    first: StreamChunk
    t0: float  # perf_counter when the request was sent
    total: Deadline  # the target's total_s or the request's deadline, whichever is first


async def serve_stream(
    gw: Gateway, endpoint: Endpoint, plan: Plan, payload: dict[str, Any], send: Send, started: float,
    client: ClientKey | None = None,
) -> int:
    outcome = Outcome(client=client)
    loop = asyncio.get_running_loop()
    attempts = AttemptLoop(gw, plan, outcome)

    async def attempt(pool: str, target: str) -> _OpenStream:
        provider = gw.provider(target)
        timeouts = gw.config.targets[target].timeouts
        body = upstream_body(gw.config.targets[target], endpoint, payload)
        t0, sent_at = perf_counter(), loop.time()
        first_deadline = attempts.deadline_for(min(timeouts.ttft_s, timeouts.total_s), sent_at)
        stream: UpstreamStream | None = None
        try:
            async with asyncio.timeout_at(first_deadline.at):
                stream = await provider.open_stream(endpoint, body, timeouts)
                first = await anext(stream.chunks, None)
        except TimeoutError:
            if stream is not None:
                await stream.aclose()
            first_deadline.expired()
            raise UpstreamError(ErrorClass.TIMEOUT, f"no first token within {timeouts.ttft_s:g} s") from None
        except BaseException:
            if stream is not None:
                await stream.aclose()
            raise
        if first is None:
            await stream.aclose()
            raise UpstreamError(ErrorClass.MALFORMED, "upstream stream ended before any chunk")
        ttft = perf_counter() - t0
        outcome.upstream_s += ttft
        outcome.target = target
        gw.health[target].on_first_token(ttft)
        gw.metrics.child("ttft", target, gw.config.targets[target].provider).observe(ttft)
        return _OpenStream(pool, target, stream, first, t0, attempts.deadline_for(timeouts.total_s, sent_at))

    try:
        opened: _OpenStream = await attempts.run(attempt)
    except UpstreamError:
        status, body = final_error(outcome)
        return await _send_json(gw, plan, outcome, send, started, status, body)
    overhead = perf_counter() - started - outcome.upstream_s
    gw.metrics.child("overhead", plan.route).observe(overhead)
    head = _headers(outcome, overhead * 1000, b"text/event-stream", [(b"cache-control", b"no-cache")])
    try:
        return await _relay(gw, endpoint, attempts, opened, outcome, payload, send, head)
    except ClientStalled:
        gw.metrics.child("client_write_timeouts", plan.route).inc()
        raise


async def _relay(gw: Gateway, endpoint: Endpoint, attempts: AttemptLoop, opened: _OpenStream, outcome: Outcome,
                 payload: dict[str, Any], send: Send, head: list) -> int:
    """Forward a stream chunk by chunk. Returns the status for the requests metric: 200, or for a
    stream that failed after its first byte the status of its failure (the client saw 200 and an
    in-band error event, and no ``[DONE]``)."""
    include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    loop = attempts.loop
    pool, target, stream, chunk = opened.pool, opened.target, opened.stream, opened.first
    timeouts = gw.config.targets[target].timeouts
    total = opened.total
    failure: UpstreamError | None = None
    sample = _judge_sample(gw, pool, target)
    text = StreamText() if sample is not None else None  # the answer's text is kept only for a sampled stream
    try:
        await _send_by(send, {"type": "http.response.start", "status": 200, "headers": head},
                       min(loop.time() + timeouts.stall_s, total.at))
        while chunk is not None:
            if text is not None:
                text.feed(chunk.data)
            if include_usage or not chunk.usage_only:
                await _send_by(send, {"type": "http.response.body", "body": b"data: " + chunk.data + b"\n\n",
                                      "more_body": True}, min(loop.time() + timeouts.stall_s, total.at))
            stall_at = loop.time() + timeouts.stall_s
            deadline = Deadline(stall_at, True) if stall_at < total.at else total
            try:
                async with asyncio.timeout_at(deadline.at):
                    chunk = await anext(stream.chunks, None)
            except TimeoutError:
                deadline.expired()
                what = (f"did not finish within {timeouts.total_s:g} s" if deadline is total
                        else f"stalled for more than {timeouts.stall_s:g} s")
                raise UpstreamError(ErrorClass.TIMEOUT, f"upstream {what}") from None
    except UpstreamError as err:
        failure = err
        _record_failure(gw, pool, target, err)
    except RequestDeadline:
        failure = attempts.deadline_error()
        gw.health[target].on_abandoned()  # the request's deadline says nothing certain about the target
    except BaseException:
        gw.health[target].on_abandoned()
        raise
    finally:
        await stream.aclose()
    _record_usage(gw, outcome, pool, target, stream.usage)
    if failure is None:
        _record_success(gw, pool, target, perf_counter() - opened.t0)
        await _send_by(send, {"type": "http.response.body", "body": DONE}, loop.time() + timeouts.stall_s)
        if sample is not None and text is not None:
            gw.judge.offer(*sample, request_text(endpoint, payload), text.text())
        return 200
    event = {"error": {"message": f"upstream failed mid-stream: {failure.message}", "type": "upstream_error",
                       "param": None, "code": failure.error_class.value}}
    await _send_by(send, {"type": "http.response.body", "body": b"data: " + json.dumps(event).encode() + b"\n\n"},
                   loop.time() + timeouts.stall_s)
    return failure_status(failure)


def routing_context(headers: dict[str, str], payload: dict[str, Any]) -> RoutingContext:
    try:
        return RoutingContext(headers, payload)
    except ContextError as exc:
        raise RequestError(400, str(exc)) from None
