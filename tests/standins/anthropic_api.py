"""Anthropic wire protocol: POST /v1/messages (JSON and the exact SSE event sequence), GET /v1/models.

Token counts are deterministic word counts (system prompt included) so tests can assert exact usage.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.standins.server import Answer, JsonAnswer, SseEvent, StreamAnswer, sse_json, words_of

if TYPE_CHECKING:
    from tests.standins.server import Standin

TOOL_INPUT = {"city": "Paris"}
# Streamed input_json_delta fragments; joined they are the JSON of TOOL_INPUT.
TOOL_INPUT_FRAGMENTS = ['{"city"', ': "Par', 'is"}']
# The text block Claude typically emits before a tool_use block.
TOOL_PREAMBLE = "Let me check the weather."

_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    405: ("invalid_request_error", "Method not allowed."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error(status: int, message: str | None = None) -> JsonAnswer:
    etype, default_message = _ERROR_TYPES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
    )
    body = {"type": "error", "error": {"type": etype, "message": message or default_message}}
    return JsonAnswer(status, body, {"request-id": f"req_{uuid.uuid4().hex[:24]}"})


def _block_text(content: Any) -> str:
    """Text of a message content (string or blocks); tool_result contents count, images do not."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(_block_text(block.get("content")))
    return " ".join(parts)


def _user_text(content: Any) -> str:
    """Only what the user typed (text blocks), so a tool_result turn never re-triggers a tool call."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def apply_limits(reply: str, max_tokens: int, stop_sequences: Any) -> tuple[list[str], str, str | None]:
    """Words to emit, stop_reason and stop_sequence (max_tokens wins when it cuts earlier)."""
    text, matched = reply, None
    if isinstance(stop_sequences, list):
        hits = [(reply.find(s), s) for s in stop_sequences if isinstance(s, str) and s and s in reply]
        if hits:
            index, matched = min(hits)
            text = reply[:index]
    words = words_of(text)
    if max_tokens < len(words):
        return words[: max(0, max_tokens)], "max_tokens", None
    if matched is not None:
        return words, "stop_sequence", matched
    return words, "end_turn", None


class AnthropicProvider:
    def __init__(self, standin: Standin) -> None:
        self.standin = standin

    def is_completion(self, method: str, path: str) -> bool:
        return path == "/v1/messages"

    def error(self, status: int, message: str | None = None) -> JsonAnswer:
        return anthropic_error(status, message)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> Answer:
        routes = {"/v1/messages": ("POST", self._messages), "/v1/models": ("GET", self._models)}
        if path not in routes:
            return anthropic_error(404, f"Not found: {path}")
        want, handler = routes[path]
        if method != want:
            return anthropic_error(405, f"Method {method} not allowed for {path}")
        # Anthropic SDK 2.x sends the API key as "Authorization: Bearer", older ones as x-api-key.
        bearer = headers.get("authorization", "")
        has_bearer = bearer.startswith("Bearer ") and bool(bearer[len("Bearer ") :].strip())
        if not headers.get("x-api-key", "").strip() and not has_bearer:
            return anthropic_error(401, "x-api-key header is required")
        if not headers.get("anthropic-version", "").strip():
            return anthropic_error(400, "anthropic-version: header is required")
        if method == "POST" and not isinstance(body, dict):
            return anthropic_error(400, "The request body must be a JSON object.")
        return handler(body)

    def _models(self, body: Any) -> Answer:
        name = self.standin.name
        model = {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
        return JsonAnswer(200, {"data": [model], "has_more": False, "first_id": name, "last_id": name})

    def _messages(self, body: dict[str, Any]) -> Answer:
        model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
        if not isinstance(model, str) or not model:
            return anthropic_error(400, "model: Field required")
        if not isinstance(messages, list) or not messages:
            return anthropic_error(400, "messages: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            return anthropic_error(400, "max_tokens: Field required")
        input_tokens = len(words_of(_block_text(body.get("system")))) + sum(
            len(words_of(_block_text(m.get("content")))) for m in messages if isinstance(m, dict)
        )
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        tools = body.get("tools")
        tool_name: str | None = None
        if (
            isinstance(tools, list)
            and tools
            and isinstance(tools[0], dict)
            and last.get("role") == "user"
            and "weather" in _user_text(last.get("content")).lower()
        ):
            tool_name = str(tools[0].get("name", "tool"))

        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
        if tool_name is not None:
            words, stop_reason, stop_sequence = words_of(TOOL_PREAMBLE), "tool_use", None
            output_tokens = len(words) + len(TOOL_INPUT)
        else:
            words, stop_reason, stop_sequence = apply_limits(self.standin.reply, max_tokens, body.get("stop_sequences"))
            output_tokens = len(words)

        if not body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": " ".join(words)}]
            if tool_name is not None:
                content.append({"type": "tool_use", "id": "toolu_01", "name": tool_name, "input": TOOL_INPUT})
            payload = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
            return JsonAnswer(200, payload, headers)

        events: list[SseEvent] = [
            sse_json(
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                    },
                },
                event="message_start",
            ),
            sse_json(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                event="content_block_start",
            ),
            sse_json({"type": "ping"}, event="ping"),
        ]
        for i, word in enumerate(words):
            events.append(
                sse_json(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": word if i == 0 else " " + word},
                    },
                    event="content_block_delta",
                    content=True,
                )
            )
        events.append(sse_json({"type": "content_block_stop", "index": 0}, event="content_block_stop"))
        if tool_name is not None:
            events.append(
                sse_json(
                    {
                        "type": "content_block_start",
                        "index": 1,
                        "content_block": {"type": "tool_use", "id": "toolu_01", "name": tool_name, "input": {}},
                    },
                    event="content_block_start",
                )
            )
            events += [
                sse_json(
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    },
                    event="content_block_delta",
                    content=True,
                )
                for fragment in TOOL_INPUT_FRAGMENTS
            ]
            events.append(sse_json({"type": "content_block_stop", "index": 1}, event="content_block_stop"))
        events += [
            sse_json(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": {"output_tokens": output_tokens},
                },
                event="message_delta",
            ),
            sse_json({"type": "message_stop"}, event="message_stop"),
        ]
        return StreamAnswer(events, headers)
