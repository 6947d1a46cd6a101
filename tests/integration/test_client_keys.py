"""Client keys (virtual keys) end to end: the official openai SDK against a real gateway, keys made through
the admin API, stand-in upstreams on loopback, and real Redis for limits shared by two replicas."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.gateway_harness import (
    ADMIN_TOKENS,
    VIEWER_TOKEN,
    GatewayProcess,
    RunningGateway,
    auth,
    fast_settings,
    openai_target,
)
from tests.redis_server import RedisServer

MESSAGES = [{"role": "user", "content": "three word question"}]  # 3 prompt tokens at the stand-in


def keyed_config(small_url: str, big_url: str, **extra: Any) -> dict[str, Any]:
    """Route ``auto``: tier enterprise goes to pool big, everyone else to small; route ``small`` pins it."""
    return {
        **fast_settings(auth={"mode": "keys"}),
        "targets": {
            "small": openai_target(small_url, "small-model", price={"input_per_1k": 10.0, "output_per_1k": 10.0}),
            "big": openai_target(big_url, "big-model"),
        },
        "pools": {"small": {"targets": {"small": 100}}, "big": {"targets": {"big": 100}}},
        "routes": {
            "auto": {"rules": [{"name": "enterprise", "match": {"tier": "enterprise"}, "pool": "big"}],
                     "default_pool": "small"},
            "small": {"pool": "small"},
        },
        **extra,
    }


def create_key(url: str, **spec: Any) -> dict[str, Any]:
    body = {"name": "svc", "owner": "team-a", "reason": "test key", **spec}
    response = httpx.post(url + "/admin/keys", headers=auth(operator="alice@bastion"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def ask(client: openai.OpenAI, model: str = "auto", headers: dict[str, str] | None = None) -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, extra_headers=headers)
    return raw.headers["x-switchboard-target"]


@pytest.fixture
def keyed(standin, gateway) -> RunningGateway:
    return gateway(keyed_config(standin(name="small").url, standin(name="big").url))


def test_no_key_an_unknown_key_and_a_disabled_key_get_401(keyed: RunningGateway) -> None:
    plain = httpx.post(keyed.url + "/v1/chat/completions", json={"model": "auto", "messages": MESSAGES})
    assert plain.status_code == 401
    assert plain.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as unknown:
        sdk(keyed.url, "sk-sb-" + "x" * 43).chat.completions.create(model="auto", messages=MESSAGES)
    assert unknown.value.code == "invalid_api_key"
    created = create_key(keyed.url)
    client = sdk(keyed.url, created["key"])
    assert ask(client) == "small"
    off = httpx.post(f"{keyed.url}/admin/keys/{created['record']['id']}/disable", headers=auth(),
                     json={"reason": "leaked in a ticket"})
    assert off.status_code == 200 and off.json()["disabled"] is True
    with pytest.raises(openai.AuthenticationError) as disabled:
        ask(client)
    assert disabled.value.code == "key_disabled"
    httpx.post(f"{keyed.url}/admin/keys/{created['record']['id']}/enable", headers=auth(), json={"reason": "rotated"})
    assert ask(client) == "small"
    assert httpx.get(keyed.url + "/v1/models").status_code == 401


def test_an_expired_key_gets_401(keyed: RunningGateway) -> None:
    client = sdk(keyed.url, create_key(keyed.url, expires_at=time.time() + 1.0)["key"])
    assert ask(client) == "small"
    deadline = time.monotonic() + 15
    while True:
        try:
            ask(client)
        except openai.AuthenticationError as exc:
            assert exc.code == "key_expired"
            break
        assert time.monotonic() < deadline, "the key never expired"
        time.sleep(0.1)


def test_the_key_is_shown_once_and_stored_hashed(keyed: RunningGateway) -> None:
    created = create_key(keyed.url)
    secret, key_id = created["key"], created["record"]["id"]
    assert secret.startswith("sk-sb-") and len(secret) >= 40
    assert created["record"]["prefix"] == secret[:10]
    listing = httpx.get(keyed.url + "/admin/keys", headers=auth(VIEWER_TOKEN)).text
    shown = httpx.get(f"{keyed.url}/admin/keys/{key_id}", headers=auth(VIEWER_TOKEN)).text
    audit = httpx.get(keyed.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]
    assert key_id in listing and key_id in shown
    for text in (listing, shown, str(audit), keyed.metrics()):
        assert secret not in text and secret[10:] not in text
    assert audit[0]["action"] == "create_key" and audit[0]["operator"] == "alice@bastion"
    assert audit[0]["after"]["name"] == "svc" and "hash" not in audit[0]["after"]
    database = Path(keyed.config.state.path or "").read_bytes()
    wal = Path(str(keyed.config.state.path) + "-wal")
    stored = database + (wal.read_bytes() if wal.exists() else b"")
    assert secret.encode() not in stored
    import hashlib

    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored


def test_the_tier_comes_from_the_key_and_a_higher_claim_is_ignored_and_counted(keyed: RunningGateway) -> None:
    free = sdk(keyed.url, create_key(keyed.url, tier="free")["key"])
    enterprise = sdk(keyed.url, create_key(keyed.url, name="vip", tier="enterprise")["key"])
    assert ask(free, headers={"x-switchboard-tier": "enterprise"}) == "small"
    assert ask(enterprise) == "big"
    assert ask(enterprise, headers={"x-switchboard-tier": "free"}) == "small"  # asking for less is fine
    assert "switchboard_tier_claims_ignored_total 1.0" in keyed.metrics()


def test_a_key_may_only_use_its_routes(keyed: RunningGateway) -> None:
    client = sdk(keyed.url, create_key(keyed.url, routes=["small"])["key"])
    assert ask(client, model="small") == "small"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(client, model="auto")
    assert refused.value.code == "route_not_allowed"
    assert [m.id for m in client.models.list()] == ["small"]


def test_over_its_request_limit_a_key_gets_429_with_retry_after(keyed: RunningGateway) -> None:
    client = sdk(keyed.url, create_key(keyed.url, rpm_limit=2)["key"])
    other = sdk(keyed.url, create_key(keyed.url, name="other", rpm_limit=2)["key"])
    ask(client)
    ask(client)
    with pytest.raises(openai.RateLimitError) as limited:
        ask(client)
    assert limited.value.code == "rate_limit_exceeded"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert limited.value.body["type"] == "rate_limit_error"
    assert ask(other) == "small"  # limits are per key
    assert 'switchboard_client_key_refusals_total{reason="rpm"} 1.0' in keyed.metrics()


def start_early_in_a_minute(room_s: float = 40.0) -> None:
    """``requests_this_minute`` restarts at 0 when the minute turns: begin with ``room_s`` left in this one."""
    while 60.0 - time.time() % 60.0 < room_s:
        time.sleep(0.2)


def test_over_its_token_limit_a_key_gets_429(keyed: RunningGateway) -> None:
    start_early_in_a_minute(room_s=15.0)
    client = sdk(keyed.url, create_key(keyed.url, tpm_limit=5)["key"])
    ask(client)  # 3 prompt tokens and the reply's words
    with pytest.raises(openai.RateLimitError) as limited:
        ask(client)
    assert "tokens per minute" in limited.value.message
    record = httpx.get(keyed.url + "/admin/keys", headers=auth(VIEWER_TOKEN)).json()["keys"][0]
    assert record["usage"]["requests_this_minute"] == 1 and record["usage"]["tokens_this_minute"] >= 5


def test_over_budget_a_key_gets_429_insufficient_quota(keyed: RunningGateway) -> None:
    client = sdk(keyed.url, create_key(keyed.url, budget_usd=0.01, budget_period="day")["key"])
    ask(client)  # at $10 per 1k tokens the first answer costs more than $0.01
    with pytest.raises(openai.RateLimitError) as refused:
        ask(client)
    assert refused.value.code == "insufficient_quota" and refused.value.body["type"] == "insufficient_quota"
    assert int(refused.value.response.headers["retry-after"]) <= 86400
    usage = httpx.get(keyed.url + "/admin/keys", headers=auth(VIEWER_TOKEN)).json()["keys"][0]["usage"]
    assert usage["spend_usd"] > 0.01


def test_spend_survives_a_restart_on_sqlite(standin, tmp_path: Path) -> None:
    config = keyed_config(standin(name="small").url, standin(name="big").url,
                          state={"backend": "sqlite", "path": str(tmp_path / "state.db")})
    first = GatewayProcess(config, str(tmp_path), "first").start()
    try:
        client = sdk(first.url, create_key(first.url, budget_usd=0.01)["key"])
        ask(client)
    finally:
        assert first.stop() == 0
    second = GatewayProcess(config, str(tmp_path), "second").start()
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            ask(sdk(second.url, client.api_key))
        assert refused.value.code == "insufficient_quota"
    finally:
        second.stop()


def test_bad_key_specs_are_refused_naming_the_field_and_change_nothing(keyed: RunningGateway) -> None:
    cases = [
        ({"name": "x", "owner": "o", "reason": "r", "tier": "platinum"}, "tier"),
        ({"name": "x", "owner": "o", "reason": "r", "rpm_limit": 0}, "rpm_limit"),
        ({"name": "x\x1b[2J", "owner": "o", "reason": "r"}, "name"),
        ({"name": "x", "owner": "o\u202e", "reason": "r"}, "owner"),
        ({"name": "x", "owner": "o", "reason": "   "}, "reason"),
        ({"name": "x", "owner": "o", "reason": "r", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "owner": "o", "reason": "r", "rpm_limit": True}, "rpm_limit"),
    ]
    for body, field in cases:
        response = httpx.post(keyed.url + "/admin/keys", headers=auth(), json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["param"] == field, response.text
    viewer = httpx.post(keyed.url + "/admin/keys", headers=auth(VIEWER_TOKEN),
                        json={"name": "x", "owner": "o", "reason": "r"})
    assert viewer.status_code == 403
    missing = httpx.post(keyed.url + "/admin/keys/key_000000000000/disable", headers=auth(), json={"reason": "r"})
    assert missing.status_code == 404
    unknown_route = httpx.post(keyed.url + "/admin/keys", headers=auth(),
                               json={"name": "x", "owner": "o", "reason": "r", "routes": ["nope"]})
    assert unknown_route.status_code == 404 and "unknown route(s) nope" in unknown_route.json()["error"]["message"]
    assert httpx.get(keyed.url + "/admin/keys", headers=auth(VIEWER_TOKEN)).json() == {"version": 0, "keys": []}
    assert httpx.get(keyed.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"] == []


def test_open_mode_is_refused_off_loopback_and_announced_on_it(standin, tmp_path: Path) -> None:
    config = {**fast_settings(), "targets": {"t": openai_target(standin().url)}, "pools": {"p": {"targets": {"t": 1}}},
              "routes": {"r": {"pool": "p"}}}
    gateway = GatewayProcess(config, str(tmp_path)).start()
    gateway.stop()
    assert "auth.mode is 'open'" in Path(gateway.log_path).read_text()
    exposed = GatewayProcess({**config, "server": {"host": "0.0.0.0"}}, str(tmp_path), "exposed")
    with pytest.raises(AssertionError, match="'open' is allowed only on a loopback listener"):
        exposed.start(timeout=10)


@pytest.fixture
def redis_replicas(standin, tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    with RedisServer() as redis:
        config = keyed_config(standin(name="small").url, standin(name="big").url,
                              state={"backend": "redis", "redis_url": redis.url, "redis_prefix": "sb-keys"})
        config["admin"] = {"tokens": ADMIN_TOKENS}
        replicas = [GatewayProcess(config, str(tmp_path), f"replica{i}").start() for i in range(2)]
        try:
            yield replicas
        finally:
            for replica in replicas:
                replica.stop()


def test_a_request_limit_holds_across_two_replicas_on_redis(redis_replicas: list[GatewayProcess]) -> None:
    one, two = redis_replicas
    start_early_in_a_minute()
    created = create_key(one.url, rpm_limit=6)
    key_id = created["record"]["id"]
    clients = [sdk(one.url, created["key"]), sdk(two.url, created["key"])]
    deadline = time.monotonic() + 5
    while True:  # the key reaches the second replica through the store's watch
        try:
            ask(clients[1])
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "the key never reached the second replica"
            time.sleep(0.05)
    for client in (clients[0], clients[0], clients[1], clients[0], clients[1]):
        ask(client)  # six in all, split over the replicas

    def seen_by(replica: GatewayProcess) -> int:
        record = httpx.get(f"{replica.url}/admin/keys/{key_id}", headers=auth(VIEWER_TOKEN), timeout=5).json()
        return record["usage"]["requests_this_minute"]

    deadline = time.monotonic() + 30  # each replica syncs its counts every 0.25 s; generous for a loaded machine
    while not seen_by(one) == seen_by(two) == 6:
        assert time.monotonic() < deadline, f"replicas see {seen_by(one)} and {seen_by(two)} requests, not 6"
        time.sleep(0.05)
    for client in clients:
        with pytest.raises(openai.RateLimitError):
            ask(client)


def test_a_replica_that_is_behind_does_not_write_over_newer_state(standin, tmp_path: Path) -> None:
    """Replica two misses version 1 (its watcher is stopped); a write based on version 1, sent to it, must
    keep version 1's change rather than rebuild from the stale version 0 it still holds."""
    with RedisServer() as redis:
        small, big = standin(name="small").url, standin(name="big").url
        config = keyed_config(small, big, state={"backend": "redis", "redis_url": redis.url})
        config["pools"]["small"] = {"targets": {"small": 50, "big": 50}}
        one, two = RunningGateway(config).start(), RunningGateway(config).start()
        try:
            watcher = two.app.control._watcher
            assert watcher is not None
            watcher.get_loop().call_soon_threadsafe(watcher.cancel)
            deadline = time.monotonic() + 5
            while not watcher.done():  # cancelled on its own loop's thread: wait until it has stopped
                assert time.monotonic() < deadline, "the watcher did not stop"
                time.sleep(0.01)
            first = httpx.post(f"{one.url}/admin/targets/big/drain", headers=auth(), json={"reason": "one"})
            assert first.json()["version"] == 1
            assert two.state()["version"] == 0  # behind: it never heard of version 1
            second = httpx.put(f"{two.url}/admin/pools/small/weights", headers=auth(),
                               json={"weights": {"small": 70, "big": 30}, "base_version": 1, "reason": "two"})
            assert second.status_code == 200, second.text
            after = second.json()
            assert after["version"] == 2
            assert next(t for t in after["targets"] if t["name"] == "big")["drained"] is True
            stale = httpx.put(f"{two.url}/admin/pools/small/weights", headers=auth(),
                              json={"weights": {"small": 60}, "base_version": 1, "reason": "stale"})
            assert stale.status_code == 409
        finally:
            one.stop()
            two.stop()


