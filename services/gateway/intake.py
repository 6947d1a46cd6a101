"""Taking a client's request in: the body under size and time limits, then strict JSON and the fields
the gateway and its adapters rely on. Everything else in the body goes upstream untouched.

Every refusal is a :class:`RequestError` (a 4xx naming the problem), never a 500: JSON nested deeper
than :data:`MAX_DEPTH`, NaN and Infinity (Python's ``json`` accepts them, JSON does not), numbers
too large for a float, text that is not UTF-8, and lone UTF-16 surrogates (``"\\ud800"``), which
json.loads accepts and which then fail when an adapter or SDK encodes the request.

The checks are priced for the hot path: a pre-check by regular expression decides whether strings
need to be looked at, and the structure walk visits containers only (a few microseconds for a
typical chat body).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from services.gateway.config import Limits
from services.gateway.errors import ClientGone, RequestError
from services.gateway.metrics import GatewayMetrics
from services.gateway.providers.base import Endpoint

Receive = Callable[[], Awaitable[dict[str, Any]]]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted; tool schemas stay far below it, and SDKs that
deep-copy a request recurse several frames per level."""

# A JSON escape of a UTF-16 surrogate; only bodies containing one need their strings checked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BodyError(RequestError):
    """A body refused while it was being read (too large, too slow): the connection is closed after the
    answer, since the rest of the body may still be on its way."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"connection", b"close")]


async def read_body(receive: Receive, limits: Limits, metrics: GatewayMetrics) -> bytes:
    """A completion request's body within ``limits``; each refusal is counted in the metrics."""
    return await read_limited(receive, limits.max_body_bytes, limits.body_read_timeout_s,
                              lambda reason: metrics.child("refused", reason).inc())


async def read_limited(receive: Receive, max_bytes: int, timeout_s: float,
                       refused: Callable[[str], object] = lambda reason: None) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``max_bytes`` and with 408 when it has not fully
    arrived within ``timeout_s`` (``refused`` hears "too_large" or "body_timeout" first). Raises ClientGone when
    the client disconnects."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read(receive, max_bytes, refused)
    except TimeoutError:
        refused("body_timeout")
        raise BodyError(408, f"the request body did not arrive within {timeout_s:g} s",
                        code="request_timeout") from None


async def _read(receive: Receive, max_bytes: int, refused: Callable[[str], object]) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            refused("too_large")
            raise BodyError(413, f"request body larger than {max_bytes} bytes", code="request_too_large")
        if not message.get("more_body"):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


def overloaded(limits: Limits, metrics: GatewayMetrics) -> RequestError:
    """The refusal for a request past ``max_concurrent_requests``."""
    metrics.child("refused", "overloaded").inc()
    return RequestError(503, f"the gateway is serving its limit of {limits.max_concurrent_requests} requests; "
                             "retry shortly", code="overloaded", retry_after_s=1)


def _refuse_constant(name: str) -> Any:
    raise RequestError(400, f"request body contains {name}, which is not valid JSON; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise RequestError(400, f"number {text[:40]} is too large for a 64-bit float")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_strict(raw: bytes) -> Any:
    """JSON as RFC 8259 has it: UTF-8, no NaN or Infinity, no lone surrogates, bounded nesting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"request body is not valid UTF-8 (at byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise RequestError(400, f"request body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    _check_structure(value, check_text=_SURROGATE_ESCAPE.search(text) is not None)
    return value


def _check_structure(value: Any, check_text: bool) -> None:
    """Refuse nesting past MAX_DEPTH and, when ``check_text``, strings holding lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    if check_text and isinstance(value, str):
        _check_text(value)
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestError(400, f"request body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(container, dict):
            if check_text:
                for key in container:
                    _check_text(key)
            items = container.values()
        else:
            items = container
        for item in items:
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
            elif check_text and isinstance(item, str):
                _check_text(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise RequestError(400, f"request body contains a lone UTF-16 surrogate (\\u{code:04x}); "
                                "characters outside the BMP must be sent as a surrogate pair or as UTF-8") from None


def _positive_int(payload: dict[str, Any], name: str) -> None:
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise RequestError(400, f"'{name}' must be an integer of at least 1, not {json.dumps(value)[:40]}",
                           param=name)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, f"{where} must be an object with a string 'role'", param=where)
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise RequestError(400, f"{where}.content must be a string or an array of content parts",
                               param=f"{where}.content")
        for part_index, part in enumerate(content):
            part_where = f"{where}.content[{part_index}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise RequestError(400, f"{part_where} must be an object with a string 'type'", param=part_where)
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise RequestError(400, f"{part_where}.text must be a string", param=f"{part_where}.text")


def parse_request(endpoint: Endpoint, raw: bytes, routes: dict) -> dict[str, Any]:
    """Validate the parts of the body the gateway relies on; the rest goes upstream untouched."""
    payload = loads_strict(raw)
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required: one of " + ", ".join(routes), param="model")
    if model not in routes:
        raise RequestError(404, f"The model '{model}' does not exist; routes are: {', '.join(routes)}",
                           code="model_not_found", param="model")
    if endpoint == "chat":
        _check_messages(payload.get("messages"))
    elif not isinstance(payload.get("prompt"), str | list):
        raise RequestError(400, "'prompt' must be a string or an array of strings", param="prompt")
    if not isinstance(payload.get("stream", False), bool):
        raise RequestError(400, "'stream' must be a boolean", param="stream")
    options = payload.get("stream_options")
    if options is not None and (not isinstance(options, dict)
                                or not isinstance(options.get("include_usage", False), bool)):
        raise RequestError(400, "'stream_options' must be an object whose 'include_usage' is a boolean",
                           param="stream_options")
    for name in ("n", "max_tokens", "max_completion_tokens"):
        _positive_int(payload, name)
    return payload
