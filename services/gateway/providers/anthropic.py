"""Adapter for Anthropic's Messages API, called through the official ``anthropic`` SDK.

Requests arrive in OpenAI's chat-completions (or legacy completions) shape and leave as one Messages
API call; answers come back as OpenAI JSON bytes. The translation is pure (the module-level functions
and :class:`StreamTranslator`), so it is tested without a network; :class:`AnthropicProvider` only
does the I/O and maps failures to :class:`UpstreamError`.

Both paths use the SDK's raw-response API: the body (or the SSE byte stream) is decoded once with
``json.loads`` into plain dicts, never into the SDK's pydantic models.

Sampling parameters are not forwarded. The SDK (2.x) sends ``anthropic-version: 2026-10-21``, which
answers 400 to any ``temperature``, ``top_p`` or ``top_k``, even at their defaults, and the SDK has
removed them from ``messages.create``. OpenAI clients send ``temperature`` routinely, so rejecting
it would make every Anthropic target unusable for them; the same goes for ``seed`` and the
frequency/presence penalties, which Anthropic never had. Fields whose absence would change the shape
of the answer the client expects (``n > 1``, ``logprobs``, audio, ...) are refused with a 400 instead.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, cast

import anthropic
import httpx2

from services.gateway.config import Target, Timeouts
from services.gateway.health import ErrorClass
from services.gateway.providers.base import (
    Endpoint,
    Provider,
    StreamChunk,
    UpstreamError,
    UpstreamResponse,
    UpstreamStream,
    Usage,
    classify_status,
    headers_within,
    parse_retry_after,
)

DEFAULT_MAX_TOKENS: Final = 4096
"""Anthropic requires ``max_tokens``; used when the client gives neither of OpenAI's two names for it."""

FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}

ERROR_TYPE_STATUS: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""HTTP status Anthropic documents for each ``error.type``; classifies errors that arrive in-stream."""

IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_MALFORMED_DATA: Final = (ValueError, KeyError, IndexError, TypeError, AttributeError)
"""What reading an unexpected JSON shape raises (``json.JSONDecodeError`` is a ``ValueError``)."""


def _client_error(message: str) -> UpstreamError:
    return UpstreamError(ErrorClass.CLIENT, message, status=400)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------------
# Request: OpenAI -> Anthropic
# ---------------------------------------------------------------------------------------------------


def plain_text(content: Any) -> str:
    """The text of a string or a list of OpenAI text parts (system, developer and tool contents)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise _client_error("only text content parts are accepted here by Anthropic targets")
            texts.append(str(part["text"]))
        return "\n".join(texts)
    raise _client_error(f"message content must be a string or a list of parts, not {type(content).__name__}")


def translate_image(part: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``image_url`` part as an Anthropic image block (base64 for data: URLs, url otherwise)."""
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    if not isinstance(url, str):
        raise _client_error("image_url part without a url")
    if url.startswith("data:"):
        header, sep, data = url[len("data:") :].partition(",")
        media_type, *options = header.split(";")
        media_type = media_type.strip().lower()
        if not sep or "base64" not in options:
            raise _client_error("image data URLs must be base64-encoded (data:<type>;base64,<data>)")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise _client_error(
                f"image type {media_type or '(none)'!r} is not supported by Anthropic; "
                f"use one of {', '.join(sorted(IMAGE_MEDIA_TYPES))}"
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _client_error("image_url must be an http(s) URL or a base64 data URL")


def translate_content(content: Any, role: str) -> list[dict[str, Any]]:
    """User or assistant content as Anthropic blocks. Empty text is dropped: Anthropic refuses it."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _client_error(
            f"message content must be a string or a list of parts, not {type(content).__name__}"
        )
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and role == "assistant":
            if part["refusal"]:
                blocks.append({"type": "text", "text": part["refusal"]})
        elif kind == "image_url" and role == "user":
            blocks.append(translate_image(part))
        else:
            raise _client_error(f"{role} content part of type {kind!r} is not supported by Anthropic targets")
    return blocks


