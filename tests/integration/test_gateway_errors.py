"""Each error class's action, the breaker cycle and Retry-After, through the real openai SDK."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.gateway_harness import client_for, fast_settings, free_port, openai_target, primary_backup
from tests.standins import Fault

MESSAGES = [{"role": "user", "content": "hello"}]


pytestmark = pytest.mark.usefixtures("client_mode")  # each test runs with both ways of sending


def two_target_gateway(gateway, a, b, **a_extra):
    return gateway(primary_backup(a.url, b.url, **a_extra))


def ask(gw):
    return client_for(gw).chat.completions.with_raw_response.create(model="r", messages=MESSAGES)


def test_success_carries_routing_headers_and_upstream_model(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    raw = ask(gw)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from a"
    assert raw.headers["x-switchboard-target"] == "a"
    assert raw.headers["x-switchboard-attempts"] == "1"
    assert 0 <= float(raw.headers["x-switchboard-overhead-ms"]) < 1000
    assert a.requests[0].body["model"] == "model-a"


def test_rate_limit_cools_down_for_retry_after_and_falls_back_at_once(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.push(Fault.status(429, retry_after=2))
    started = time.monotonic()
    raw = ask(gw)
    assert time.monotonic() - started < 1.0, "a 429 moves on without sleeping"
    assert raw.headers["x-switchboard-target"] == "b" and raw.headers["x-switchboard-attempts"] == "2"
    assert len(a.requests) == 1, "no retry on the rate-limited target"
    state = gw.target_state("a")
    assert state["status"] == "cooling_down" and state["cooldown_reason"] == "rate_limit"
    assert 1.0 < state["cooldown_left_s"] <= 2.0
    ask(gw)
    assert len(a.requests) == 1, "the target gets nothing while it cools down"
    time.sleep(2.1)
    assert ask(gw).headers["x-switchboard-target"] == "a"


# The low bounds leave a second for a loaded machine between the 429 and the state read; each is still far
# from what a missing clamp (0 s, 600 s) or an ignored header (the 5 s default) would give.
@pytest.mark.parametrize(("header", "expected_low", "expected_high"), [({"retry_after": 0}, 0.0, 1.0),
                                                                      ({"retry_after": 600}, 50, 60),
                                                                      ({"retry_after_ms": 1500}, 0.5, 1.5)])
def test_retry_after_is_clamped_to_1_to_60_seconds(standin, gateway, header, expected_low, expected_high) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.push(Fault.status(429, **header))
    ask(gw)
    assert expected_low < gw.target_state("a")["cooldown_left_s"] <= expected_high


@pytest.mark.parametrize("fault", [Fault.status(500), Fault.status(503), Fault.malformed()])
def test_server_errors_retry_with_backoff_then_fall_back(standin, gateway, fault) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.set_default(fault)
    raw = ask(gw)
    assert raw.headers["x-switchboard-target"] == "b"
    assert len(a.requests) == 3, "first try plus max_retries=2"
    assert raw.headers["x-switchboard-attempts"] == "4"


def test_a_retry_that_succeeds_stays_on_the_target(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.push(Fault.status(502))
    raw = ask(gw)
    assert raw.headers["x-switchboard-target"] == "a" and raw.headers["x-switchboard-attempts"] == "2"
    assert not b.requests


def test_timeout_retries_then_falls_back(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b, timeouts={"total_s": 0.3})
    a.set_default(Fault.slow_first_byte(2))
    raw = ask(gw)
    assert raw.headers["x-switchboard-target"] == "b"
    assert len(a.requests) == 3


def test_connect_error_falls_back(standin, gateway) -> None:
    b = standin(name="b")
    dead = type("Dead", (), {"url": f"http://127.0.0.1:{free_port()}"})()
    gw = two_target_gateway(gateway, dead, b)
    raw = ask(gw)
    assert raw.headers["x-switchboard-target"] == "b" and raw.headers["x-switchboard-attempts"] == "4"


@pytest.mark.parametrize("code", [401, 403, 404])
def test_auth_errors_cool_down_without_retry(standin, gateway, code) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.push(Fault.status(code))
    assert ask(gw).headers["x-switchboard-target"] == "b"
    assert len(a.requests) == 1
    state = gw.target_state("a")
    assert state["status"] == "cooling_down" and state["cooldown_reason"] == "auth"


@pytest.mark.parametrize("code", [400, 422])
def test_other_client_errors_go_back_to_the_client(standin, gateway, code) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.push(Fault.status(code, body={"error": {"message": "bad temperature", "type": "invalid_request_error",
                                               "param": "temperature", "code": None}}))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gw)
    assert caught.value.status_code == code
    assert "bad temperature" in caught.value.message
    assert not b.requests and len(a.requests) == 1
    assert gw.target_state("a")["status"] == "healthy"


def test_breaker_opens_then_half_opens_with_one_probe_then_closes(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.set_default(Fault.status(500))
    ask(gw)  # 3 failures on a
    ask(gw)  # the 4th reaches min_requests=4 at 100% errors: open
    assert gw.target_state("a")["breaker"] == "open"
    sent = len(a.requests)
    ask(gw)
    assert len(a.requests) == sent, "an open breaker gets no traffic"
    time.sleep(1.1)  # cooldown_s = 1
    assert gw.target_state("a")["breaker"] == "half_open"
    a.set_default(None)
    raw = ask(gw)
    assert raw.headers["x-switchboard-target"] == "a" and len(a.requests) == sent + 1
    assert gw.target_state("a")["breaker"] == "closed"


def test_failed_probe_reopens_the_breaker(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.set_default(Fault.status(500))
    ask(gw), ask(gw)
    time.sleep(1.1)
    sent = len(a.requests)
    assert ask(gw).headers["x-switchboard-target"] == "b"
    assert len(a.requests) == sent + 1, "exactly one probe, not retried"
    assert gw.target_state("a")["breaker"] == "open"


def test_when_every_target_is_open_the_least_bad_is_tried(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.push(Fault.status(429, retry_after=30))
    b.push(Fault.status(429, retry_after=5))
    with pytest.raises(openai.RateLimitError):
        ask(gw)
    raw = ask(gw)
    assert raw.headers["x-switchboard-target"] == "b", "the one whose cooldown ends first"
    assert len(b.requests) == 2


def test_all_targets_failing_returns_the_last_error_in_openai_shape(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    a.set_default(Fault.status(500))
    b.set_default(Fault.status(503))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gw)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "server"
    assert "tried a, b" in caught.value.message


def test_bad_requests_get_openai_errors_and_touch_no_upstream(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = two_target_gateway(gateway, a, b)
    c = client_for(gw)
    with pytest.raises(openai.NotFoundError) as caught:
        c.chat.completions.create(model="no-such-route", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="r", messages=[])
    with pytest.raises(openai.BadRequestError, match="latency-budget-ms must be an integer"):
        c.chat.completions.create(model="r", messages=MESSAGES,
                                  extra_headers={"x-switchboard-latency-budget-ms": "soon"})
    response = httpx.post(gw.url + "/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert not a.requests and not b.requests


def test_metrics_show_errors_fallbacks_cost_and_overhead_with_bounded_labels(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway({
        **fast_settings(),
        "targets": {"a": openai_target(a.url, "model-a"),
                    "b": openai_target(b.url, "model-b", price={"input_per_1k": 1.0, "output_per_1k": 2.0})},
        "pools": {"primary": {"targets": {"a": 100}}, "backup": {"targets": {"b": 100}}},
        "routes": {"r": {"pool": "primary", "fallback": ["backup"]}},
    })
    a.push(Fault.status(429, retry_after=5))
    client_for(gw).chat.completions.create(model="r", messages=MESSAGES, user="alice@example.com")
    metrics = gw.metrics()
    expected = [
        'switchboard_upstream_errors_total{error_class="rate_limit",provider="openai",target="a"} 1.0',
        'switchboard_fallbacks_total{error_class="rate_limit",from_target="a",route="r"} 1.0',
        'switchboard_upstream_requests_total{pool="backup",provider="openai",status_class="2xx",target="b"} 1.0',
        'switchboard_requests_total{route="r",status_class="2xx"} 1.0',
        'switchboard_target_cooling_down{target="a"} 1.0',
        'switchboard_breaker_state{target="a"} 0.0',
        'switchboard_gateway_overhead_seconds_count{route="r"} 1.0',
        'switchboard_in_flight_requests{route="r"} 0.0',
        'switchboard_cost_usd_total{target="b"} 0.007',  # 1 prompt token at $1/1k + 3 completion at $2/1k
    ]
    for line in expected:
        assert line in metrics, line
    assert "alice" not in metrics and "client-key" not in metrics
