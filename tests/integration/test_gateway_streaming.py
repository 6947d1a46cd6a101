"""Streaming: order, usage, fallback before the first byte, in-band errors after it, disconnects."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import openai
import pytest

from tests.gateway_harness import client_for, primary_backup
from tests.standins import Fault

MESSAGES = [{"role": "user", "content": "hello"}]


pytestmark = pytest.mark.usefixtures("client_mode")  # each test runs with both ways of sending

REPLY = "one two three four five six"


def streaming_gateway(gateway, a, b, **a_extra):
    return gateway(primary_backup(a.url, b.url, **a_extra))


def raw_events(gw, **body) -> tuple[httpx.Response, list[str]]:
    """The SSE data lines exactly as the gateway sent them."""
    payload = {"model": "r", "messages": MESSAGES, "stream": True, **body}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=payload, timeout=10) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response, lines


def test_stream_arrives_in_order_with_usage_when_asked(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = streaming_gateway(gateway, a, b)
    stream = client_for(gw).chat.completions.create(
        model="r", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]


def test_usage_chunk_is_dropped_when_the_client_did_not_ask(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = streaming_gateway(gateway, a, b)
    response, lines = raw_events(gw)
    assert response.headers["x-switchboard-target"] == "a"
    assert lines[-1] == "[DONE]"
    assert all(json.loads(line)["choices"] for line in lines[:-1])
    assert a.requests[0].body["stream_options"] == {"include_usage": True}, "the gateway always counts tokens"
    assert 'switchboard_tokens_total{direction="output",provider="openai",target="a"} 6.0' in gw.metrics()


def test_chunks_are_forwarded_as_they_arrive_not_buffered(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = streaming_gateway(gateway, a, b)
    a.push(Fault.delay(0.3))
    arrivals = []
    payload = {"model": "r", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=payload, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert sum(gap > 0.2 for gap in gaps) >= 5, gaps


def test_failure_before_the_first_byte_falls_back(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b", reply=REPLY)
    gw = streaming_gateway(gateway, a, b)
    a.set_default(Fault.status(503))
    response, lines = raw_events(gw)
    assert response.status_code == 200 and response.headers["x-switchboard-target"] == "b"
    assert lines[-1] == "[DONE]"


def test_ttft_timeout_falls_back(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b", reply=REPLY)
    gw = streaming_gateway(gateway, a, b, timeouts={"ttft_s": 0.3})
    a.set_default(Fault.slow_first_byte(3))
    started = time.monotonic()
    response, lines = raw_events(gw)
    assert response.headers["x-switchboard-target"] == "b" and lines[-1] == "[DONE]"
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("fault", [Fault.cut(after_chunks=2), Fault.malformed()])
def test_failure_after_the_first_byte_sends_an_error_event_and_no_done(standin, gateway, fault) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = streaming_gateway(gateway, a, b)
    a.push(fault)
    response, lines = raw_events(gw)
    assert response.status_code == 200
    assert "[DONE]" not in lines
    error = json.loads(lines[-1])["error"]
    assert error["type"] == "upstream_error" and "mid-stream" in error["message"]
    assert not b.requests, "no fallback once bytes reached the client"
    with pytest.raises(openai.APIError):
        a.push(fault)
        list(client_for(gw).chat.completions.create(model="r", messages=MESSAGES, stream=True))


def test_stall_mid_stream_becomes_an_error_event(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = streaming_gateway(gateway, a, b, timeouts={"stall_s": 0.3})
    a.push(Fault.stall(after_chunks=2, seconds=3))
    started = time.monotonic()
    _, lines = raw_events(gw)
    assert time.monotonic() - started < 2.5
    assert json.loads(lines[-1])["error"]["code"] == "timeout" and "[DONE]" not in lines


def test_client_disconnect_cancels_the_upstream_stream(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = streaming_gateway(gateway, a, b)
    a.push(Fault.delay(0.5))
    payload = {"model": "r", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=payload, timeout=10) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 3
    while a.cancelled_streams == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.cancelled_streams == 1 and a.completed_streams == 0
    assert gw.state()["in_flight"] == 0


def test_client_disconnect_cancels_a_non_streaming_upstream_request(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = streaming_gateway(gateway, a, b)
    a.push(Fault.slow_first_byte(1.5))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "r", "messages": MESSAGES}, timeout=0.3)
    time.sleep(0.3)
    assert gw.state()["in_flight"] == 0, "the gateway dropped the request when the client left"
    assert not b.requests


def test_completions_endpoint_streams_too(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = streaming_gateway(gateway, a, b)
    text = "".join(c.choices[0].text for c in client_for(gw).completions.create(model="r", prompt="Say", stream=True)
                   if c.choices)
    assert text == REPLY
    assert client_for(gw).completions.create(model="r", prompt="Say").choices[0].text == REPLY
