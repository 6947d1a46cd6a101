"""The Anthropic adapter: pure translation both ways, then the real SDK against a loopback server.

The event and message fixtures follow the shapes in Anthropic's Messages API and streaming docs.
The loopback server below speaks just enough of the Messages API (JSON, SSE, error bodies) to
drive the official SDK through its real HTTP stack, so status errors, transport failures and
stream decoding are exercised as they happen in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import pytest
from aiohttp import web

from services.gateway.config import Target, Timeouts
from services.gateway.health import ErrorClass
from services.gateway.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    StreamTranslator,
    error_from_event,
    finish_reason,
    parse_response,
    translate_request,
    translate_response,
    usage_from_anthropic,
)
from services.gateway.providers.base import Endpoint, UpstreamError, UpstreamStream, Usage

CREATED = 1_760_000_000


def chat(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-test", "messages": messages, **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# ---------------------------------------------------------------------------------------------------
# Request translation
# ---------------------------------------------------------------------------------------------------


def test_minimal_chat_request_defaults_max_tokens() -> None:
    params = translate_request("chat", chat([user("Hello")]))
    assert params == {
        "model": "claude-test",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }


def test_system_and_developer_messages_join_the_top_level_system() -> None:
    params = translate_request(
        "chat",
        chat(
            [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                user("Hi"),
                {"role": "system", "content": "Never apologise."},
            ]
        ),
    )
    assert params["system"] == "You are terse.\n\nAnswer in French.\n\nNever apologise."
    assert [m["role"] for m in params["messages"]] == ["user"]


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert translate_request("chat", chat([user("x")], max_tokens=10))["max_tokens"] == 10
    assert (
        translate_request("chat", chat([user("x")], max_tokens=10, max_completion_tokens=20))["max_tokens"]
        == 20
    )


def test_tool_calls_and_tool_results_round_trip() -> None:
    messages = [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "22C"}]},
        user("Thanks"),
    ]
    params = translate_request("chat", chat(messages))
    assert params["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "22C"}],
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


def test_assistant_with_only_tool_calls_has_no_empty_text_block() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    params = translate_request(
        "chat", chat([user("go"), {"role": "assistant", "content": None, "tool_calls": [call]}])
    )
    assert params["messages"][1]["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]


def test_consecutive_same_role_messages_are_merged() -> None:
    params = translate_request("chat", chat([user("a"), user([{"type": "text", "text": "b"}])]))
    assert params["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


def test_images_data_url_and_http_url() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    blocks = translate_request("chat", chat([user(content)]))["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


@pytest.mark.parametrize(
    "url",
    ["data:image/tiff;base64,AAAA", "data:image/png,rawbytes", "ftp://example.com/cat.png"],
)
def test_unusable_images_are_client_errors(url: str) -> None:
    with pytest.raises(UpstreamError) as info:
        translate_request("chat", chat([user([{"type": "image_url", "image_url": {"url": url}}])]))
    assert info.value.error_class is ErrorClass.CLIENT
    assert info.value.status == 400


def test_stop_user_and_tools() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "now"}},
    ]
    params = translate_request("chat", chat([user("x")], stop="END", user="u-42", tools=tools))
    assert params["stop_sequences"] == ["END"]
    assert params["metadata"] == {"user_id": "u-42"}
    assert params["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in params
    assert translate_request("chat", chat([user("x")], stop=["a", "b"]))["stop_sequences"] == ["a", "b"]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(tool_choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    payload = chat([user("x")], tools=tools, tool_choice=tool_choice)
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    assert translate_request("chat", payload)["tool_choice"] == expected


def test_sampling_parameters_are_not_forwarded() -> None:
    """API version 2026-10-21 (what SDK 2.x sends) answers 400 to any sampling parameter."""
    params = translate_request(
        "chat", chat([user("x")], temperature=1.7, top_p=0.9, seed=7, presence_penalty=0.5, stream=True)
    )
    assert not {"temperature", "top_p", "top_k", "seed", "presence_penalty", "stream"} & params.keys()


def test_json_schema_response_format_becomes_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    payload = chat(
        [user("x")], response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    )
    assert translate_request("chat", payload)["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 2},
        {"logprobs": True},
        {"top_logprobs": 3},
        {"logit_bias": {"50256": -100}},
        {"response_format": {"type": "json_object"}},
        {"functions": [{"name": "f"}]},
        {"modalities": ["text", "audio"]},
        {"tools": [{"type": "web_search"}]},
        {"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]},
    ],
)
def test_unsupported_fields_are_client_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as info:
        translate_request("chat", chat([user("x")], **fields))
    assert info.value.error_class is ErrorClass.CLIENT
    assert info.value.status == 400


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "only a system prompt"}],
        [
            user("x"),
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]},
        ],
        [{"role": "function", "name": "f", "content": "x"}],
        [user([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])],
        [{"content": "no role"}],
        [{"role": "tool", "content": "missing tool_call_id"}],
    ],
)
def test_bad_messages_are_client_errors(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(UpstreamError) as info:
        translate_request("chat", chat(messages))
    assert info.value.error_class is ErrorClass.CLIENT


def test_completions_prompt_becomes_one_user_message() -> None:
    params = translate_request(
        "completions", {"model": "m", "prompt": ["Once upon"], "max_tokens": 16, "stop": "\n"}
    )
    assert params == {
        "model": "m",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Once upon"}]}],
        "stop_sequences": ["\n"],
    }
    for bad in (
        {"prompt": ["a", "b"]},
        {"prompt": [1, 2, 3]},
        {"prompt": "x", "echo": True},
        {"prompt": "x", "logprobs": 2},
    ):
        with pytest.raises(UpstreamError):
            translate_request("completions", {"model": "m", **bad})


# ---------------------------------------------------------------------------------------------------
# Response translation
# ---------------------------------------------------------------------------------------------------


def message(
    content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int
) -> dict[str, Any]:
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 2095, "output_tokens": 503, **usage},
    }


def test_text_response() -> None:
    content = [{"type": "text", "text": "Hi! "}, {"type": "text", "text": "My name is Claude."}]
    result = translate_response("chat", message(content), CREATED)
    body = json.loads(result.body)
    assert body == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "created": CREATED,
        "model": "claude-sonnet-4-6",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
    }
    assert result.usage == Usage(prompt_tokens=2095, completion_tokens=503)


def test_tool_use_response() -> None:
    content = [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"city": "Paris"},
        },
    ]
    body = json.loads(translate_response("chat", message(content, "tool_use"), CREATED).body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_01A09q90qw90lq917835lq9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, None),
    ],
)
def test_each_stop_reason(stop_reason: str | None, expected: str | None) -> None:
    assert finish_reason(stop_reason) == expected
    body = json.loads(
        translate_response("chat", message([{"type": "text", "text": "x"}], stop_reason), CREATED).body
    )
    assert body["choices"][0]["finish_reason"] == expected


def test_cached_input_counts_as_prompt_tokens() -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
        "output_tokens": 3,
    }
    assert usage_from_anthropic(usage) == Usage(prompt_tokens=115, completion_tokens=3)
    assert usage_from_anthropic(
        {"input_tokens": 4, "cache_read_input_tokens": None, "output_tokens": 1}
    ) == Usage(4, 1)


def test_completions_response_is_a_text_completion() -> None:
    body = json.loads(
        translate_response("completions", message([{"type": "text", "text": "there"}]), CREATED).body
    )
    assert body["object"] == "text_completion"
    assert body["choices"] == [{"index": 0, "text": "there", "logprobs": None, "finish_reason": "stop"}]


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"type": "message"}', b'{"type": "error", "error": {}}']
)
def test_unreadable_success_body_is_malformed(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        parse_response("chat", raw, CREATED)
    assert info.value.error_class is ErrorClass.MALFORMED


# ---------------------------------------------------------------------------------------------------
# Stream translation
# ---------------------------------------------------------------------------------------------------

TEXT_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4-6",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    {"type": "message_stop"},
]

TOOL_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "stop_sequence": None,
            "usage": {"input_tokens": 472, "output_tokens": 2},
            "content": [],
            "stop_reason": None,
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "weather tool"},
    },
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking."}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {},
        },
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '{"city":'},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": ' "Paris"}'},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "content_block_start",
        "index": 3,
        "content_block": {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
    },
    {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    {"type": "content_block_stop", "index": 3},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89, "input_tokens": 472, "cache_read_input_tokens": 1000},
    },
    {"type": "message_stop"},
]


def run_translator(
    events: Iterable[dict[str, Any]], endpoint: Endpoint = "chat"
) -> tuple[list[dict[str, Any]], list[bool], StreamTranslator]:
    translator = StreamTranslator(endpoint, CREATED)
    bodies: list[dict[str, Any]] = []
    usage_only: list[bool] = []
    for event in events:
        for chunk in translator.feed(event):
            bodies.append(json.loads(chunk.data))
            usage_only.append(chunk.usage_only)
    return bodies, usage_only, translator


def test_text_stream_chunks() -> None:
    bodies, usage_only, translator = run_translator(TEXT_EVENTS)
    assert [b["choices"][0]["delta"] if b["choices"] else None for b in bodies] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": "!"},
        {},
        None,
    ]
    assert [b["choices"][0]["finish_reason"] for b in bodies[:-1]] == [None, None, None, "stop"]
    assert usage_only == [False, False, False, False, True]
    assert bodies[-1]["usage"] == {"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45}
    assert {b["id"] for b in bodies} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert {b["created"] for b in bodies} == {CREATED}
    assert {b["object"] for b in bodies} == {"chat.completion.chunk"}
    assert {b["model"] for b in bodies} == {"claude-sonnet-4-6"}
    assert translator.finished
    assert translator.usage == Usage(prompt_tokens=30, completion_tokens=15)


def test_tool_call_stream_chunks() -> None:
    bodies, _, translator = run_translator(TOOL_EVENTS)
    deltas = [b["choices"][0]["delta"] for b in bodies if b["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Checking."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_02",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert bodies[-2]["choices"][0]["finish_reason"] == "tool_calls"
    # message_delta's cumulative input counts (cache reads included) replace message_start's.
    assert bodies[-1]["usage"] == {"prompt_tokens": 1472, "completion_tokens": 89, "total_tokens": 1561}
    assert translator.usage == Usage(prompt_tokens=1472, completion_tokens=89)


def test_usage_is_updated_in_place() -> None:
    usage = Usage()
    translator = StreamTranslator("chat", CREATED, usage)
    translator.feed(TEXT_EVENTS[0])
    assert usage == Usage(prompt_tokens=30, completion_tokens=1)
    translator.feed(TEXT_EVENTS[6])
    assert usage == Usage(prompt_tokens=30, completion_tokens=15)


def test_completions_stream_chunks() -> None:
    bodies, usage_only, _ = run_translator(TEXT_EVENTS, "completions")
    assert {b["object"] for b in bodies} == {"text_completion"}
    assert [b["choices"][0]["text"] for b in bodies if b["choices"]] == ["Hello", "!", ""]
    assert [b["choices"][0]["finish_reason"] for b in bodies if b["choices"]] == [None, None, "stop"]
    assert usage_only == [False, False, False, True]


@pytest.mark.parametrize(
    ("error_type", "error_class", "status"),
    [
        ("overloaded_error", ErrorClass.SERVER, 529),
        ("api_error", ErrorClass.SERVER, 500),
        ("rate_limit_error", ErrorClass.RATE_LIMIT, 429),
        ("invalid_request_error", ErrorClass.CLIENT, 400),
        ("authentication_error", ErrorClass.AUTH, 401),
        ("something_new", ErrorClass.SERVER, 500),
    ],
)
def test_error_event_raises(error_type: str, error_class: ErrorClass, status: int) -> None:
    event = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
    translator = StreamTranslator("chat", CREATED)
    translator.feed(TEXT_EVENTS[0])
    with pytest.raises(UpstreamError) as info:
        translator.feed(event)
    assert (info.value.error_class, info.value.status) == (error_class, status)
    assert info.value.message == f"Anthropic stream {error_type}: Overloaded"
    assert error_from_event(event).body == event


# ---------------------------------------------------------------------------------------------------
# Through the real SDK, against a loopback Anthropic-speaking server
# ---------------------------------------------------------------------------------------------------


def sse(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def error_body(error_type: str, text: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": text},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


class FakeAnthropic:
    """POST /v1/messages; the requested model names the behaviour, so one server serves every test."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        model = body["model"]
        if model == "rate-limited":
            return web.json_response(
                error_body(
                    "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"
                ),
                status=429,
                headers={"retry-after": "3"},
            )
        if model == "overloaded":
            return web.json_response(error_body("overloaded_error", "Overloaded"), status=529)
        if model == "bad-request":
            return web.json_response(error_body("invalid_request_error", "max_tokens: too large"), status=400)
        if model == "slow":
            await asyncio.sleep(1.0)
        if not body.get("stream"):
            if model == "garbage":
                return web.Response(body=b"<html>oops</html>", content_type="application/json")
            content = [
                {"type": "text", "text": "Hi there"},
                {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "x"}},
            ]
            return web.json_response(
                message(content, "tool_use", cache_creation_input_tokens=7) | {"model": model}
            )
        return await self.stream(request, model)

    async def stream(self, request: web.Request, model: str) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        if model == "error-event":
            await response.write(
                sse(
                    [
                        *TEXT_EVENTS[:2],
                        {"type": "error", "error": error_body("overloaded_error", "Overloaded")["error"]},
                    ]
                )
            )
        elif model == "cut":
            await response.write(sse(TEXT_EVENTS[:4]))
            assert request.transport is not None
            request.transport.abort()
            return response
        elif model == "stall":
            await response.write(sse(TEXT_EVENTS[:2]))
            await asyncio.sleep(1.0)
        elif model == "garbage":
            await response.write(sse(TEXT_EVENTS[:2]) + b"event: content_block_delta\ndata: {not json\n\n")
        elif model == "truncated":
            await response.write(sse(TEXT_EVENTS[:5]))
        else:
            await response.write(sse(TOOL_EVENTS))
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def fake_anthropic() -> AsyncIterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic()
    app = web.Application()
    app.router.add_post("/v1/messages", fake.messages)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


