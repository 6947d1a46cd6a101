"""Durability and replicas: real gateway processes on real Redis and SQLite.

Two replicas share Redis; kill -9 during a stream of writes loses nothing acknowledged; Redis going
away leaves serving intact, refuses writes with 503, and recovers by itself.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.gateway_harness import (
    ADMIN_TOKENS,
    VIEWER_TOKEN,
    GatewayProcess,
    auth,
    openai_target,
)

MESSAGES = [{"role": "user", "content": "hello"}]


def config(a, b, state: dict) -> dict:
    return {
        "server": {"log_level": "warning"},
        "admin": {"tokens": ADMIN_TOKENS},
        "auth": {"mode": "open"},
        "state": state,
        "targets": {"a": openai_target(a.url), "b": openai_target(b.url)},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    }


def put_weights(url: str, weights: dict, base: int, reason: str = "test") -> httpx.Response:
    return httpx.put(f"{url}/admin/pools/split/weights", headers=auth(operator="tester@host"),
                     json={"weights": weights, "base_version": base, "reason": reason}, timeout=10)


def pool_weights(state: dict) -> dict:
    return next(p for p in state["pools"] if p["name"] == "split")["weights"]


def audit_versions(url: str) -> list[int]:
    response = httpx.get(url + "/admin/audit", headers=auth(VIEWER_TOKEN), params={"limit": 1000}, timeout=5)
    return [entry["version"] for entry in response.json()["entries"]]


@pytest.fixture
def replicas(standin, redis_server, tmp_path: Path):
    a, b = standin(name="a"), standin(name="b")
    state = {"backend": "redis", "redis_url": redis_server.url, "redis_prefix": "sb-test"}
    procs = [GatewayProcess(config(a, b, state), str(tmp_path), f"replica{i}").start() for i in range(2)]
    yield procs
    for proc in procs:
        proc.stop()


def test_a_change_through_one_replica_is_served_by_the_other_within_a_second(replicas) -> None:
    one, two = replicas
    assert put_weights(one.url, {"a": 100, "b": 0}, 0).status_code == 200
    changed = time.monotonic()
    while pool_weights(two.state()) != {"a": 100, "b": 0}:
        assert time.monotonic() - changed < 1.0, "the other replica did not apply the change within 1 s"
        time.sleep(0.02)
    client = openai.OpenAI(base_url=two.url + "/v1", api_key="k", max_retries=0)
    served = {client.chat.completions.with_raw_response.create(model="r", messages=MESSAGES)
              .headers["x-switchboard-target"] for _ in range(30)}
    assert served == {"a"}
    assert two.state()["version"] == 1


def test_a_replica_started_later_reads_the_current_state(replicas, standin, redis_server, tmp_path) -> None:
    one, _ = replicas
    assert put_weights(one.url, {"a": 20, "b": 80}, 0).status_code == 200
    a, b = standin(name="a2"), standin(name="b2")
    late = GatewayProcess(config(a, b, {"backend": "redis", "redis_url": redis_server.url,
                                        "redis_prefix": "sb-test"}), str(tmp_path), "late").start()
    try:
        state = late.state()
        assert state["version"] == 1 and pool_weights(state) == {"a": 20, "b": 80}
    finally:
        late.stop()


def test_concurrent_writers_on_the_same_version_exactly_one_wins(replicas) -> None:
    one, two = replicas
    for round_ in range(5):
        base = one.state()["version"]
        weights = {"a": 10 + round_, "b": 90}
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(put_weights, [one.url, two.url], [weights] * 2, [base] * 2))
        assert sorted(r.status_code for r in results) == [200, 409]
    assert audit_versions(one.url) == [5, 4, 3, 2, 1]


def test_redis_down_keeps_serving_refuses_writes_and_recovers(replicas, redis_server) -> None:
    one, _ = replicas
    assert put_weights(one.url, {"a": 100, "b": 0}, 0).status_code == 200
    redis_server.kill()
    client = openai.OpenAI(base_url=one.url + "/v1", api_key="k", max_retries=0)
    assert client.chat.completions.with_raw_response.create(model="r", messages=MESSAGES) \
        .headers["x-switchboard-target"] == "a", "serving continues with the last state"
    refused = put_weights(one.url, {"a": 0, "b": 100}, 1)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
    deadline = time.monotonic() + 5
    while not one.state()["degraded"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ready = httpx.get(one.url + "/ready").json()
    assert ready["status"] == "ready" and "redis unreachable" in ready["degraded"]
    assert pool_weights(one.state()) == {"a": 100, "b": 0}
    redis_server.start()
    deadline = time.monotonic() + 5
    while one.state()["degraded"]:
        assert time.monotonic() < deadline, "did not recover by itself"
        time.sleep(0.1)
    assert put_weights(one.url, {"a": 0, "b": 100}, 1).status_code == 200
    assert audit_versions(one.url) == [2, 1]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_kill_9_during_writes_loses_no_acknowledged_change(backend, standin, redis_server, tmp_path) -> None:
    a, b = standin(name="a"), standin(name="b")
    state = ({"backend": "sqlite", "path": str(tmp_path / "state.db")} if backend == "sqlite"
             else {"backend": "redis", "redis_url": redis_server.url, "redis_prefix": "sb-kill"})
    proc = GatewayProcess(config(a, b, state), str(tmp_path), "victim")
    rng = random.Random(1234)
    acknowledged: list[tuple[int, int]] = []  # (version, weight of a)
    for _round in range(3):
        proc.start()
        base = proc.state()["version"]
        stop = threading.Event()

        def writer(base: int = base, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                weight = rng.randint(1, 100)
                try:
                    response = put_weights(proc.url, {"a": weight, "b": 100 - weight}, base)
                except httpx.TransportError:
                    return
                if response.status_code == 200:
                    base = response.json()["version"]
                    acknowledged.append((base, weight))

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(rng.uniform(0.3, 1.2))
        proc.kill()
        stop.set()
        thread.join(timeout=10)
    proc.start()
    try:
        final = proc.state()
        versions = audit_versions(proc.url)
    finally:
        proc.stop()
    assert acknowledged, "no write was acknowledged before the kills"
    last_version, last_weight = acknowledged[-1]
    assert final["version"] >= last_version
    assert versions == list(range(final["version"], 0, -1)), "the audit log has a gap"
    if final["version"] == last_version:
        assert pool_weights(final) == {"a": last_weight, "b": 100 - last_weight}
    acked_versions = {version for version, _ in acknowledged}
    assert acked_versions <= set(versions)
