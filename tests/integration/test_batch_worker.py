"""Batches end to end with real worker processes: the official openai SDK against a real gateway, a real
redis-server, ``switchboard worker`` processes and a stand-in upstream. The SDK's flow (upload, create, poll,
download) with an error file in OpenAI's shape; kill -9 of a worker mid-batch, three times, with a second one alive
(every request exactly one result); cancel mid-batch; Redis restarted mid-batch with its AOF."""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.batch_workers import WorkerProcess, batch_config, chat_line, jsonl
from tests.gateway_harness import RunningGateway, auth, free_port
from tests.redis_server import RedisServer
from tests.standins import Fault
from tests.waiting import wait_for

FINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.close()


def config(up_url: str, redis: RedisServer, **batch: Any) -> dict[str, Any]:
    return batch_config(up_url, redis.url, batch={"prefix": "it" + secrets.token_hex(3) + ":batch", **batch})


def start_worker(workers: list[WorkerProcess], cfg: dict[str, Any], gw: RunningGateway, tmp_path: Path,
                 name: str, concurrency: int = 4) -> WorkerProcess:
    worker = WorkerProcess(cfg, gw.url, str(tmp_path), name=name, concurrency=concurrency).start()
    workers.append(worker)
    return worker


def sdk(gw: RunningGateway, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=3)


def submit(client: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    uploaded = client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"description": "worker test"})
    assert batch.status in ("validating", "in_progress")
    return batch.id


def retrieve(client: openai.OpenAI, batch_id: str) -> Any:
    try:
        return client.batches.retrieve(batch_id)
    except openai.APIError:  # Redis may be away for a moment: poll again
        return None


def final(client: openai.OpenAI, batch_id: str, within_s: float = 120) -> Any:
    return wait_for(f"batch {batch_id} to end", lambda: (b := retrieve(client, batch_id)) is not None
                    and b.status in FINAL and b, within_s=within_s, every_s=0.1)


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def progress(client: openai.OpenAI, batch_id: str) -> int:
    batch = retrieve(client, batch_id)
    return 0 if batch is None else batch.request_counts.completed + batch.request_counts.failed


def test_the_openai_sdk_batch_flow_through_a_worker_process_with_an_error_file(
        standin, gateway, redis_server, workers, tmp_path: Path) -> None:
    up = standin(name="up")
    cfg = {**config(up.url, redis_server), "auth": {"mode": "keys"}}
    gw = gateway(cfg)
    created = httpx.post(gw.url + "/admin/keys", headers=auth(operator="alice@bastion"), timeout=10,
                         json={"name": "evals", "owner": "team-a", "reason": "batch test", "tier": "paid"}).json()
    client = sdk(gw, created["key"])
    lines = [chat_line(f"eval-{i}", f"question {i}") for i in range(6)]
    up.push(Fault.ok(), Fault.ok(), Fault.ok(), Fault.status(400, body={"error": {
        "message": "bad prompt", "type": "invalid_request_error", "param": None, "code": "bad_prompt"}}))
    batch_id = submit(client, lines)
    start_worker(workers, cfg, gw, tmp_path, "w1", concurrency=1)  # one at a time: the stand-in's faults in order

    batch = final(client, batch_id)
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (6, 5, 1)
    output, errors = file_lines(client, batch.output_file_id), file_lines(client, batch.error_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"eval-{i}" for i in (0, 1, 2, 4, 5))
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200
        index = line["custom_id"].split("-")[1]
        assert line["response"]["body"]["object"] == "chat.completion"
        assert line["response"]["body"]["choices"][0]["message"]["content"] == "Hello from up"
        assert any(f"question {index}" in json.dumps(r.body) for r in up.requests)
    [error] = errors
    assert error["custom_id"] == "eval-3" and error["error"] is None
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "bad_prompt"
    assert len(up.requests) == 6
    usage = httpx.get(f"{gw.url}/admin/keys/{created['record']['id']}", headers=auth()).json()["usage"]
    assert usage["requests_this_minute"] == 6  # the worker sent as the batch's key