def test_sqlite_state_survives_a_corrupt_row(standin, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    config = keyed_config(standin(name="small").url, standin(name="big").url,
                          state={"backend": "sqlite", "path": str(path)})
    gw = RunningGateway(config).start()
    try:
        drained = httpx.post(f"{gw.url}/admin/targets/big/drain", headers=auth(), json={"reason": "before"})
        assert drained.json()["version"] == 1
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE state SET doc = '{not json', version = 7 WHERE id = 1")
        deadline = time.monotonic() + 10
        while gw.state()["degraded"] is None:
            assert time.monotonic() < deadline, "the corrupt row was never noticed"
            time.sleep(0.05)
        state = gw.state()
        assert state["version"] == 1 and "corrupt state row" in state["degraded"]
        assert next(t for t in state["targets"] if t["name"] == "big")["drained"] is True
        refused = httpx.post(f"{gw.url}/admin/targets/big/undrain", headers=auth(), json={"reason": "after"})
        assert refused.status_code == 503
    finally:
        gw.stop()


def test_the_sqlite_watcher_applies_its_first_good_read(standin, tmp_path: Path) -> None:
    """A gateway that starts on a corrupt row serves its configured state; once the row is good again the
    watcher's first good read is applied (not just remembered as 'seen')."""
    path = tmp_path / "state.db"
    config = keyed_config(standin(name="small").url, standin(name="big").url,
                          state={"backend": "sqlite", "path": str(path)})
    with RunningGateway(config) as writer:
        httpx.post(f"{writer.url}/admin/targets/big/drain", headers=auth(), json={"reason": "before"})
    with sqlite3.connect(path) as conn:
        good = conn.execute("SELECT doc FROM state WHERE id = 1").fetchone()[0]
        conn.execute("UPDATE state SET doc = '[]' WHERE id = 1")
    gw = RunningGateway(config).start()
    try:
        assert next(t for t in gw.state()["targets"] if t["name"] == "big")["drained"] is False
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE state SET doc = ? WHERE id = 1", (good,))
        deadline = time.monotonic() + 10
        while not next(t for t in gw.state()["targets"] if t["name"] == "big")["drained"]:
            assert time.monotonic() < deadline, "the watcher never applied the stored state"
            time.sleep(0.05)
        assert gw.state()["version"] == 1 and gw.state()["degraded"] is None
    finally:
        gw.stop()