def translate_tool_calls(tool_calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An assistant's OpenAI ``tool_calls`` as Anthropic ``tool_use`` blocks."""
    blocks: list[dict[str, Any]] = []
    for call in tool_calls:
        if call.get("type", "function") != "function":
            raise _client_error(
                f"tool call of type {call.get('type')!r} is not supported by Anthropic targets"
            )
        function = call["function"]
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = json.loads(arguments)
        except ValueError:
            raise _client_error(
                f"tool call {call.get('id')!r} has arguments that are not valid JSON"
            ) from None
        if not isinstance(tool_input, dict):
            raise _client_error(f"tool call {call.get('id')!r} arguments must be a JSON object")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": tool_input})
    return blocks


def translate_tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``tool`` message as an Anthropic ``tool_result`` block."""
    content = message.get("content")
    result: str | list[dict[str, Any]]
    if isinstance(content, list):
        result = [{"type": "text", "text": text} for text in (plain_text([part]) for part in content) if text]
    else:
        result = plain_text(content)
    return {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": result}


def translate_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI messages as Anthropic's ``(system, messages)``.

    System and developer messages, wherever they stand, join the top-level ``system``. Tool results
    become user turns. Consecutive turns of one role are merged, as Anthropic wants user and
    assistant turns to alternate.
    """
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system_parts.append(plain_text(content))
            continue
        if role == "user":
            target_role, blocks = "user", translate_content(content, "user")
        elif role == "assistant":
            blocks = translate_content(content, "assistant") + translate_tool_calls(
                message.get("tool_calls") or []
            )
            target_role = "assistant"
        elif role == "tool":
            target_role, blocks = "user", [translate_tool_result(message)]
        else:
            raise _client_error(f"message role {role!r} is not supported by Anthropic targets")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == target_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": target_role, "content": blocks})
    if not turns:
        raise _client_error("the request has no user or assistant message with content")
    system = "\n\n".join(part for part in system_parts if part)
    return system or None, turns


def translate_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function tools as Anthropic client tools."""
    translated: list[dict[str, Any]] = []
    for tool in tools:
        if tool.get("type") != "function":
            raise _client_error(f"tool of type {tool.get('type')!r} is not supported by Anthropic targets")
        function = tool["function"]
        entry: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        if function.get("strict") is not None:
            entry["strict"] = bool(function["strict"])
        translated.append(entry)
    return translated


def translate_tool_choice(tool_choice: Any, parallel_tool_calls: bool | None) -> dict[str, Any] | None:
    """OpenAI ``tool_choice`` and ``parallel_tool_calls`` as Anthropic's ``tool_choice`` (None: send none)."""
    choice: dict[str, Any]
    if tool_choice is None:
        if parallel_tool_calls is not False:
            return None
        choice = {"type": "auto"}
    elif tool_choice == "auto":
        choice = {"type": "auto"}
    elif tool_choice == "required":
        choice = {"type": "any"}
    elif tool_choice == "none":
        return {"type": "none"}
    elif isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function":
        choice = {"type": "tool", "name": tool_choice["function"]["name"]}
    else:
        raise _client_error(f"tool_choice {tool_choice!r} is not supported by Anthropic targets")
    if parallel_tool_calls is False:
        choice["disable_parallel_tool_use"] = True
    return choice


def _stop_sequences(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return list(stop) or None
    raise _client_error("stop must be a string or a list of strings")


def _max_tokens(payload: Mapping[str, Any]) -> int:
    value = payload.get("max_completion_tokens")
    if value is None:
        value = payload.get("max_tokens")
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int):
        raise _client_error("max_tokens must be an integer")
    return value


def _refuse_unsupported(payload: Mapping[str, Any], endpoint: Endpoint) -> None:
    """Refuse fields that would change the shape of the answer the client gets back."""
    if payload.get("n") not in (None, 1):
        raise _client_error("n > 1 is not supported by Anthropic targets")
    if endpoint == "chat":
        if payload.get("logprobs") or payload.get("top_logprobs"):
            raise _client_error("logprobs are not supported by Anthropic targets")
    elif payload.get("logprobs") is not None:
        raise _client_error("logprobs are not supported by Anthropic targets")
    if payload.get("logit_bias"):
        raise _client_error("logit_bias is not supported by Anthropic targets")
    if payload.get("audio") is not None or any(m != "text" for m in payload.get("modalities") or ()):
        raise _client_error("audio output is not supported by Anthropic targets")
    if payload.get("functions") is not None or payload.get("function_call") is not None:
        raise _client_error(
            "the legacy functions/function_call fields are not supported; use tools/tool_choice"
        )
    if payload.get("echo"):
        raise _client_error("echo is not supported by Anthropic targets")
    if payload.get("best_of") not in (None, 1):
        raise _client_error("best_of > 1 is not supported by Anthropic targets")
    if payload.get("suffix"):
        raise _client_error("suffix is not supported by Anthropic targets")


def _common_params(payload: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": payload["model"],
        "max_tokens": _max_tokens(payload),
        "messages": messages,
    }
    stop = _stop_sequences(payload.get("stop"))
    if stop:
        params["stop_sequences"] = stop
    if payload.get("user"):
        params["metadata"] = {"user_id": str(payload["user"])}
    return params


def translate_chat_request(payload: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions body as the keyword arguments of an Anthropic Messages request."""
    _refuse_unsupported(payload, "chat")
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise _client_error("messages must be a list")
    system, turns = translate_messages(messages)
    params = _common_params(payload, turns)
    if system:
        params["system"] = system
    if payload.get("tools"):
        params["tools"] = translate_tools(payload["tools"])
    tool_choice = translate_tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))
    if tool_choice is not None and "tools" in params:
        params["tool_choice"] = tool_choice
    response_format = payload.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") not in (None, "text"):
        if response_format["type"] != "json_schema":
            raise _client_error(
                f"response_format {response_format['type']!r} is not supported by Anthropic targets; "
                "use json_schema"
            )
        params["output_config"] = {
            "format": {"type": "json_schema", "schema": response_format["json_schema"]["schema"]}
        }
    return params


def translate_completions_request(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A legacy OpenAI completions body (one prompt) as an Anthropic Messages request of one user turn."""
    _refuse_unsupported(payload, "completions")
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _client_error(
            "prompt must be one string for Anthropic targets (token arrays and batches are not supported)"
        )
    if not prompt:
        raise _client_error("prompt must not be empty")
    return _common_params(payload, [{"role": "user", "content": [{"type": "text", "text": prompt}]}])


def translate_request(endpoint: Endpoint, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The Anthropic request for a client body; a body that cannot be translated raises a CLIENT error."""
    try:
        if endpoint == "chat":
            return translate_chat_request(payload)
        return translate_completions_request(payload)
    except _MALFORMED_DATA as exc:
        raise _client_error(f"request cannot be translated for an Anthropic target: {exc!r}") from None


# ---------------------------------------------------------------------------------------------------
# Response: Anthropic -> OpenAI
# ---------------------------------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> str | None:
    """Anthropic's ``stop_reason`` as OpenAI's ``finish_reason`` (an unknown reason reads as ``stop``)."""
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def usage_from_anthropic(usage: Mapping[str, Any]) -> Usage:
    """Anthropic usage as prompt and completion tokens; cached input counts as prompt tokens."""
    prompt = sum(
        usage.get(key) or 0
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    return Usage(prompt_tokens=prompt, completion_tokens=usage.get("output_tokens") or 0)


def openai_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def translate_response(endpoint: Endpoint, message: Mapping[str, Any], created: int) -> UpstreamResponse:
    """An Anthropic message as an OpenAI ``chat.completion`` (or ``text_completion``) body."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if block["type"] == "text":
            texts.append(block["text"])
        elif block["type"] == "tool_use":
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": json.dumps(block["input"], ensure_ascii=False),
                    },
                }
            )
    usage = usage_from_anthropic(message["usage"])
    reason = finish_reason(message.get("stop_reason"))
    base = {"id": message["id"], "created": created, "model": message["model"]}
    body: dict[str, Any]
    if endpoint == "chat":
        reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if tool_calls:
            reply["tool_calls"] = tool_calls
        choice = {"index": 0, "message": reply, "logprobs": None, "finish_reason": reason}
        body = {"object": "chat.completion", **base, "choices": [choice], "usage": openai_usage(usage)}
    else:
        choice = {"index": 0, "text": "".join(texts), "logprobs": None, "finish_reason": reason}
        body = {"object": "text_completion", **base, "choices": [choice], "usage": openai_usage(usage)}
    return UpstreamResponse(body=_dumps(body), usage=usage)