def test_kill_9_of_a_worker_three_times_mid_batch_loses_nothing_and_stores_nothing_twice(
        standin, gateway, redis_server, workers, tmp_path: Path) -> None:
    total = 240
    up = standin(name="up")
    up.set_default(Fault.delay(0.02))  # every request takes a moment, so a kill lands mid-request
    cfg = config(up.url, redis_server, visibility_timeout_s=1.0, max_attempts=10)
    gw = gateway(cfg)
    client = sdk(gw)
    batch_id = submit(client, [chat_line(f"r{i}", f"q{i}") for i in range(total)])
    start_worker(workers, cfg, gw, tmp_path, "steady")
    victim = start_worker(workers, cfg, gw, tmp_path, "victim-0")
    rng = random.Random()
    marks = sorted(rng.sample(range(total // 10, total * 3 // 4), 3))
    for round_no, mark in enumerate(marks, start=1):
        wait_for(f"{mark} results", lambda m=mark: progress(client, batch_id) >= m, every_s=0.05)
        wait_for("the victim holding requests", lambda v=victim: v.name in holders(redis_server, cfg))
        victim.kill()
        victim = start_worker(workers, cfg, gw, tmp_path, f"victim-{round_no}")

    batch = final(client, batch_id, within_s=240)
    output, errors = file_lines(client, batch.output_file_id), file_lines(client, batch.error_file_id)
    ids = [line["custom_id"] for line in output]
    received = len([r for r in up.requests if r.path.endswith("/chat/completions")])
    print(f"\nkill -9 x3 at results {marks}: {total} requests, {len(ids)} output lines, {len(set(ids))} distinct, "
          f"{len(errors)} errors, {received} requests reached the upstream ({received - total} sent twice)")
    assert batch.status == "completed"
    assert errors == []
    assert len(ids) == total and set(ids) == {f"r{i}" for i in range(total)}  # none lost, none twice
    assert (batch.request_counts.completed, batch.request_counts.failed) == (total, 0)
    assert total <= received <= total + 3 * 4  # at most what each killed worker held was sent again


def holders(redis_server: RedisServer, cfg: dict[str, Any]) -> set[str]:
    """Consumers holding pending entries on the chat stream."""
    import redis

    stream = f"{cfg['batch']['prefix']}:stream:chat"
    with redis.Redis.from_url(redis_server.url) as client:
        summary = client.xpending(stream, "workers")
    return {c["name"].decode() for c in summary.get("consumers") or [] if int(c["pending"]) > 0}


def test_cancel_mid_batch_starts_nothing_new_and_keeps_what_finished(
        standin, gateway, redis_server, workers, tmp_path: Path) -> None:
    total = 120
    up = standin(name="up")
    up.set_default(Fault.delay(0.05))
    cfg = config(up.url, redis_server)
    gw = gateway(cfg)
    client = sdk(gw)
    batch_id = submit(client, [chat_line(f"r{i}") for i in range(total)])
    worker = start_worker(workers, cfg, gw, tmp_path, "w1", concurrency=2)
    wait_for("some results", lambda: progress(client, batch_id) >= 10)
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status in ("cancelling", "cancelled")
    sent_at_cancel = len(up.requests)
    batch = final(client, batch_id)
    assert batch.status == "cancelled"
    output = file_lines(client, batch.output_file_id)
    assert len(output) == batch.request_counts.completed >= 10
    assert len({line["custom_id"] for line in output}) == len(output)
    assert len(up.requests) <= sent_at_cancel + 2  # at most the two in flight when the cancel came
    assert worker.alive
    wait_for("the queue empty", lambda: queue_length(redis_server, cfg) == 0)
    assert len(up.requests) <= sent_at_cancel + 2
    assert worker.terminate() == 0


def queue_length(redis_server: RedisServer, cfg: dict[str, Any]) -> int:
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        return int(client.xlen(f"{cfg['batch']['prefix']}:stream:chat"))


def test_redis_restarted_mid_batch_the_batch_completes_after_it_returns(
        standin, gateway, redis_server, workers, tmp_path: Path) -> None:
    total = 150
    up = standin(name="up")
    up.set_default(Fault.delay(0.02))
    cfg = config(up.url, redis_server)
    gw = gateway(cfg)
    client = sdk(gw)
    batch_id = submit(client, [chat_line(f"r{i}") for i in range(total)])
    worker = start_worker(workers, cfg, gw, tmp_path, "w1")
    wait_for("some results", lambda: progress(client, batch_id) >= 20)
    redis_server.kill()  # a crash: only what was fsynced (appendfsync always) survives
    wait_for("the worker to notice", lambda: "redis unavailable" in worker.log())
    assert worker.alive
    redis_server.start()
    batch = final(client, batch_id, within_s=180)
    assert batch.status == "completed"
    output = file_lines(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(total))
    assert worker.alive and "redis is back" in worker.log()
    assert worker.terminate() == 0


def test_sigterm_mid_batch_hands_back_what_is_unfinished_and_another_worker_completes_it(
        standin, gateway, redis_server, workers, tmp_path: Path) -> None:
    total = 40
    up = standin(name="up")
    up.set_default(Fault.delay(0.5))
    cfg = config(up.url, redis_server, visibility_timeout_s=600.0)  # only a hand-back makes entries claimable soon
    gw = gateway(cfg)
    client = sdk(gw)
    batch_id = submit(client, [chat_line(f"r{i}") for i in range(total)])
    metrics_port = free_port()
    leaving = WorkerProcess(cfg, gw.url, str(tmp_path), name="leaving", concurrency=8,
                            extra=["--grace-s", "0.1", "--metrics-port", str(metrics_port)]).start()
    workers.append(leaving)
    wait_for("requests in flight at the leaving worker", lambda: "leaving" in holders(redis_server, cfg))
    wait_for("a result", lambda: progress(client, batch_id) >= 1)
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'switchboard_worker_requests_total{outcome="ok",stream="chat"}' in scraped
    assert "switchboard_worker_in_flight" in scraped
    assert leaving.terminate() == 0
    assert "handed back" in leaving.log()
    start_worker(workers, cfg, gw, tmp_path, "staying", concurrency=8)
    batch = final(client, batch_id, within_s=120)  # well inside the 600 s visibility timeout
    output = file_lines(client, batch.output_file_id)
    assert batch.status == "completed"
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(total))
