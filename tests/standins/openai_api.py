"""OpenAI wire protocol: /v1/chat/completions, /v1/completions, /v1/models (JSON and SSE).

Token counts are deterministic word counts so tests can assert exact usage numbers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tests.standins.server import Answer, JsonAnswer, SseEvent, StreamAnswer, sse_json, words_of

if TYPE_CHECKING:
    from tests.standins.server import Standin

TOOL_ARGUMENTS = '{"city": "Paris"}'
# How the arguments are split into streamed fragments (joined they are TOOL_ARGUMENTS).
TOOL_ARGUMENT_FRAGMENTS = ['{"', 'city": "', "Paris", '"}']

_ERROR_TYPES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


def openai_error(status: int, message: str | None = None, code: str | None = None) -> JsonAnswer:
    etype, default_code, default_message = _ERROR_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
    )
    body = {
        "error": {
            "message": message or default_message,
            "type": etype,
            "param": None,
            "code": code or default_code,
        }
    }
    return JsonAnswer(status, body, {"x-request-id": f"req_{uuid.uuid4().hex[:24]}"})


def count_content_words(content: Any) -> int:
    """Words in a message content: a string, or a list of parts whose text parts count."""
    if isinstance(content, str):
        return len(words_of(content))
    if isinstance(content, list):
        return sum(len(words_of(part.get("text", ""))) for part in content if isinstance(part, dict))
    return 0


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def apply_limits(reply: str, max_tokens: Any, stop: Any) -> tuple[list[str], str]:
    """Words to emit and the finish reason: `stop` cuts the reply before a stop string, then
    `max_tokens` (in words) truncates with "length"."""
    text = reply
    stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str)]
    hits = [text.find(s) for s in stops if s and s in text]
    if hits:
        text = text[: min(hits)]
    words = words_of(text)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens < len(words):
        return words[: max(0, max_tokens)], "length"
    return words, "stop"


def _stream_pieces(words: list[str]) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class OpenAIProvider:
    def __init__(self, standin: Standin) -> None:
        self.standin = standin

    def is_completion(self, method: str, path: str) -> bool:
        return path in ("/v1/chat/completions", "/v1/completions")

    def reply_for(self, body: dict[str, Any]) -> str:
        """The text a chat request is answered with (the judge stand-in answers judge prompts its own way)."""
        return self.standin.reply

    def error(self, status: int, message: str | None = None) -> JsonAnswer:
        return openai_error(status, message)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> Answer:
        routes = {
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/models": ("GET", self._models),
        }
        if path not in routes:
            return openai_error(404, f"Invalid URL ({method} {path})", code="unknown_url")
        want, handler = routes[path]
        if method != want:
            return openai_error(405, f"Method {method} not allowed for {path}")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            return openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code=None,
            )
        if method == "POST" and not isinstance(body, dict):
            return openai_error(400, "The request body must be a JSON object.")
        return handler(body)

    # -- /v1/models ---------------------------------------------------------------------------------

    def _models(self, body: Any) -> Answer:
        model = {"id": self.standin.name, "object": "model", "created": 1700000000, "owned_by": "standin"}
        return JsonAnswer(200, {"object": "list", "data": [model]})

    # -- /v1/chat/completions -----------------------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> Answer:
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            return openai_error(400, "you must provide a model parameter")
        if not isinstance(messages, list) or not messages:
            return openai_error(400, "'messages' must be a non-empty array", code="invalid_value")
        prompt_tokens = sum(count_content_words(m.get("content")) for m in messages if isinstance(m, dict))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        tools = body.get("tools")
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        # Only when the conversation ends on the user's question: after a role "tool" message the
        # model answers in text, so a tool loop terminates.
        tool_name: str | None = None
        if (
            isinstance(tools, list)
            and tools
            and last.get("role") == "user"
            and "weather" in _content_text(last.get("content")).lower()
        ):
            tool_name = str((tools[0].get("function") or {}).get("name", "tool"))
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        headers = {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", "openai-processing-ms": "1"}

        if tool_name is not None:
            words, finish = [], "tool_calls"
            completion_tokens = len(words_of(TOOL_ARGUMENTS))
        else:
            words, finish = apply_limits(self.reply_for(body), max_tokens, body.get("stop"))
            completion_tokens = len(words)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": " ".join(words), "refusal": None}
            if tool_name is not None:
                message["content"] = None
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": tool_name, "arguments": TOOL_ARGUMENTS},
                    }
                ]
            payload = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
                "system_fingerprint": "fp_standin",
            }
            return JsonAnswer(200, payload, headers)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, content: bool = False) -> SseEvent:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return sse_json(obj, content=content)

        events: list[SseEvent] = []
        if tool_name is not None:
            events.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": tool_name, "arguments": ""},
                            }
                        ],
                    }
                )
            )
            events += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}, content=True)
                for frag in TOOL_ARGUMENT_FRAGMENTS
            ]
        else:
            events.append(chunk({"role": "assistant", "content": ""}))
            events += [chunk({"content": piece}, content=True) for piece in _stream_pieces(words)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append(
                sse_json(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "system_fingerprint": "fp_standin",
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        events.append(SseEvent("[DONE]"))
        return StreamAnswer(events, headers)

    # -- /v1/completions ----------------------------------------------------------------------------

    def _completions(self, body: dict[str, Any]) -> Answer:
        model, prompt = body.get("model"), body.get("prompt")
        if not isinstance(model, str) or not model:
            return openai_error(400, "you must provide a model parameter")
        if prompt is None:
            return openai_error(400, "you must provide a prompt parameter")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        prompt_tokens = sum(len(words_of(p)) if isinstance(p, str) else 1 for p in prompts)
        words, finish = apply_limits(self.standin.reply, body.get("max_tokens"), body.get("stop"))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        completion_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        headers = {"x-request-id": f"req_{uuid.uuid4().hex[:24]}", "openai-processing-ms": "1"}

        if not body.get("stream"):
            payload = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": " ".join(words), "logprobs": None, "finish_reason": finish}],
                "usage": usage,
                "system_fingerprint": "fp_standin",
            }
            return JsonAnswer(200, payload, headers)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(text: str, finish_reason: str | None = None, content: bool = False) -> SseEvent:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return sse_json(obj, content=content)

        events = [chunk(piece, content=True) for piece in _stream_pieces(words)]
        events.append(chunk("", finish))
        if include_usage:
            events.append(
                sse_json(
                    {
                        "id": completion_id,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "system_fingerprint": "fp_standin",
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        events.append(SseEvent("[DONE]"))
        return StreamAnswer(events, headers)