TIMEOUTS = Timeouts(connect_s=2.0, total_s=5.0)
SHORT = Timeouts(connect_s=0.3, total_s=0.3)


def with_provider(
    scenario: Callable[[AnthropicProvider, FakeAnthropic], Awaitable[None]], api_key: str | None = "sk-test"
) -> None:
    async def main() -> None:
        async with fake_anthropic() as (fake, url):
            provider = AnthropicProvider(
                "anthropic-test", Target(provider="anthropic", model="m", base_url=url), api_key
            )
            try:
                await scenario(provider, fake)
            finally:
                await provider.aclose()

    asyncio.run(main())


async def drain(stream: UpstreamStream) -> list[dict[str, Any]]:
    try:
        return [json.loads(chunk.data) async for chunk in stream.chunks]
    finally:
        await stream.aclose()


def test_complete_over_loopback() -> None:
    async def scenario(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
        payload = chat(
            [{"role": "system", "content": "Be brief."}, user("hi")], model="canned", temperature=0.2
        )
        result = await provider.complete("chat", payload, TIMEOUTS)
        body = json.loads(result.body)
        assert body["model"] == "canned"
        assert body["choices"][0]["message"]["content"] == "Hi there"
        assert body["choices"][0]["message"]["tool_calls"][0]["function"] == {
            "name": "lookup",
            "arguments": '{"q": "x"}',
        }
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        assert result.usage == Usage(prompt_tokens=2102, completion_tokens=503)
        sent = fake.requests[0]
        assert sent["system"] == "Be brief." and sent["max_tokens"] == DEFAULT_MAX_TOKENS
        assert "temperature" not in sent and "stream" not in sent
        assert fake.headers[0]["authorization"] == "Bearer sk-test"
        assert fake.headers[0]["x-stainless-retry-count"] == "0"

    with_provider(scenario)


def test_no_api_key_sends_no_authorization() -> None:
    async def scenario(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
        await provider.complete("completions", {"model": "canned", "prompt": "hi"}, TIMEOUTS)
        assert "authorization" not in fake.headers[0] and "x-api-key" not in fake.headers[0]

    with_provider(scenario, api_key=None)


def test_stream_over_loopback() -> None:
    async def scenario(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
        stream = await provider.open_stream(
            "chat", chat([user("weather?")], model="canned", stream=True), TIMEOUTS
        )
        bodies = await drain(stream)
        assert fake.requests[0]["stream"] is True
        deltas = [b["choices"][0]["delta"] for b in bodies if b["choices"]]
        assert deltas[0] == {"role": "assistant", "content": ""}
        arguments = "".join(
            call["function"]["arguments"]
            for delta in deltas
            for call in delta.get("tool_calls", [])
            if call["index"] == 0
        )
        assert json.loads(arguments) == {"city": "Paris"}
        assert bodies[-1]["choices"] == [] and bodies[-1]["usage"]["prompt_tokens"] == 1472
        assert stream.usage == Usage(prompt_tokens=1472, completion_tokens=89)

    with_provider(scenario)


async def expect_error(call: Awaitable[Any]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await call
    return info.value


@pytest.mark.parametrize("streaming", [False, True])
def test_status_errors_over_loopback(streaming: bool) -> None:
    async def scenario(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
        def call(model: str) -> Awaitable[Any]:
            payload = chat([user("x")], model=model)
            if streaming:
                return provider.open_stream("chat", payload, TIMEOUTS)
            return provider.complete("chat", payload, TIMEOUTS)

        limited = await expect_error(call("rate-limited"))
        assert (limited.error_class, limited.status, limited.retry_after) == (ErrorClass.RATE_LIMIT, 429, 3.0)
        assert "per-minute rate limit" in limited.message
        assert limited.body is not None and limited.body["error"]["type"] == "rate_limit_error"

        overloaded = await expect_error(call("overloaded"))
        assert (overloaded.error_class, overloaded.status) == (ErrorClass.SERVER, 529)
        assert "Overloaded" in overloaded.message and overloaded.retry_after is None

        bad = await expect_error(call("bad-request"))
        assert (bad.error_class, bad.status) == (ErrorClass.CLIENT, 400)
        assert len(fake.requests) == 3  # max_retries=0: the SDK never retries on its own

    with_provider(scenario)


@pytest.mark.parametrize(
    ("model", "error_class"),
    [
        ("error-event", ErrorClass.SERVER),
        ("cut", ErrorClass.CONNECT),
        ("stall", ErrorClass.TIMEOUT),
        ("garbage", ErrorClass.MALFORMED),
        ("truncated", ErrorClass.CONNECT),
    ],
)
def test_mid_stream_failures_over_loopback(model: str, error_class: ErrorClass) -> None:
    async def scenario(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
        stream = await provider.open_stream("chat", chat([user("x")], model=model), SHORT)
        received: list[dict[str, Any]] = []
        with pytest.raises(UpstreamError) as info:
            async for chunk in stream.chunks:
                received.append(json.loads(chunk.data))
        await stream.aclose()
        assert info.value.error_class is error_class
        assert received[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert stream.usage.prompt_tokens == 30

    with_provider(scenario)


def test_transport_failures_before_the_answer() -> None:
    async def scenario(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
        slow = await expect_error(provider.complete("chat", chat([user("x")], model="slow"), SHORT))
        assert slow.error_class is ErrorClass.TIMEOUT
        garbage = await expect_error(provider.complete("chat", chat([user("x")], model="garbage"), TIMEOUTS))
        assert garbage.error_class is ErrorClass.MALFORMED

    with_provider(scenario)


def test_connection_refused_is_connect() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        target = Target(provider="anthropic", model="m", base_url=f"http://127.0.0.1:{port}")
        provider = AnthropicProvider("anthropic-test", target, "sk-test")
        try:
            error = await expect_error(provider.complete("chat", chat([user("x")]), TIMEOUTS))
            assert error.error_class is ErrorClass.CONNECT
            error = await expect_error(provider.open_stream("chat", chat([user("x")]), TIMEOUTS))
            assert error.error_class is ErrorClass.CONNECT
        finally:
            await provider.aclose()

    asyncio.run(main())


def test_unsupported_request_fails_before_any_network_call() -> None:
    async def scenario(provider: AnthropicProvider, fake: FakeAnthropic) -> None:
        error = await expect_error(
            provider.complete("chat", chat([user("x")], model="canned", n=3), TIMEOUTS)
        )
        assert (error.error_class, error.status) == (ErrorClass.CLIENT, 400)
        error = await expect_error(
            provider.open_stream("chat", chat([user("x")], model="canned", logprobs=True), TIMEOUTS)
        )
        assert error.error_class is ErrorClass.CLIENT
        assert fake.requests == []

    with_provider(scenario)
