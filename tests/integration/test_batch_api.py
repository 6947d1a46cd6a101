"""The batch API (/v1/files, /v1/batches) through the official openai SDK against a real gateway on loopback
and a real redis-server: upload, create, retrieve, list, cancel, file content; validation and limits;
one key never sees another's files or batches; the admin queue routes and the queue's gauges."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from services.batch.formats import result_line
from services.batch.store import BatchStore
from tests.gateway_harness import VIEWER_TOKEN, RunningGateway, auth, fast_settings, openai_target
from tests.redis_server import RedisServer
from tests.server_process import free_port

PREFIX = "sb-test-batch"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    return client


def config(redis_url: str, mode: str = "open", **batch: Any) -> dict[str, Any]:
    return {
        **fast_settings(auth={"mode": mode}),
        "targets": {"a": openai_target("http://127.0.0.1:9", "model-a")},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"chat": {"pool": "p"}, "other": {"pool": "p"}},
        "batch": {"redis_url": redis_url, "prefix": PREFIX, **batch},
    }


def line(custom_id: str, model: str = "chat", url: str = "/v1/chat/completions", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}], **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n" for item in lines)


def sdk(gw: RunningGateway, key: str = "unused-in-open-mode") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def upload(client: openai.OpenAI, content: bytes) -> Any:
    return client.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch")


def stream_length(client: redis.Redis) -> int:
    return client.xlen(f"{PREFIX}:stream:chat") if client.exists(f"{PREFIX}:stream:chat") else 0


def create_key(gw: RunningGateway, name: str, routes: list[str] | None = None) -> str:
    body = {"name": name, "owner": "team", "reason": "batch test", **({"routes": routes} if routes else {})}
    response = httpx.post(gw.url + "/admin/keys", headers=auth(), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["key"]


def test_upload_create_retrieve_list_and_file_content_through_the_sdk(gateway, redis_server, fresh_redis) -> None:
    gw = gateway(config(redis_server.url))
    client = sdk(gw)
    content = jsonl([line(f"req-{i}") for i in range(3)])
    uploaded = upload(client, content)
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(content) and uploaded.purpose == "batch"
    assert client.files.retrieve(uploaded.id).filename == "requests.jsonl"
    assert client.files.content(uploaded.id).content == content

    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"description": "nightly eval"})
    assert batch.status == "in_progress" and batch.request_counts.total == 3
    assert batch.metadata == {"description": "nightly eval"} and batch.input_file_id == uploaded.id
    assert stream_length(fresh_redis) == 3
    entry = fresh_redis.xrange(f"{PREFIX}:stream:chat", count=1)[0][1]
    assert entry[b"batch"].decode() == batch.id and entry[b"custom_id"] == b"req-0" and entry[b"owner"] == b""
    assert json.loads(entry[b"body"])["messages"][0]["content"] == "say req-0"
    assert client.batches.retrieve(batch.id).status == "in_progress"

    more = [client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h").id for _ in range(4)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == more[::-1][:2] and first.has_more
    everything = [b.id for b in client.batches.list(limit=2)]  # the SDK pages on with after=last_id
    assert everything == [*more[::-1], batch.id]

    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_finished_batch_output_and_error_files_download_through_the_sdk(gateway, redis_server, fresh_redis) -> None:
    gw = gateway(config(redis_server.url))
    client = sdk(gw)
    batch = client.batches.create(input_file_id=upload(client, jsonl([line("ok"), line("bad")])).id,
                                  endpoint="/v1/chat/completions", completion_window="24h")

    async def finish() -> None:  # what a worker does, through the store's own calls
        store = BatchStore.from_url(redis_server.url, gw.config.batch)
        try:
            await store.record_result(batch.id, "ok", result_line("ok", 200, {"choices": []}), True)
            await store.record_result(batch.id, "bad", result_line("bad", 400, {"error": {"message": "no"}}), False)
            await store.maybe_finalize(batch.id)
        finally:
            await store.aclose()

    asyncio.run(finish())
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 1 and done.request_counts.failed == 1
    output = [json.loads(text) for text in client.files.content(done.output_file_id).text.splitlines()]
    errors = [json.loads(text) for text in client.files.content(done.error_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["ok"] and output[0]["response"]["status_code"] == 200
    assert errors[0]["custom_id"] == "bad" and errors[0]["response"]["status_code"] == 400
    assert errors[0]["id"].startswith("batch_req_")


def test_cancel_before_any_worker_ran(gateway, redis_server, fresh_redis) -> None:
    gw = gateway(config(redis_server.url))
    client = sdk(gw)
    batch = client.batches.create(input_file_id=upload(client, jsonl([line("a"), line("b")])).id,
                                  endpoint="/v1/chat/completions", completion_window="24h")
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert stream_length(fresh_redis) == 0  # no worker will start any of it
    assert client.batches.retrieve(batch.id).status == "cancelled"
    assert client.files.content(cancelled.output_file_id).content == b""


@pytest.mark.parametrize(("lines", "where"), [
    ([line("a"), b"{not json", line("c")], "line 2: not valid JSON"),
    ([line("a"), line("a")], "line 2: custom_id \"a\" is already used on line 1"),
    ([line("a"), line("b", url="/v1/completions")], "line 2: 'url' is /v1/completions"),
    ([line("a"), {**line("b"), "method": "GET"}], "line 2: 'method' must be \"POST\""),
    ([line("a"), line("b"), line("c", model="nope")], "line 3: body: The model 'nope' does not exist"),
    ([line("a"), {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "chat", "messages": []}}], "line 2: body: 'messages' must be a non-empty array"),
    ([line("a", stream=True)], "line 1: body: batch requests cannot stream"),
])
def test_a_bad_file_is_refused_with_its_line_number_and_nothing_is_queued(gateway, redis_server, fresh_redis,
                                                                          lines, where) -> None:
    gw = gateway(config(redis_server.url))
    client = sdk(gw)
    with pytest.raises(openai.BadRequestError) as refused:
        upload(client, jsonl(lines))
    assert where in refused.value.message and refused.value.code == "invalid_batch_input"
    assert fresh_redis.keys(f"{PREFIX}:file:*") == []
    assert stream_length(fresh_redis) == 0


def test_a_file_valid_for_one_endpoint_is_refused_for_the_other_at_create(gateway, redis_server,
                                                                          fresh_redis) -> None:
    gw = gateway(config(redis_server.url))
    client = sdk(gw)
    uploaded = upload(client, jsonl([line("a"), line("b")]))
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    assert "line 1: 'url' is /v1/chat/completions but the batch's endpoint is /v1/completions" in refused.value.message
    assert stream_length(fresh_redis) == 0 and client.batches.list().data == []


def test_limits_file_size_lines_and_queued_requests_per_key(gateway, redis_server, fresh_redis) -> None:
    gw = gateway(config(redis_server.url, mode="keys", max_file_bytes=2048, max_lines=3, max_queued_per_key=5))
    client = sdk(gw, create_key(gw, "limited"))
    with pytest.raises(openai.APIStatusError) as too_big:
        upload(client, jsonl([line(f"r{i}", filler="x" * 300) for i in range(7)]))
    assert too_big.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as too_long:
        upload(client, jsonl([line(f"r{i}") for i in range(4)]))
    assert "line 4: more than 3 requests in one batch" in too_long.value.message
    three = upload(client, jsonl([line(f"r{i}") for i in range(3)])).id
    client.batches.create(input_file_id=three, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.RateLimitError) as full:
        client.batches.create(input_file_id=three, endpoint="/v1/chat/completions", completion_window="24h")
    assert full.value.code == "batch_queue_full" and stream_length(fresh_redis) == 3
    other = sdk(gw, create_key(gw, "other"))  # the limit is per key
    other.batches.create(input_file_id=upload(other, jsonl([line("x")])).id, endpoint="/v1/chat/completions",
                         completion_window="24h")


def test_a_key_sees_only_its_own_files_and_batches_and_only_its_routes(gateway, redis_server, fresh_redis) -> None:
    gw = gateway(config(redis_server.url, mode="keys"))
    alice = sdk(gw, create_key(gw, "alice", routes=["chat"]))
    bob = sdk(gw, create_key(gw, "bob"))
    uploaded = upload(alice, jsonl([line("a")]))
    batch = alice.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    for attempt in (lambda: bob.files.retrieve(uploaded.id), lambda: bob.files.content(uploaded.id),
                    lambda: bob.files.delete(uploaded.id), lambda: bob.batches.retrieve(batch.id),
                    lambda: bob.batches.cancel(batch.id),
                    lambda: bob.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                               completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert bob.batches.list().data == [] and [b.id for b in alice.batches.list().data] == [batch.id]
    entry = fresh_redis.xrange(f"{PREFIX}:stream:chat", count=1)[0][1]
    alice_id = httpx.get(gw.url + "/admin/keys", headers=auth(VIEWER_TOKEN)).json()["keys"]
    assert entry[b"owner"].decode() == next(k["id"] for k in alice_id if k["name"] == "alice")
    with pytest.raises(openai.BadRequestError) as refused:
        upload(alice, jsonl([line("a"), line("b", model="other")]))
    assert "line 2: body: client key 'alice' may not use route 'other'" in refused.value.message
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "sk-sb-" + "x" * 43).batches.list()


def test_the_admin_queue_lists_batches_and_cancels_with_an_audit_record(gateway, redis_server, fresh_redis) -> None:
    gw = gateway(config(redis_server.url, mode="keys"))
    client = sdk(gw, create_key(gw, "nightly"))
    batch = client.batches.create(input_file_id=upload(client, jsonl([line("a"), line("b")])).id,
                                  endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"description": "evals"})
    queue = httpx.get(gw.url + "/admin/queue", headers=auth(VIEWER_TOKEN)).json()
    assert queue["enabled"] and queue["reason"] is None
    chat = next(s for s in queue["streams"] if s["endpoint"] == "chat")
    assert chat["length"] == 2 and chat["pending"] == 0 and chat["oldest_age_s"] is not None
    assert [(b["id"], b["owner"], b["description"], b["total"]) for b in queue["batches"]] == [
        (batch.id, "nightly", "evals", 2)]
    listed = httpx.get(gw.url + "/admin/batches", headers=auth(VIEWER_TOKEN)).json()
    assert [(b["id"], b["owner_name"]) for b in listed["data"]] == [(batch.id, "nightly")]
    metrics = gw.metrics()
    assert 'switchboard_batch_queue_length{endpoint="chat"} 2.0' in metrics
    assert batch.id not in metrics

    viewer = httpx.post(f"{gw.url}/admin/batches/{batch.id}/cancel", headers=auth(VIEWER_TOKEN),
                        json={"reason": "wrong model"})
    assert viewer.status_code == 403
    cancelled = httpx.post(f"{gw.url}/admin/batches/{batch.id}/cancel", headers=auth(operator="bob@ops"),
                           json={"reason": "wrong model"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    entries = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]
    record = next(e for e in entries if e["action"] == "batch.cancel")
    assert (record["target"], record["reason"], record["operator"]) == (batch.id, "wrong model", "bob@ops")
    assert (record["before"], record["after"]) == ({"status": "in_progress"}, {"status": "cancelled"})
    again = httpx.post(f"{gw.url}/admin/batches/batch_nope/cancel", headers=auth(), json={"reason": "x"})
    assert again.status_code == 404


def test_without_redis_url_the_batch_api_says_so(gateway) -> None:
    gw = gateway({**config("redis://unused"), "batch": {}})
    with pytest.raises(openai.NotFoundError) as off:
        sdk(gw).batches.list()
    assert "batch.redis_url" in off.value.message
    assert httpx.get(gw.url + "/admin/queue", headers=auth(VIEWER_TOKEN)).json()["enabled"] is False


def test_redis_down_answers_503_and_the_queue_says_why(gateway) -> None:
    gw = gateway(config(f"redis://127.0.0.1:{free_port()}/0"))
    response = httpx.get(gw.url + "/v1/batches")
    assert response.status_code == 503 and response.json()["error"]["code"] == "batch_store_unavailable"
    queue = httpx.get(gw.url + "/admin/queue", headers=auth(VIEWER_TOKEN)).json()
    assert queue["enabled"] and "redis unreachable" in queue["reason"]
    assert "switchboard_batch_queue_readable 0.0" in gw.metrics()
