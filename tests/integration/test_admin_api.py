"""The admin API on SQLite: auth, versioned weight changes, drains, audit, and bad input changing nothing."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from tests.gateway_harness import OPERATOR_TOKEN, VIEWER_TOKEN, auth, fast_settings, openai_target

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def gw(standin, gateway):
    a, b = standin(name="a"), standin(name="b")
    return gateway({
        **fast_settings(),
        "targets": {"a": openai_target(a.url), "b": openai_target(b.url)},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    })


def put_weights(gw, weights, base_version, reason="shift for test", token=OPERATOR_TOKEN, operator="alice@bastion",
                pool="split") -> httpx.Response:
    return httpx.put(f"{gw.url}/admin/pools/{pool}/weights", headers=auth(token, operator),
                     json={"weights": weights, "base_version": base_version, "reason": reason})


def audit(gw, **params) -> list[dict]:
    return httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN), params=params).json()["entries"]


def served_by(gw, n: int = 40) -> set[str]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    return {client.chat.completions.with_raw_response.create(model="r", messages=MESSAGES)
            .headers["x-switchboard-target"] for _ in range(n)}


def test_tokens_gate_reads_and_writes(gw) -> None:
    assert httpx.get(gw.url + "/admin/state").status_code == 401
    assert httpx.get(gw.url + "/admin/state", headers=auth("wrong-token")).status_code == 401
    assert httpx.get(gw.url + "/admin/state", headers=auth(VIEWER_TOKEN)).status_code == 200
    denied = put_weights(gw, {"a": 100, "b": 0}, 0, token=VIEWER_TOKEN)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "read_only"
    assert put_weights(gw, {"a": 100, "b": 0}, 0, token="nope").status_code == 401
    assert gw.state()["version"] == 0 and audit(gw) == []


def test_weight_change_is_applied_versioned_and_audited(gw) -> None:
    response = put_weights(gw, {"a": 100, "b": 0}, 0, reason="b is slow")
    assert response.status_code == 200
    state = response.json()
    assert state["version"] == 1 and state["updated_by"] == "alice@bastion"
    assert next(p for p in state["pools"] if p["name"] == "split")["weights"] == {"a": 100, "b": 0}
    assert served_by(gw) == {"a"}
    [entry] = audit(gw)
    assert entry["action"] == "set_weights" and entry["target"] == "split" and entry["version"] == 1
    assert entry["actor"] == "test-operator" and entry["operator"] == "alice@bastion"
    assert entry["reason"] == "b is slow"
    assert entry["before"] == {"a": 50, "b": 50} and entry["after"] == {"a": 100, "b": 0}
    assert 'switchboard_routing_weight{pool="split",target="b"} 0.0' in gw.metrics()


def test_stale_version_gets_409_with_current_state_and_changes_nothing(gw) -> None:
    assert put_weights(gw, {"a": 70, "b": 30}, 0, operator="bob@bastion").status_code == 200
    stale = put_weights(gw, {"a": 10, "b": 90}, 0, operator="alice@bastion")
    assert stale.status_code == 409
    body = stale.json()
    assert body["error"]["code"] == "stale_version" and "changed by bob@bastion" in body["error"]["message"]
    assert body["current"]["version"] == 1
    assert next(p for p in body["current"]["pools"] if p["name"] == "split")["weights"] == {"a": 70, "b": 30}
    assert len(audit(gw)) == 1


@pytest.mark.parametrize(
    ("pool", "weights", "reason", "status", "needle"),
    [
        ("nowhere", {"a": 10}, "r", 404, "unknown pool 'nowhere'"),
        ("split", {"ghost": 10}, "r", 404, "pool 'split' has no target 'ghost'"),
        ("split", {"a": 101}, "r", 422, "weights.a: Input should be less than or equal to 100"),
        ("split", {"a": -1}, "r", 422, "weights.a: Input should be greater than or equal to 0"),
        ("split", {"a": 12.5}, "r", 422, "weights.a: Input should be a valid integer"),
        ("split", {"a": "50"}, "r", 422, "weights.a: Input should be a valid integer"),
        ("split", {"a": 0, "b": 0}, "r", 422, "weights: at least one target weight must be above 0"),
        ("split", {"a": 50}, "   ", 422, "reason: a reason is required"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(gw, pool, weights, reason, status, needle) -> None:
    response = put_weights(gw, weights, 0, reason=reason, pool=pool)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert gw.state()["version"] == 0 and audit(gw) == []


def test_missing_reason_names_the_field(gw) -> None:
    response = httpx.put(f"{gw.url}/admin/pools/split/weights", headers=auth(),
                         json={"weights": {"a": 10}, "base_version": 0})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "reason" and "reason: Field required" in error["message"]
    assert gw.state()["version"] == 0 and audit(gw) == []


def test_drain_stops_new_requests_and_undrain_restores(gw) -> None:
    drained = httpx.post(f"{gw.url}/admin/targets/b/drain", headers=auth(operator="carol@bastion"),
                         json={"reason": "maintenance"})
    assert drained.status_code == 200
    target_b = next(t for t in drained.json()["targets"] if t["name"] == "b")
    assert target_b["drained"] and target_b["status"] == "drained"
    assert served_by(gw) == {"a"}
    undrained = httpx.post(f"{gw.url}/admin/targets/b/undrain", headers=auth(),
                           json={"reason": "done", "base_version": 1})
    assert undrained.status_code == 200 and undrained.json()["version"] == 2
    assert served_by(gw) == {"a", "b"}
    actions = [(e["action"], e["target"], e["version"]) for e in audit(gw)]
    assert actions == [("undrain", "b", 2), ("drain", "b", 1)]
    assert httpx.post(f"{gw.url}/admin/targets/ghost/drain", headers=auth(), json={"reason": "x"}).status_code == 404


def test_audit_since_and_limit(gw) -> None:
    for version in range(3):
        assert put_weights(gw, {"a": 10 + version}, version).status_code == 200
    entries = audit(gw)
    assert [e["version"] for e in entries] == [3, 2, 1]
    assert [e["version"] for e in audit(gw, limit=2)] == [3, 2]
    assert [e["version"] for e in audit(gw, since=entries[1]["time"])] == [3, 2]
    assert audit(gw, since="2999-01-01T00:00:00Z") == []


def test_openapi_document_describes_the_shared_models(gw) -> None:
    doc = httpx.get(gw.url + "/admin/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert {"WeightsChange", "DrainChange", "GatewayState", "AuditPage", "ConflictResponse"} <= set(schemas)
    assert "/admin/pools/{pool}/weights" in doc["paths"]


def test_the_token_is_checked_and_the_body_capped_before_anything_is_parsed(standin, gateway) -> None:
    gw = gateway({
        **fast_settings(limits={"body_read_timeout_s": 0.5}),
        "targets": {"a": openai_target(standin().url)},
        "pools": {"split": {"targets": {"a": 100}}},
        "routes": {"r": {"pool": "split"}},
    })
    url = f"{gw.url}/admin/pools/split/weights"
    huge = b'{"weights": {"a": 1}, "base_version": 0, "reason": "' + b"x" * (1 << 20) + b'"}'
    anonymous = httpx.put(url, content=huge, headers={"content-type": "application/json"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_token"
    too_big = httpx.put(url, content=huge, headers={**auth(), "content-type": "application/json"})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "body_too_large"

    def chunks():
        yield b'{"weights": {"a": 1}, '
        yield b'"base_version": 0, "reason": "' + b"x" * (70 * 1024) + b'"}'

    streamed = httpx.put(url, content=chunks(), headers={**auth(), "content-type": "application/json"})
    assert streamed.status_code == 413  # no content-length: counted while reading
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"PUT /admin/pools/split/weights HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                     + OPERATOR_TOKEN.encode() + b"\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert audit(gw) == [] and httpx.get(gw.url + "/admin/state", headers=auth(VIEWER_TOKEN)).json()["version"] == 0


def test_targets_named_with_a_slash_can_be_drained(standin, gateway) -> None:
    """Target names are provider/model (the example config's are): the path keeps the slash."""
    gw = gateway({
        **fast_settings(),
        "targets": {"vllm-local/smollm2": openai_target(standin().url), "openai/mini": openai_target(standin().url)},
        "pools": {"p": {"targets": {"vllm-local/smollm2": 50, "openai/mini": 50}}},
        "routes": {"r": {"pool": "p"}},
    })
    drained = httpx.post(f"{gw.url}/admin/targets/vllm-local/smollm2/drain", headers=auth(), json={"reason": "r"})
    assert drained.status_code == 200, drained.text
    assert gw.target_state("vllm-local/smollm2")["drained"] is True
    undrained = httpx.post(f"{gw.url}/admin/targets/vllm-local%2Fsmollm2/undrain", headers=auth(), json={"reason": "r"})
    assert undrained.status_code == 200 and gw.target_state("vllm-local/smollm2")["drained"] is False
    assert [e["target"] for e in audit(gw)] == ["vllm-local/smollm2", "vllm-local/smollm2"]
