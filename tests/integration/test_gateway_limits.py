"""Limits and bad input on the data plane: body size and read time, the concurrency cap, strict JSON,
client-caused errors kept out of health, and retry-after on 429, 503 and 529. Real HTTP over loopback."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from tests.gateway_harness import client_for, fast_settings, openai_target, primary_backup
from tests.standins import Fault

MESSAGES = [{"role": "user", "content": "hello"}]
WAIT_S = 10  # generous bound for events on a loaded machine; tests return as soon as the event happens


def with_limits(config: dict, **limits: object) -> dict:
    return {**config, "limits": limits}


def post(gw, body: bytes | dict, path: str = "/v1/chat/completions") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(gw.url + path, content=content, headers={"content-type": "application/json"}, timeout=WAIT_S)


def raw_request(gw, head_and_body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT_S)
    sock.sendall(head_and_body)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket timeout: WAIT_S)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---- body size, body read time, concurrency -------------------------------------------------------


def test_a_body_over_the_limit_is_refused_while_it_is_still_arriving(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(with_limits(primary_backup(a.url, b.url), max_body_bytes=4096))
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100000000\r\n\r\n")
    with raw_request(gw, head + b"x" * 8192) as sock:  # 8 KiB of a promised 100 MB
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b"request_too_large" in answer
    assert not a.requests and not b.requests
    assert 'switchboard_refused_requests_total{reason="too_large"} 1.0' in gw.metrics()


def test_the_default_body_limit_is_8_mib(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url))
    big = {"model": "r", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    response = post(gw, big)
    assert response.status_code == 413 and "8388608 bytes" in response.json()["error"]["message"]
    small = {"model": "r", "messages": [{"role": "user", "content": "x" * (7 * 1024 * 1024)}]}
    assert post(gw, small).status_code == 200


def test_a_body_that_stops_arriving_gets_408_and_the_connection_is_freed(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(with_limits(primary_backup(a.url, b.url), body_read_timeout_s=0.5))
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n")
    with raw_request(gw, head + b'{"model": "r", ') as sock:  # then nothing more
        answer = read_until_closed(sock)  # returns only once the gateway closes the connection
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 0.5 s" in answer
    assert gw.state()["in_flight"] == 0
    assert not a.requests
    assert 'switchboard_refused_requests_total{reason="body_timeout"} 1.0' in gw.metrics()


def test_past_the_concurrency_cap_requests_get_503_with_retry_after(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(with_limits(primary_backup(a.url, b.url), max_concurrent_requests=2))
    a.push(Fault.slow_first_byte(30), Fault.slow_first_byte(30))
    body = json.dumps({"model": "r", "messages": MESSAGES}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    held = [raw_request(gw, head + body) for _ in range(2)]
    try:
        wait_for(lambda: gw.state()["in_flight"] == 2, "two requests in flight")
        response = post(gw, {"model": "r", "messages": MESSAGES})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "overloaded"
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: gw.state()["in_flight"] == 0, "the held requests to end when their clients left")
    assert post(gw, {"model": "r", "messages": MESSAGES}).status_code == 200
    assert 'switchboard_refused_requests_total{reason="overloaded"} 1.0' in gw.metrics()


# ---- bad JSON of every kind: 400 naming the problem, nothing sent upstream -----------------------------


def chat(**fields: object) -> dict:
    return {"model": "r", "messages": MESSAGES, **fields}


def body_with(fragment: str | bytes) -> bytes:
    """A chat body with ``fragment`` spliced in as the value of an extra field, byte for byte."""
    raw = fragment.encode() if isinstance(fragment, str) else fragment
    return b'{"model": "r", "messages": [{"role": "user", "content": "hi"}], "extra": ' + raw + b"}"


BAD_BODIES = {
    "nested past Python's recursion limit": (body_with("[" * 100_000 + "]" * 100_000), "nested more than 64"),
    "nested past the gateway's depth limit": (body_with("[" * 100 + "]" * 100), "nested more than 64"),
    "NaN": (body_with("NaN"), "NaN"),
    "Infinity": (body_with("Infinity"), "Infinity"),
    "-Infinity": (body_with("-Infinity"), "-Infinity"),
    "a float that overflows": (body_with("1e999"), "too large for a 64-bit float"),
    "a lone high surrogate escape": (body_with('"\\ud800"'), "lone UTF-16 surrogate (\\ud800)"),
    "a lone low surrogate in a key": (b'{"model": "r", "messages": [{"role": "user", "content": "hi", '
                                      b'"\\udc00": 1}]}', "lone UTF-16 surrogate (\\udc00)"),
    "a surrogate encoded as UTF-8 bytes": (body_with(b'"\xed\xa0\x80"'), "not valid UTF-8"),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
def test_bad_json_is_a_400_naming_the_problem(standin, gateway, case) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url))
    raw, problem = BAD_BODIES[case]
    response = post(gw, raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and problem in error["message"]
    assert not a.requests and not b.requests


def test_a_valid_surrogate_pair_is_accepted(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url))
    assert post(gw, body_with('"\\ud83d\\ude00 and \\\\ud800 as plain text"')).status_code == 200
    assert post(gw, body_with('"\\ud800"')).status_code == 400


WRONG_TYPES = {
    "content a number": (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    "role a number": (chat(messages=[{"role": 5, "content": "hi"}]), "messages[0]"),
    "a part without a type": (chat(messages=[{"role": "user", "content": [{"text": "hi"}]}]),
                              "messages[0].content[0]"),
    "text part whose text is a number": (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
                                         "messages[0].content[0].text"),
    "n a string": (chat(n="2"), "n"),
    "n zero": (chat(n=0), "n"),
    "max_tokens negative": (chat(max_tokens=-1), "max_tokens"),
    "max_tokens a string": (chat(max_tokens="10"), "max_tokens"),
    "max_completion_tokens a bool": (chat(max_completion_tokens=True), "max_completion_tokens"),
    "stream_options a list": (chat(stream=True, stream_options=[1]), "stream_options"),
    "include_usage a string": (chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options"),
}


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_wrong_types_inside_the_request_are_a_400_naming_the_field(standin, gateway, case) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url))
    body, param = WRONG_TYPES[case]
    response = post(gw, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert not a.requests and not b.requests


def test_a_rule_route_estimating_tokens_refuses_a_text_part_that_is_not_text(standin, gateway) -> None:
    a = standin(name="a")
    gw = gateway({
        **fast_settings(),
        "targets": {"a": openai_target(a.url)},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"auto": {"rules": [{"name": "small", "match": {"estimated_tokens": {"lt": 1000}}, "pool": "p"}],
                            "default_pool": "p"}},
    })
    bad = {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": ["not", "text"]}]}]}
    response = post(gw, bad)
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages[0].content[0].text"
    assert not a.requests


# ---- errors the client caused never count against a target ------------------------------------------


@pytest.mark.usefixtures("client_mode")
@pytest.mark.parametrize("code", [400, 413, 422])
def test_upstream_client_errors_touch_neither_breaker_cooldown_nor_error_rate(standin, gateway, code) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url))
    a.set_default(Fault.status(code, body={"error": {"message": "This model's maximum context length is 8192",
                                                      "type": "invalid_request_error", "param": "messages",
                                                      "code": "context_length_exceeded"}}))
    client = client_for(gw)
    for _ in range(6):  # past the breaker's min_requests of 4
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="r", messages=MESSAGES)
        assert caught.value.status_code == code and "maximum context length" in caught.value.message
    state = gw.target_state("a")
    assert (state["status"], state["breaker"], state["cooldown_reason"]) == ("healthy", "closed", None)
    assert (state["error_rate"], state["window_requests"], state["requests_per_s"]) == (0, 0, 0)
    assert not b.requests, "a client error is not retried elsewhere"
    a.set_default(None)
    assert client.chat.completions.create(model="r", messages=MESSAGES).choices[0].message.content == "Hello from a"


# ---- retry-after on the final 429; 503 and 529 honour theirs ----------------------------------------


@pytest.mark.usefixtures("client_mode")
def test_the_final_429_carries_retry_after_of_the_soonest_cooldown(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url))
    a.push(Fault.status(429, retry_after=30))
    b.push(Fault.status(429, retry_after=3), Fault.status(429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(gw).chat.completions.create(model="r", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "3"
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat(stream=True), timeout=WAIT_S) as response:
        response.read()
    assert response.status_code == 429 and response.headers["retry-after"] == "3", "the stream path too"


def overloaded_pair(standin, gateway, monkeypatch, kind: str):
    a, b = standin(kind=kind, name="a"), standin(name="b")
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", "test-key")
    target_a = (openai_target(a.url, "model-a") if kind == "openai" else
                {"provider": "anthropic", "model": "claude", "base_url": a.url, "api_key_env": "SWITCHBOARD_TEST_KEY"})
    gw = gateway({
        **fast_settings(),
        "targets": {"a": target_a, "b": openai_target(b.url, "model-b")},
        "pools": {"primary": {"targets": {"a": 100}}, "backup": {"targets": {"b": 100}}},
        "routes": {"r": {"pool": "primary", "fallback": ["backup"]}},
    })
    return a, b, gw


@pytest.mark.parametrize(("kind", "code"), [("openai", 503), ("anthropic", 529)])
def test_503_and_529_cool_the_target_down_for_their_retry_after(standin, gateway, monkeypatch, kind, code) -> None:
    a, _, gw = overloaded_pair(standin, gateway, monkeypatch, kind)
    a.push(Fault.status(code, retry_after=2))
    raw = client_for(gw).chat.completions.with_raw_response.create(model="r", messages=MESSAGES)
    assert raw.headers["x-switchboard-target"] == "b", "fallen back from like any server error"
    assert len(a.requests) == 1, "no retry on a target that asked for time"
    state = gw.target_state("a")
    assert state["status"] == "cooling_down" and state["cooldown_reason"] == "overloaded"
    assert 0 < state["cooldown_left_s"] <= 2.0, "the Retry-After, not the 5 s default"
    assert f'switchboard_upstream_errors_total{{error_class="server",provider="{kind}",target="a"}} 1.0' in gw.metrics()


@pytest.mark.parametrize(("kind", "code"), [("openai", 503), ("anthropic", 529)])
def test_503_and_529_retry_after_is_clamped_like_429s(standin, gateway, monkeypatch, kind, code) -> None:
    a, _, gw = overloaded_pair(standin, gateway, monkeypatch, kind)
    a.push(Fault.status(code, retry_after=600))
    client_for(gw).chat.completions.create(model="r", messages=MESSAGES)
    assert 50 < gw.target_state("a")["cooldown_left_s"] <= 60