def parse_response(endpoint: Endpoint, raw: bytes, created: int) -> UpstreamResponse:
    """A successful Messages API body (bytes) as an OpenAI body; an unreadable one is MALFORMED."""
    try:
        message = json.loads(raw)
        if message.get("type") != "message":
            raise ValueError(f"expected a message object, got type {message.get('type')!r}")
        return translate_response(endpoint, message, created)
    except _MALFORMED_DATA as exc:
        raise UpstreamError(
            ErrorClass.MALFORMED, f"malformed Anthropic response: {exc!r}", status=200
        ) from None


def error_from_event(event: Mapping[str, Any]) -> UpstreamError:
    """An in-stream ``error`` event, classified by the status Anthropic documents for its type."""
    error = event.get("error")
    error = error if isinstance(error, Mapping) else {}
    error_type = str(error.get("type") or "unknown_error")
    status = ERROR_TYPE_STATUS.get(error_type, 500)
    message = f"Anthropic stream {error_type}: {error.get('message') or '(no message)'}"
    return UpstreamError(classify_status(status), message, status=status, body=dict(event))


class StreamTranslator:
    """Turns Anthropic stream events (decoded JSON) into OpenAI chunks, one event at a time.

    All chunks share the message id and ``created``. ``usage`` is updated in place as
    ``message_start`` and ``message_delta`` arrive, so the gateway can read it even when the
    stream breaks. ``finished`` turns true at ``message_stop``.
    """

    def __init__(self, endpoint: Endpoint, created: int, usage: Usage | None = None) -> None:
        self.endpoint = endpoint
        self.created = created
        self.usage = usage if usage is not None else Usage()
        self.id = ""
        self.model = ""
        self.finished = False
        self._input: dict[str, int] = {}
        self._tool_index: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool_calls index

    def feed(self, event: Mapping[str, Any]) -> list[StreamChunk]:
        """The chunks one event produces (often none); an ``error`` event raises UpstreamError."""
        kind = event.get("type")
        if kind == "message_start":
            message = event["message"]
            self.id = message["id"]
            self.model = message["model"]
            self._update_usage(message.get("usage") or {})
            if self.endpoint == "chat":
                return [self._chunk({"role": "assistant", "content": ""})]
            return []
        if kind == "content_block_start":
            return self._block_start(event["index"], event["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(event["index"], event["delta"])
        if kind == "message_delta":
            self._update_usage(event.get("usage") or {})
            reason = finish_reason(event["delta"].get("stop_reason"))
            return [self._chunk({}, text="", finish=reason)] if reason else []
        if kind == "message_stop":
            self.finished = True
            obj = "chat.completion.chunk" if self.endpoint == "chat" else "text_completion"
            body = {**self._base(obj), "choices": [], "usage": openai_usage(self.usage)}
            return [StreamChunk(_dumps(body), usage_only=True)]
        if kind == "error":
            raise error_from_event(event)
        return []  # ping, content_block_stop, and event types added after this was written

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[StreamChunk]:
        if block["type"] == "text" and block.get("text"):
            return [self._text(block["text"])]
        if block["type"] == "tool_use" and self.endpoint == "chat":
            tool_index = self._tool_index[index] = len(self._tool_index)
            arguments = json.dumps(block["input"], ensure_ascii=False) if block.get("input") else ""
            call = {
                "index": tool_index,
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": arguments},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking and server-tool blocks have no OpenAI counterpart

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[StreamChunk]:
        if delta["type"] == "text_delta":
            return [self._text(delta["text"])] if delta["text"] else []
        if delta["type"] == "input_json_delta" and index in self._tool_index:
            partial = delta.get("partial_json") or ""
            if not partial:
                return []
            call = {"index": self._tool_index[index], "function": {"arguments": partial}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, signature and citation deltas

    def _update_usage(self, usage: Mapping[str, Any]) -> None:
        """Input counts come in ``message_start`` and may come, cumulative, in ``message_delta``."""
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            if usage.get(key) is not None:
                self._input[key] = int(usage[key])
        self.usage.prompt_tokens = sum(self._input.values())
        if usage.get("output_tokens") is not None:
            self.usage.completion_tokens = int(usage["output_tokens"])

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _text(self, text: str) -> StreamChunk:
        return self._chunk({"content": text}, text=text)

    def _chunk(self, delta: dict[str, Any], *, text: str = "", finish: str | None = None) -> StreamChunk:
        """A chat chunk carrying ``delta``, or for completions a ``text_completion`` carrying ``text``."""
        if self.endpoint == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return StreamChunk(_dumps({**self._base("chat.completion.chunk"), "choices": [choice]}))
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return StreamChunk(_dumps({**self._base("text_completion"), "choices": [choice]}))


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def error_from_exception(exc: Exception) -> UpstreamError:
    """Any failure of an SDK call or of reading its stream, classified once."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else None
        error_type = exc.type or "error"
        message = exc.api_message or exc.message
        return UpstreamError(
            classify_status(exc.status_code),
            f"Anthropic {exc.status_code} {error_type}: {message}",
            status=exc.status_code,
            retry_after=parse_retry_after(exc.response.headers),
            body=body,
        )
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return UpstreamError(ErrorClass.TIMEOUT, f"Anthropic request timed out: {_cause(exc)}")
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError | httpx2.StreamError):
        return UpstreamError(ErrorClass.CONNECT, f"Anthropic connection failed: {_cause(exc)}")
    if isinstance(exc, (anthropic.APIResponseValidationError, *_MALFORMED_DATA)):
        return UpstreamError(ErrorClass.MALFORMED, f"malformed Anthropic response: {exc!r}")
    return UpstreamError(ErrorClass.SERVER, f"Anthropic call failed: {exc!r}")


def _cause(exc: BaseException) -> str:
    """The innermost cause's text: the SDK's own connection messages say little."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------------


def sdk_timeout(timeouts: Timeouts) -> httpx2.Timeout:
    """Per-call SDK timeout. With the aiohttp transport ``total_s`` bounds each read (and pool wait),
    not the whole call; the gateway enforces TTFT and stalls around the stream."""
    return httpx2.Timeout(timeouts.total_s, connect=timeouts.connect_s)


async def _stream_chunks(
    response: httpx2.Response, translator: StreamTranslator
) -> AsyncIterator[StreamChunk]:
    """Decode the SSE body and translate it; every failure leaves as UpstreamError."""
    try:
        async for sse in anthropic.AsyncStream.raw_events(response):
            if not sse.data or sse.event == "ping":
                continue
            event = json.loads(sse.data)
            if not isinstance(event, dict):
                raise ValueError(f"stream event is not a JSON object: {sse.data[:200]!r}")
            for chunk in translator.feed(event):
                yield chunk
            if translator.finished:
                return
        raise UpstreamError(ErrorClass.CONNECT, "Anthropic stream ended before message_stop")
    except Exception as exc:
        raise error_from_exception(exc) from exc
    finally:
        await response.aclose()


class AnthropicProvider(Provider):
    """One Anthropic target: an ``AsyncAnthropic`` client over aiohttp, made once and reused."""

    def __init__(self, name: str, target: Target, api_key: str | None) -> None:
        super().__init__(name, target, api_key)
        limits = httpx2.Limits(
            max_connections=target.max_connections, max_keepalive_connections=target.max_connections
        )
        # Without a key the SDK would go looking for one (environment, profile files); a target
        # without a key (a local stand-in) sends no Authorization header instead.
        headers = None if api_key is not None else {"Authorization": anthropic.omit}
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key if api_key is not None else "",
            base_url=target.base_url,
            max_retries=0,
            timeout=sdk_timeout(target.timeouts),
            default_headers=cast(Any, headers),
            http_client=anthropic.DefaultAioHttpClient(limits=limits, timeout=sdk_timeout(target.timeouts)),
        )

    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts
    ) -> UpstreamResponse:
        params = translate_request(endpoint, payload)
        created = int(time.time())
        try:
            # The streaming-response form returns at the headers, so ttft_s can bound them.
            async with contextlib.AsyncExitStack() as stack:
                opening = self._client.messages.with_streaming_response.create(**params, timeout=sdk_timeout(timeouts))
                response = await headers_within(timeouts.ttft_s, stack.enter_async_context(opening))
                body = await response.read()
        except Exception as exc:
            raise error_from_exception(exc) from exc
        return parse_response(endpoint, body, created)

    async def open_stream(
        self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts
    ) -> UpstreamStream:
        params = translate_request(endpoint, payload)
        created = int(time.time())
        try:
            raw = await self._client.messages.with_raw_response.create(
                **params, stream=True, timeout=sdk_timeout(timeouts)
            )
        except Exception as exc:
            raise error_from_exception(exc) from exc
        response = raw.http_response
        translator = StreamTranslator(endpoint, created)
        return UpstreamStream(
            chunks=_stream_chunks(response, translator), usage=translator.usage, close=response.aclose
        )

    async def aclose(self) -> None:
        await self._client.close()
