"""POST /admin/audit through a running gateway: an external action (a rollout patched in Kubernetes) joins the
gateway's own changes in one audit timeline; bad bodies, missing or read-only tokens and a store that is down
record nothing."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from console.sources.gateway import AdminError, GatewayClient
from tests.gateway_harness import OPERATOR_TOKEN, VIEWER_TOKEN, RunningGateway, auth, fast_settings, openai_target
from tests.redis_server import RedisServer

PATCH = json.dumps({"status": {"pauseConditions": None}}, separators=(",", ":"))
PROMOTE = {"kind": "kubernetes", "action": "rollout.promote", "target": "prod-eu/ai-prod/rollouts/ai-api",
           "reason": "canary analysis green", "detail": [PATCH], "outcome": "ok"}


def settings(**state: str) -> dict:
    return {
        **fast_settings(),
        "targets": {"a": openai_target("http://127.0.0.1:9"), "b": openai_target("http://127.0.0.1:9")},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
        **({"state": state} if state else {}),
    }


@pytest.fixture
def gw(gateway):
    return gateway(settings())


def record(gw, body: dict, token: str | None = OPERATOR_TOKEN, operator: str | None = "bob@laptop") -> httpx.Response:
    headers = auth(token, operator) if token else {}
    return httpx.post(gw.url + "/admin/audit", headers=headers, json=body)


def drain(gw, target: str, reason: str) -> None:
    response = httpx.post(f"{gw.url}/admin/targets/{target}/drain", headers=auth(), json={"reason": reason})
    assert response.status_code == 200, response.text


def audit(gw) -> list[dict]:
    response = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN))
    assert response.status_code == 200, response.text
    return response.json()["entries"]


def test_an_external_action_shows_between_two_gateway_writes(gw) -> None:
    drain(gw, "a", "first gateway write")
    recorded = record(gw, PROMOTE)
    assert recorded.status_code == 201, recorded.text
    drain(gw, "b", "second gateway write")
    entry = recorded.json()
    assert entry == {"version": 1, "time": entry["time"], "actor": "test-operator", "operator": "bob@laptop",
                     "action": "rollout.promote", "target": "prod-eu/ai-prod/rollouts/ai-api",
                     "reason": "canary analysis green", "before": None,
                     "after": {"detail": [PATCH], "outcome": "ok"}, "kind": "kubernetes"}
    entries = audit(gw)
    assert [(e["kind"], e["action"], e["version"]) for e in entries] == [
        ("gateway", "drain", 2), ("kubernetes", "rollout.promote", 1), ("gateway", "drain", 1)]
    assert entries[1] == entry
    assert gw.state()["version"] == 2, "recording an external action changes no state"


def test_the_console_client_records_an_external_action(gw) -> None:
    async def body() -> None:
        client = GatewayClient(gw.url, OPERATOR_TOKEN, operator="carol@desk")
        try:
            made = await client.record_external("kubernetes", "rollout.abort", "prod-eu/ai-prod/rollouts/ai-api",
                                                "error rate over budget", [PATCH], "failed")
            page = await client.audit()
            viewer = GatewayClient(gw.url, VIEWER_TOKEN)
            with pytest.raises(AdminError) as refused:
                await viewer.record_external("kubernetes", "rollout.abort", "x", "why", [], "ok")
            await viewer.aclose()
        finally:
            await client.aclose()
        assert made.kind == "kubernetes" and made.operator == "carol@desk" and made.after["outcome"] == "failed"
        assert page.entries == [made]
        assert refused.value.status == 403

    asyncio.run(body())


def test_tokens_gate_the_write(gw) -> None:
    assert record(gw, PROMOTE, token=None).status_code == 401
    assert record(gw, PROMOTE, token="wrong-token").status_code == 401
    refused = record(gw, PROMOTE, token=VIEWER_TOKEN)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "read_only"
    assert audit(gw) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"kind": "aws"}, "kind"),
    ({"kind": "gateway"}, "kind"),
    ({"reason": "   "}, "reason"),
    ({"target": "prod-eu/ai-prod/rollouts/ai-api\x1b[2J"}, "target"),
    ({"action": ""}, "action"),
    ({"detail": ["{}"] * 21}, "detail"),
    ({"detail": ["x" * 4001]}, "detail.0"),
    ({"outcome": "maybe"}, "outcome"),
    ({"extra": 1}, "extra"),
])
def test_bad_bodies_get_422_and_record_nothing(gw, change: dict, field: str) -> None:
    refused = record(gw, {**PROMOTE, **change})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["param"] == field
    assert audit(gw) == []


def test_a_store_that_is_down_gets_503_and_records_nothing() -> None:
    with RedisServer() as redis_server, RunningGateway(settings(backend="redis", redis_url=redis_server.url,
                                                                redis_prefix="sb-external")) as gw:
        assert record(gw, PROMOTE).status_code == 201
        redis_server.kill()
        refused = record(gw, {**PROMOTE, "action": "rollout.abort"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
        redis_server.start()
        assert [e["action"] for e in audit(gw)] == ["rollout.promote"]
