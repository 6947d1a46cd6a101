"""The gateway's side of batch work, through real HTTP: a worker token acts as the batch's key (its routes, limits
and usage), is refused without the batch-key header and on the admin API, a client key can never claim a batch key,
and batch-priority requests yield to interactive traffic near the concurrency limit."""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx
import pytest

from tests.gateway_harness import ADMIN_TOKENS, RunningGateway, auth, fast_settings, openai_target
from tests.standins import Fault
from tests.waiting import wait_for

WORKER_TOKEN = "test-worker-token"
os.environ["SWITCHBOARD_TEST_WORKER_TOKEN"] = WORKER_TOKEN
WORKER_ADMIN_TOKEN = {"name": "batch-worker", "role": "worker", "token_env": "SWITCHBOARD_TEST_WORKER_TOKEN"}


MESSAGES = [{"role": "user", "content": "three word question"}]


def keyed_config(small_url: str, big_url: str) -> dict[str, Any]:
    """Route ``auto``: tier enterprise goes to pool big, everyone else to small."""
    return {
        **fast_settings(auth={"mode": "keys"}),
        "targets": {"small": openai_target(small_url, "small-model"), "big": openai_target(big_url, "big-model")},
        "pools": {"small": {"targets": {"small": 100}}, "big": {"targets": {"big": 100}}},
        "routes": {"auto": {"rules": [{"name": "enterprise", "match": {"tier": "enterprise"}, "pool": "big"}],
                            "default_pool": "small"},
                   "small": {"pool": "small"}},
    }


def create_key(url: str, **spec: Any) -> dict[str, Any]:
    body = {"name": "svc", "owner": "team-a", "reason": "test key", **spec}
    response = httpx.post(url + "/admin/keys", headers=auth(operator="alice@bastion"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def with_worker_token(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "admin": {"tokens": [*ADMIN_TOKENS, WORKER_ADMIN_TOKEN]}}


def as_worker(key_id: str | None, token: str = WORKER_TOKEN) -> dict[str, str]:
    headers = {"authorization": f"Bearer {token}", "x-switchboard-priority": "batch"}
    if key_id is not None:
        headers["x-switchboard-batch-key"] = key_id
    return headers


def send(url: str, headers: dict[str, str], model: str = "auto") -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers=headers, json={"model": model, "messages": MESSAGES},
                      timeout=30)


def usage(gw: RunningGateway, key_id: str) -> dict[str, Any]:
    return httpx.get(f"{gw.url}/admin/keys/{key_id}", headers=auth()).json()["usage"]


@pytest.fixture
def keyed(standin, gateway) -> RunningGateway:
    return gateway(with_worker_token(keyed_config(standin(name="small").url, standin(name="big").url)))


def test_a_worker_token_acts_as_the_batch_key_its_tier_routes_and_usage(keyed: RunningGateway) -> None:
    enterprise = create_key(keyed.url, tier="enterprise")["record"]
    answer = send(keyed.url, as_worker(enterprise["id"]))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-switchboard-target"] == "big"  # the key's tier chose the pool
    assert usage(keyed, enterprise["id"])["requests_this_minute"] == 1
    pinned = create_key(keyed.url, name="pinned", routes=["small"])["record"]
    refused = send(keyed.url, as_worker(pinned["id"]), model="auto")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "route_not_allowed"


def test_the_batch_key_limits_apply_to_the_worker(keyed: RunningGateway) -> None:
    limited = create_key(keyed.url, rpm_limit=1)["record"]
    assert send(keyed.url, as_worker(limited["id"])).status_code == 200
    second = send(keyed.url, as_worker(limited["id"]))
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(second.headers["retry-after"]) >= 1


def test_a_disabled_or_unknown_batch_key_is_refused(keyed: RunningGateway) -> None:
    record = create_key(keyed.url)["record"]
    off = httpx.post(f"{keyed.url}/admin/keys/{record['id']}/disable", headers=auth(), json={"reason": "leaked"})
    assert off.status_code == 200, off.text
    disabled = send(keyed.url, as_worker(record["id"]))
    assert (disabled.status_code, disabled.json()["error"]["code"]) == (401, "key_disabled")
    unknown = send(keyed.url, as_worker("key_000000000000"))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "invalid_api_key")


def test_a_worker_token_alone_gets_401_on_the_data_plane(keyed: RunningGateway) -> None:
    alone = send(keyed.url, as_worker(None))
    assert alone.status_code == 401
    assert alone.json()["error"]["code"] == "batch_key_required"


def test_a_client_key_or_an_operator_token_cannot_claim_a_batch_key(keyed: RunningGateway) -> None:
    victim = create_key(keyed.url, name="victim")["record"]
    attacker = create_key(keyed.url, name="attacker")
    for token in (attacker["key"], "test-operator-token"):
        claimed = send(keyed.url, as_worker(victim["id"], token=token))
        assert claimed.status_code == 401, claimed.text
        assert claimed.json()["error"]["code"] == "worker_token_required"
    assert usage(keyed, victim["id"])["requests_this_minute"] == 0


def test_a_worker_token_is_refused_by_the_admin_api(keyed: RunningGateway) -> None:
    for method, path in (("GET", "/admin/state"), ("GET", "/admin/keys"), ("POST", "/admin/keys")):
        answer = httpx.request(method, keyed.url + path, headers=auth(WORKER_TOKEN), json={})
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"]["code"] == "worker_token"


def test_batch_requests_yield_to_interactive_traffic_near_the_limit(standin, gateway) -> None:
    up = standin(name="up")
    config = {**fast_settings(), "limits": {"max_concurrent_requests": 4}, "batch": {"yield_at": 0.5},
              "targets": {"a": openai_target(up.url)}, "pools": {"p": {"targets": {"a": 100}}},
              "routes": {"auto": {"pool": "p"}}}
    gw = gateway(with_worker_token(config))
    release = threading.Event()
    up.set_default(lambda: Fault.delay(0.0) if release.is_set() else Fault.delay(30.0))
    held = [threading.Thread(target=send, args=(gw.url, {})) for _ in range(2)]
    for thread in held:
        thread.start()
    wait_for("two interactive requests in flight", lambda: len(up.requests) >= 2)
    batch = send(gw.url, {"x-switchboard-priority": "batch"})
    assert batch.status_code == 503
    assert batch.json()["error"]["code"] == "yielding_to_interactive"
    assert int(batch.headers["retry-after"]) >= 1
    release.set()
    interactive = send(gw.url, {})  # below the hard limit an interactive request is still served
    assert interactive.status_code == 200, interactive.text
    assert 'switchboard_refused_requests_total{reason="yielding_to_interactive"} 1.0' in gw.metrics()
    up.stop()  # cuts the held requests short
    for thread in held:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in held)


def test_a_batch_request_below_the_threshold_is_served(standin, gateway) -> None:
    up = standin(name="up")
    config = {**fast_settings(), "limits": {"max_concurrent_requests": 4}, "batch": {"yield_at": 0.5},
              "targets": {"a": openai_target(up.url)}, "pools": {"p": {"targets": {"a": 100}}},
              "routes": {"auto": {"pool": "p"}}}
    gw = gateway(with_worker_token(config))
    answer = send(gw.url, {"x-switchboard-priority": "batch"})
    assert answer.status_code == 200, answer.text
