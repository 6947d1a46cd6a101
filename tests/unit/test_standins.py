"""The stand-in upstreams, proven with the real OpenAI and Anthropic SDKs over loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tests.standins import Fault, RecordedRequest, Standin

ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "say hello to me"}]
WEATHER_TOOL_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
WEATHER_TOOL_ANTHROPIC = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def oai_server() -> Iterator[Standin]:
    with Standin(kind="openai", name="up-a", reply="Hello from up-a") as s:
        yield s


@pytest.fixture(scope="module")
def ant_server() -> Iterator[Standin]:
    with Standin(kind="anthropic", name="up-b", reply="Hello from up-b") as s:
        yield s


@pytest.fixture
def oai(oai_server: Standin) -> Standin:
    oai_server.reset()
    return oai_server


@pytest.fixture
def ant(ant_server: Standin) -> Standin:
    ant_server.reset()
    return ant_server


@pytest.fixture
def oc(oai: Standin) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=oai.url + "/v1", api_key="k", max_retries=0, timeout=5) as client:
        yield client


@pytest.fixture
def ac(ant: Standin) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=ant.url, api_key="k", max_retries=0, timeout=5) as client:
        yield client


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def raw_sse(url: str, body: dict[str, Any], headers: dict[str, str]) -> list[tuple[str | None, str]]:
    """(event, data) pairs of an SSE response, read without any SDK."""
    pairs: list[tuple[str | None, str]] = []
    with httpx2.stream("POST", url, json=body, headers=headers, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: str | None = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        pairs.append((event, data))
    return pairs


# --------------------------------------------------------------------------------------------------
# Lifecycle and control surface
# --------------------------------------------------------------------------------------------------


def test_start_picks_free_port_and_stop_is_prompt() -> None:
    s = Standin(kind="openai").start()
    try:
        assert s.port > 0 and s.url == f"http://127.0.0.1:{s.port}"
        assert httpx2.get(s.url + "/v1/models", headers={"authorization": "Bearer k"}).status_code == 200
    finally:
        began = time.monotonic()
        s.stop()
    assert time.monotonic() - began < 2
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(s.url + "/v1/models", timeout=1)
    # A restart keeps the port, so an "upstream down, then back" scenario keeps one URL.
    url = s.url
    with s:
        assert s.url == url
        assert httpx2.get(s.url + "/v1/models", headers={"authorization": "Bearer k"}).status_code == 200


def test_stop_cuts_a_stalled_stream_short(oc: openai.OpenAI) -> None:
    s = Standin(kind="openai").start()
    s.push(Fault.stall(1, 30))
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="k", max_retries=0, timeout=10)
    stream = client.chat.completions.create(model="m", messages=USER, stream=True)
    next(stream)
    began = time.monotonic()
    s.stop()
    assert time.monotonic() - began < 3
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    client.close()


def test_queue_is_fifo_then_default_then_normal(oai: Standin, oc: openai.OpenAI) -> None:
    oai.push(Fault.status(500), Fault.ok(), Fault.status(502))
    oai.set_default(Fault.status(503))
    with pytest.raises(openai.InternalServerError):
        oc.chat.completions.create(model="m", messages=USER)
    assert oc.chat.completions.create(model="m", messages=USER).choices[0].message.content
    oc.models.list()  # model listings do not consume faults
    with pytest.raises(openai.InternalServerError) as second:
        oc.chat.completions.create(model="m", messages=USER)
    assert second.value.status_code == 502
    with pytest.raises(openai.InternalServerError) as default:
        oc.chat.completions.create(model="m", messages=USER)
    assert default.value.status_code == 503
    oai.set_default(None)
    assert oc.chat.completions.create(model="m", messages=USER).choices[0].finish_reason == "stop"
    assert [r.path for r in oai.requests].count("/v1/chat/completions") == 5
    oai.push(Fault.status(500))
    oai.reset()
    assert oai.requests == [] and oai.completed_streams == 0
    assert oc.chat.completions.create(model="m", messages=USER).choices[0].finish_reason == "stop"


def test_default_may_be_a_function_drawing_one_fault_per_request(oai: Standin, oc: openai.OpenAI) -> None:
    drawn = itertools.cycle([Fault.status(500), Fault.ok()])
    oai.push(Fault.status(502))
    oai.set_default(lambda: next(drawn))
    statuses = []
    for _ in range(5):
        try:
            oc.chat.completions.create(model="m", messages=USER)
            statuses.append(200)
        except openai.InternalServerError as exc:
            statuses.append(exc.status_code)
    assert statuses == [502, 500, 200, 500, 200]  # the queue first, then one draw per request


# --------------------------------------------------------------------------------------------------
# OpenAI protocol
# --------------------------------------------------------------------------------------------------


def test_openai_chat_non_stream(oai: Standin, oc: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, *USER]
    resp = oc.chat.completions.create(model="gpt-x", messages=messages, temperature=0.2)
    assert resp.object == "chat.completion" and resp.model == "gpt-x"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "Hello from up-a"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (6, 3, 9)
    [req] = oai.requests
    assert isinstance(req, RecordedRequest)
    assert req.path == "/v1/chat/completions" and req.method == "POST"
    assert req.headers["authorization"] == "Bearer k"
    assert req.body["messages"][0] == {"role": "system", "content": "be brief"}
    assert req.body["temperature"] == 0.2


def test_openai_max_tokens_and_stop(oc: openai.OpenAI) -> None:
    short = oc.chat.completions.create(model="m", messages=USER, max_tokens=2)
    assert short.choices[0].message.content == "Hello from"
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 2
    newer = oc.chat.completions.create(model="m", messages=USER, max_completion_tokens=1)
    assert newer.choices[0].message.content == "Hello"
    stopped = oc.chat.completions.create(model="m", messages=USER, stop=["up-a"])
    assert stopped.choices[0].message.content == "Hello from"
    assert stopped.choices[0].finish_reason == "stop"


def test_openai_chat_stream_without_usage(oai: Standin, oc: openai.OpenAI) -> None:
    chunks = list(oc.chat.completions.create(model="m", messages=USER, stream=True))
    assert all(c.object == "chat.completion.chunk" and c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from up-a"
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["Hello", " from", " up-a"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert oai.completed_streams == 1 and oai.cancelled_streams == 0
    pairs = raw_sse(
        oai.url + "/v1/chat/completions",
        {"model": "m", "messages": USER, "stream": True},
        {"authorization": "Bearer k"},
    )
    assert pairs[-1] == (None, "[DONE]")
    assert all("usage" not in json.loads(data) for _, data in pairs[:-1])


def test_openai_chat_stream_with_usage(oai: Standin, oc: openai.OpenAI) -> None:
    chunks = list(
        oc.chat.completions.create(model="m", messages=USER, stream=True, stream_options={"include_usage": True})
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 3)
    assert chunks[-2].choices[0].finish_reason == "stop"
    pairs = raw_sse(
        oai.url + "/v1/chat/completions",
        {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}},
        {"authorization": "Bearer k"},
    )
    payloads = [json.loads(data) for _, data in pairs[:-1]]
    assert all(p["usage"] is None for p in payloads[:-1])
    assert payloads[-1]["usage"]["total_tokens"] == 7
    assert pairs[-1] == (None, "[DONE]")


def test_openai_tool_call(oc: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    resp = oc.chat.completions.create(model="m", messages=messages, tools=WEATHER_TOOL_OPENAI)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("call_1", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    chunks = list(oc.chat.completions.create(model="m", messages=messages, tools=WEATHER_TOOL_OPENAI, stream=True))
    first = chunks[0].choices[0].delta.tool_calls
    assert first is not None and first[0].id == "call_1" and first[0].function is not None
    assert first[0].function.name == "get_weather" and first[0].function.arguments == ""
    args = "".join(
        (tc.function.arguments or "") if tc.function else ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
        if tc.index == 0
    )
    assert json.loads(args) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # After the tool result the model answers in text, so agent loops terminate.
    follow_up = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    answer = oc.chat.completions.create(model="m", messages=follow_up, tools=WEATHER_TOOL_OPENAI)
    assert answer.choices[0].finish_reason == "stop"
    # Without tools the word "weather" is just a word.
    plain = oc.chat.completions.create(model="m", messages=messages)
    assert plain.choices[0].message.content == "Hello from up-a"


def test_openai_completions(oc: openai.OpenAI) -> None:
    resp = oc.completions.create(model="m", prompt="once upon a time")
    assert resp.object == "text_completion" and resp.model == "m"
    assert resp.choices[0].text == "Hello from up-a" and resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.prompt_tokens == 4
    short = oc.completions.create(model="m", prompt="x", max_tokens=1)
    assert (short.choices[0].text, short.choices[0].finish_reason) == ("Hello", "length")
    chunks = list(oc.completions.create(model="m", prompt="x", stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from up-a"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_openai_models_and_auth(oai: Standin, oc: openai.OpenAI) -> None:
    assert [m.id for m in oc.models.list()] == ["up-a"]
    resp = httpx2.post(oai.url + "/v1/chat/completions", json={"model": "m", "messages": USER})
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError):
        oc.chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.NotFoundError):
        oc.get("/nope", cast_to=object)


def test_async_openai_client_streams(oai: Standin) -> None:
    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=oai.url + "/v1", api_key="k", max_retries=0) as client:
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == "Hello from up-a"


# --------------------------------------------------------------------------------------------------
# Faults through the OpenAI SDK
# --------------------------------------------------------------------------------------------------


def test_openai_status_faults(oai: Standin, oc: openai.OpenAI) -> None:
    oai.push(
        Fault.status(429, retry_after=2),
        Fault.status(429, retry_after_ms=1500),
        Fault.status(500),
        Fault.status(418, body={"error": {"message": "teapot", "type": "x", "param": None, "code": None}}),
    )
    with pytest.raises(openai.RateLimitError) as limited:
        oc.chat.completions.create(model="m", messages=USER, stream=True)
    assert limited.value.response.headers["retry-after"] == "2"
    assert isinstance(limited.value.body, dict) and limited.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as limited_ms:
        oc.chat.completions.create(model="m", messages=USER)
    assert limited_ms.value.response.headers["retry-after-ms"] == "1500"
    assert "retry-after" not in limited_ms.value.response.headers
    with pytest.raises(openai.InternalServerError) as server_error:
        oc.chat.completions.create(model="m", messages=USER)
    assert isinstance(server_error.value.body, dict) and server_error.value.body["type"] == "server_error"
    with pytest.raises(openai.APIStatusError) as teapot:
        oc.chat.completions.create(model="m", messages=USER)
    assert teapot.value.status_code == 418 and teapot.value.message.endswith("teapot")


def test_openai_cut(oai: Standin, oc: openai.OpenAI) -> None:
    oai.push(Fault.cut(), Fault.cut(2))
    with pytest.raises(openai.APIConnectionError) as before_response:
        oc.chat.completions.create(model="m", messages=USER)
    assert isinstance(before_response.value.__cause__, httpx2.RemoteProtocolError)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError) as mid_stream:
        for chunk in oc.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert isinstance(mid_stream.value.__cause__, httpx2.RemoteProtocolError)
    assert received == ["", "Hello", " from"]
    assert oai.completed_streams == 0 and oai.cancelled_streams == 0


def test_openai_malformed(oai: Standin, oc: openai.OpenAI) -> None:
    oai.push(Fault.malformed(), Fault.malformed())
    with pytest.raises(json.JSONDecodeError):
        oc.chat.completions.create(model="m", messages=USER)
    received = []
    with pytest.raises(json.JSONDecodeError):
        for chunk in oc.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk)
    assert len(received) == 1  # the role chunk; the second data line is broken


def test_openai_slow_first_byte(oai: Standin, oc: openai.OpenAI) -> None:
    oai.push(Fault.slow_first_byte(2), Fault.slow_first_byte(0.3), Fault.slow_first_byte(0.3))
    with pytest.raises(openai.APITimeoutError):
        oc.chat.completions.create(model="m", messages=USER, timeout=0.2)
    began = time.monotonic()
    assert oc.chat.completions.create(model="m", messages=USER).choices[0].message.content
    assert time.monotonic() - began >= 0.3
    began = time.monotonic()
    stream = oc.chat.completions.create(model="m", messages=USER, stream=True)
    assert time.monotonic() - began >= 0.3  # headers themselves were late
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "Hello from up-a"


def test_openai_stall(oai: Standin, oc: openai.OpenAI) -> None:
    oai.push(Fault.stall(1, 0.4), Fault.stall(1, 2))
    stamps: list[tuple[str, float]] = []
    for chunk in oc.chat.completions.create(model="m", messages=USER, stream=True):
        stamps.append((chunk.choices[0].delta.content or "", time.monotonic()))
    assert "".join(t for t, _ in stamps) == "Hello from up-a"
    assert stamps[2][1] - stamps[1][1] >= 0.35  # silence after "Hello"
    assert stamps[1][1] - stamps[0][1] < 0.2
    received = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in oc.chat.completions.create(model="m", messages=USER, stream=True, timeout=0.3):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Hello"]
    assert wait_for(lambda: oai.cancelled_streams == 1)


def test_openai_delay(oai: Standin, oc: openai.OpenAI) -> None:
    oai.push(Fault.delay(0.2), Fault.delay(0.05))
    began = time.monotonic()
    oc.chat.completions.create(model="m", messages=USER)
    assert time.monotonic() - began >= 0.2
    stamps = [time.monotonic() for _ in oc.chat.completions.create(model="m", messages=USER, stream=True)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 4 and all(g >= 0.04 for g in gaps)


def test_loopback_latency_is_not_inflated_by_delayed_acks(oc: openai.OpenAI) -> None:
    """Guards the TCP_NODELAY detail in Standin.start: without it each request costs ~40 ms."""
    oc.chat.completions.create(model="m", messages=USER)
    began = time.monotonic()
    for _ in range(5):
        oc.chat.completions.create(model="m", messages=USER)
    assert (time.monotonic() - began) / 5 < 0.03


def test_cancelled_and_completed_streams(oai: Standin, oc: openai.OpenAI) -> None:
    list(oc.chat.completions.create(model="m", messages=USER, stream=True))
    assert oai.completed_streams == 1
    oai.push(Fault.delay(0.1))
    stream = oc.chat.completions.create(model="m", messages=USER, stream=True)
    next(stream)
    stream.close()
    assert wait_for(lambda: oai.cancelled_streams == 1)
    assert oai.completed_streams == 1


# --------------------------------------------------------------------------------------------------
# Anthropic protocol
# --------------------------------------------------------------------------------------------------


def test_anthropic_non_stream(ant: Standin, ac: anthropic.Anthropic) -> None:
    msg = ac.messages.create(model="claude-x", max_tokens=100, system="be very brief", messages=USER)
    assert (msg.type, msg.role, msg.model) == ("message", "assistant", "claude-x")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from up-b"
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (7, 3)
    [req] = ant.requests
    assert req.path == "/v1/messages" and req.body["system"] == "be very brief"
    assert req.headers["anthropic-version"]


def test_anthropic_limits(ac: anthropic.Anthropic) -> None:
    short = ac.messages.create(model="m", max_tokens=1, messages=USER)
    assert short.content[0].type == "text" and short.content[0].text == "Hello"
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 1
    stopped = ac.messages.create(model="m", max_tokens=100, messages=USER, stop_sequences=["up-b"])
    assert stopped.content[0].type == "text" and stopped.content[0].text == "Hello from"
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "up-b")
    both = ac.messages.create(model="m", max_tokens=1, messages=USER, stop_sequences=["up-b"])
    assert both.stop_reason == "max_tokens"


def test_anthropic_tool_use(ac: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    msg = ac.messages.create(model="m", max_tokens=100, messages=messages, tools=WEATHER_TOOL_ANTHROPIC)
    assert msg.stop_reason == "tool_use"
    tool = msg.content[-1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_01", "get_weather", {"city": "Paris"})
    with ac.messages.stream(model="m", max_tokens=100, messages=messages, tools=WEATHER_TOOL_ANTHROPIC) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[-1].type == "tool_use" and final.content[-1].input == {"city": "Paris"}
    follow_up = [
        *messages,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}]},
    ]
    answer = ac.messages.create(model="m", max_tokens=100, messages=follow_up, tools=WEATHER_TOOL_ANTHROPIC)
    assert answer.stop_reason == "end_turn"


def test_anthropic_stream(ant: Standin, ac: anthropic.Anthropic) -> None:
    with ac.messages.stream(model="m", max_tokens=100, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["Hello", " from", " up-b"]
    assert final.content[0].type == "text" and final.content[0].text == "Hello from up-b"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3
    assert ant.completed_streams == 1
    pairs = raw_sse(
        ant.url + "/v1/messages",
        {"model": "m", "max_tokens": 2, "messages": USER, "stream": True},
        {"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    events = [e for e, _ in pairs]
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(json.loads(data)["type"] == event for event, data in pairs)
    start = json.loads(pairs[0][1])["message"]
    assert start["content"] == [] and start["usage"] == {"input_tokens": 4, "output_tokens": 1}
    delta = json.loads(pairs[-2][1])
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 2}


def test_anthropic_validation(ant: Standin) -> None:
    url = ant.url + "/v1/messages"
    body = {"model": "m", "max_tokens": 5, "messages": USER}
    no_key = httpx2.post(url, json=body, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    assert no_key.json()["type"] == "error"
    no_version = httpx2.post(url, json=body, headers={"x-api-key": "k"})
    assert no_version.status_code == 400 and no_version.json()["error"]["type"] == "invalid_request_error"
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    no_max = httpx2.post(url, json={"model": "m", "messages": USER}, headers=headers)
    assert no_max.status_code == 400 and "max_tokens" in no_max.json()["error"]["message"]
    ok = httpx2.post(url, json=body, headers=headers)
    assert ok.status_code == 200 and ok.json()["content"][0]["text"] == "Hello from up-b"


def test_anthropic_models(ac: anthropic.Anthropic) -> None:
    assert [m.id for m in ac.models.list()] == ["up-b"]


# --------------------------------------------------------------------------------------------------
# Faults through the Anthropic SDK
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exc", "etype"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_anthropic_status_faults(
    ant: Standin, ac: anthropic.Anthropic, code: int, exc: type[anthropic.APIStatusError], etype: str
) -> None:
    ant.push(Fault.status(code, retry_after=3))
    with pytest.raises(exc) as err:
        ac.messages.create(model="m", max_tokens=10, messages=USER)
    assert err.value.status_code == code
    assert err.value.response.headers["retry-after"] == "3"
    assert isinstance(err.value.body, dict) and err.value.body["error"]["type"] == etype


def test_anthropic_cut_malformed_slow(ant: Standin, ac: anthropic.Anthropic) -> None:
    ant.push(Fault.cut(), Fault.cut(1), Fault.malformed(), Fault.malformed(), Fault.slow_first_byte(1))
    with pytest.raises(anthropic.APIConnectionError):
        ac.messages.create(model="m", max_tokens=10, messages=USER)
    pieces: list[str] = []
    # The Anthropic SDK does not wrap mid-stream transport errors: the raw httpx2 error surfaces.
    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)),
        ac.messages.stream(model="m", max_tokens=10, messages=USER) as stream,
    ):
        pieces.extend(stream.text_stream)
    assert pieces == ["Hello"]
    with pytest.raises(json.JSONDecodeError):
        ac.messages.create(model="m", max_tokens=10, messages=USER)
    with pytest.raises(json.JSONDecodeError), ac.messages.stream(model="m", max_tokens=10, messages=USER) as s2:
        s2.get_final_message()
    with pytest.raises(anthropic.APITimeoutError):
        ac.messages.create(model="m", max_tokens=10, messages=USER, timeout=0.2)


def test_anthropic_stall_and_cancel(ant: Standin, ac: anthropic.Anthropic) -> None:
    ant.push(Fault.stall(2, 0.3), Fault.delay(0.1))
    began = time.monotonic()
    with ac.messages.stream(model="m", max_tokens=10, messages=USER) as stream:
        assert stream.get_final_message().content[0].type == "text"
    assert time.monotonic() - began >= 0.3
    with ac.messages.stream(model="m", max_tokens=10, messages=USER) as stream:
        next(iter(stream))
    assert wait_for(lambda: ant.cancelled_streams == 1)
    assert ant.completed_streams == 1


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def test_cli_runs_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "tests.standins", "--kind", "anthropic", "--port", "0", "--name", "cli-b"]
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "listening on http://127.0.0.1:" in line, line
            url = line.rsplit(" ", 1)[-1].strip()
            with anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) as client:
                assert [m.id for m in client.models.list()] == ["cli-b"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
