"""Deadlines and the two meanings of latency, end to end over loopback.

TTFT (streams) and total latency (whole answers) are kept apart in health, /admin/state and /metrics;
non-stream answers honour ttft_s; every request has one deadline across its attempts; a client that
stops reading a stream cannot hold the upstream; a stream failing after its first byte is a failure.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.gateway_harness import client_for, fast_settings, openai_target, primary_backup
from tests.standins import Fault

MESSAGES = [{"role": "user", "content": "hello"}]
REPLY = "one two three four five six"
WAIT_S = 10  # generous bound for events on a loaded machine; tests return as soon as the event happens


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stream_lines(gw, **body) -> tuple[httpx.Response, list[str]]:
    payload = {"model": "r", "messages": MESSAGES, "stream": True, **body}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=payload, timeout=WAIT_S) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response, lines


# ---- non-stream answers honour ttft_s -----------------------------------------------------------------


@pytest.mark.usefixtures("client_mode")
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_non_stream_answer_whose_headers_are_late_times_out_at_ttft_s(standin, gateway, monkeypatch, kind) -> None:
    a, b = standin(kind=kind, name="a"), standin(name="b")
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", "test-key")
    timeouts = {"ttft_s": 0.3, "total_s": 60}
    target_a = (openai_target(a.url, "model-a", timeouts=timeouts) if kind == "openai" else
                {"provider": "anthropic", "model": "claude", "base_url": a.url, "api_key_env": "SWITCHBOARD_TEST_KEY",
                 "timeouts": timeouts})
    gw = gateway({
        **fast_settings(),
        "targets": {"a": target_a, "b": openai_target(b.url, "model-b")},
        "pools": {"primary": {"targets": {"a": 100}}, "backup": {"targets": {"b": 100}}},
        "routes": {"r": {"pool": "primary", "fallback": ["backup"]}},
    })
    a.set_default(Fault.slow_first_byte(5))
    raw = client_for(gw).chat.completions.with_raw_response.create(model="r", messages=MESSAGES)
    assert raw.headers["x-switchboard-target"] == "b"
    assert len(a.requests) == 3, "a timeout is retried like any, then falls back"
    metrics = gw.metrics()
    assert f'switchboard_upstream_errors_total{{error_class="timeout",provider="{kind}",target="a"}} 3.0' in metrics


# ---- one deadline per request, across attempts ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_ends_at_its_deadline_across_retries_and_fallbacks(standin, gateway, stream) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway({**primary_backup(a.url, b.url), "limits": {"request_timeout_s": 1}})
    a.set_default(Fault.slow_first_byte(5))
    b.set_default(Fault.slow_first_byte(5))
    body = {"model": "r", "messages": MESSAGES, "stream": stream}
    response = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=WAIT_S)
    assert response.status_code == 504, response.text
    assert "deadline of 1 s passed" in response.json()["error"]["message"]
    state = gw.target_state("a")
    assert (state["window_requests"], state["breaker"]) == (0, "closed"), "the request's deadline is no verdict"


def test_by_default_the_deadline_is_the_largest_total_s_and_an_attempt_that_uses_it_up_is_blamed(
        standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    config = primary_backup(a.url, b.url, timeouts={"total_s": 0.5})
    config["targets"]["b"]["timeouts"] = {"total_s": 0.5}
    gw = gateway(config)
    a.set_default(Fault.slow_first_byte(5))
    response = httpx.post(gw.url + "/v1/chat/completions", json={"model": "r", "messages": MESSAGES}, timeout=WAIT_S)
    assert response.status_code == 504 and "deadline of 0.5 s passed" in response.json()["error"]["message"]
    assert len(a.requests) == 1 and not b.requests, "no time was left for a retry or a fallback"
    assert gw.target_state("a")["window_requests"] == 1, "a used up its own total_s: that counts against it"
    assert 'switchboard_upstream_errors_total{error_class="timeout",provider="openai",target="a"} 1.0' in gw.metrics()


def test_a_stream_running_past_the_request_deadline_is_cut_with_an_error_event(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = gateway({**primary_backup(a.url, b.url), "limits": {"request_timeout_s": 1}})
    a.push(Fault.delay(0.4))  # about 3.5 s for the whole stream
    response, lines = stream_lines(gw)
    assert response.status_code == 200 and "[DONE]" not in lines
    assert "deadline of 1 s passed" in json.loads(lines[-1])["error"]["message"]
    wait_for(lambda: a.cancelled_streams == 1, "the upstream stream to be cancelled")


# ---- a client that stops reading ----------------------------------------------------------------------


def test_a_client_that_stops_reading_a_stream_does_not_hold_the_upstream(standin, gateway) -> None:
    big_reply = " ".join(["y" * 20_000] * 300)  # about 6 MB of chunks, more than socket buffers hold
    a, b = standin(name="a", reply=big_reply), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url, timeouts={"stall_s": 0.5}))
    a.push(Fault.delay(0.01))
    body = json.dumps({"model": "r", "messages": MESSAGES, "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT_S)
    sock.connect(("127.0.0.1", gw.port))
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        # ... and read nothing more.
        wait_for(lambda: a.cancelled_streams == 1, "the gateway to cancel the upstream stream")
        assert a.completed_streams == 0
        wait_for(lambda: gw.state()["in_flight"] == 0, "the request to end")
        assert 'switchboard_client_write_timeouts_total{route="r"} 1.0' in gw.metrics()
        assert gw.target_state("a")["window_requests"] == 0, "a slow reader is no verdict on the target"
        with pytest.raises(ConnectionResetError):  # the gateway dropped the connection
            while sock.recv(1 << 20):
                pass
    finally:
        sock.close()


# ---- two meanings of latency ----------------------------------------------------------------------------


def test_ttft_and_total_latency_are_reported_apart_in_state_and_metrics(standin, gateway) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url))
    a.push(Fault.delay(0.1))  # the first chunk at once, the last about 0.8 s later
    _, lines = stream_lines(gw)
    assert lines[-1] == "[DONE]"
    client_for(gw).chat.completions.create(model="r", messages=MESSAGES)
    state = gw.target_state("a")
    assert state["ttft_ema_ms"] is not None and state["ttft_p50_ms"] == state["ttft_p99_ms"] == state["ttft_ema_ms"]
    assert state["total_p99_ms"] >= 700, "the stream's total latency is to its last chunk"
    assert state["ttft_ema_ms"] < state["total_p99_ms"]
    assert state["total_p50_ms"] < state["total_p99_ms"], "two answers in the total window"
    assert (state["ema_latency_ms"], state["p50_ms"], state["p99_ms"]) == (
        state["total_ema_ms"], state["total_p50_ms"], state["total_p99_ms"])
    metrics = gw.metrics()
    assert 'switchboard_time_to_first_token_seconds_count{provider="openai",target="a"} 1.0' in metrics
    assert 'switchboard_upstream_latency_seconds_count{provider="openai",target="a"} 2.0' in metrics


@pytest.mark.usefixtures("client_mode")
@pytest.mark.parametrize("fault", [Fault.cut(after_chunks=2), Fault.malformed(),
                                   Fault.stall(after_chunks=2, seconds=3)])
def test_a_stream_failing_after_its_first_byte_counts_as_a_failure(standin, gateway, fault) -> None:
    a, b = standin(name="a", reply=REPLY), standin(name="b")
    gw = gateway(primary_backup(a.url, b.url, timeouts={"stall_s": 0.3}))
    a.push(fault)
    response, lines = stream_lines(gw)
    assert response.status_code == 200 and "error" in json.loads(lines[-1])
    metrics = gw.metrics()
    assert 'switchboard_requests_total{route="r",status_class="5xx"} 1.0' in metrics
    assert 'switchboard_requests_total{route="r",status_class="2xx"}' not in metrics
    assert 'status_class="2xx",target="a"' not in metrics, "no successful upstream attempt either"
    state = gw.target_state("a")
    assert (state["error_rate"], state["window_requests"]) == (1.0, 1)
    assert state["ttft_ema_ms"] is not None and state["total_ema_ms"] is None
