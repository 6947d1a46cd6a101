"""The worker loop in-process against real parts: redis-server, the batch store, a real gateway over loopback and
a stand-in upstream. Retries, back-pressure, poison requests, taking over a dead worker's entries, and handing back
on stop."""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from services.batch.store import GROUP, BatchStore, QueuedRequest
from services.worker.loop import Worker, WorkerOptions
from services.worker.metrics import WorkerMetrics
from tests.batch_workers import WORKER_TOKEN, batch_config
from tests.gateway_harness import RunningGateway
from tests.redis_server import RedisServer
from tests.standins import Fault

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def config_for(up_url: str, redis: RedisServer, **batch: Any) -> dict[str, Any]:
    return batch_config(up_url, redis.url, batch={"prefix": "t" + secrets.token_hex(4), **batch})


def bodies(n: int) -> list[QueuedRequest]:
    return [QueuedRequest(f"req-{i}", json.dumps({"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}))
            for i in range(n)]


class Rig:
    """A store and workers on one gateway; ``workers`` run until the test's body returns."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.settings = gw.config.batch
        assert self.settings.redis_url
        self.store = BatchStore.from_url(self.settings.redis_url, self.settings)
        self.metrics: list[WorkerMetrics] = []

    def worker(self, http: httpx.AsyncClient, name: str = "w1", **options: Any) -> Worker:
        metrics = WorkerMetrics()
        self.metrics.append(metrics)
        opts = WorkerOptions(name=name, **{"backoff_base_s": 0.02, "grace_s": 5.0, "block_ms": 100, **options})
        return Worker(self.store, self.settings, http, self.gw.url, WORKER_TOKEN, opts, metrics)

    async def enqueue(self, n: int) -> str:
        batch = await self.store.enqueue(owner="", owner_name=None, input_file_id="file-test", endpoint=CHAT,
                                         requests=bodies(n))
        return str(batch["id"])

    async def finished(self, batch_id: str, status: str = "completed") -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            batch = await self.store.get_batch(batch_id)
            return batch if batch is not None and batch["status"] == status else None

        return await poll(f"batch {batch_id} {status}", check)

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        content = await self.store.files.content(file_id, "")
        assert content is not None
        return [json.loads(line) for line in content.splitlines()]


async def poll(what: str, check: Callable[[], Any], within_s: float = 60.0) -> Any:
    """The first truthy answer of ``check()`` (a plain or a coroutine function), polled on the running loop."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def run(gw: RunningGateway, body: Callable[[Rig, httpx.AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        rig = Rig(gw)
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                return await body(rig, http)
        finally:
            await rig.store.aclose()

    return asyncio.run(main())


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def working(worker: Worker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def stopped(worker: Worker, task: asyncio.Task[None]) -> None:
    worker.stop.set()
    await asyncio.wait_for(task, timeout=30)


def test_a_batch_is_processed_acknowledged_and_deleted(standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway(config_for(up.url, redis))

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        batch_id = await rig.enqueue(12)
        worker = rig.worker(http, concurrency=3)
        task = await working(worker)
        batch = await rig.finished(batch_id)
        await stopped(worker, task)
        output = await rig.lines(batch["output_file_id"])
        assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(12))
        assert all(line["response"]["status_code"] == 200 for line in output)
        assert batch["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
        stream = rig.store.stream_key("chat")
        assert await rig.store.redis.xlen(stream) == 0  # finished entries are deleted: length is the backlog
        assert (await rig.store.redis.xpending(stream, GROUP))["pending"] == 0
        assert value(rig.metrics[0], "switchboard_worker_requests_total", stream="chat", outcome="ok") == 12
        consumers = await rig.store.redis.xinfo_consumers(stream, GROUP)
        assert [c["name"] for c in consumers] == []  # a worker that holds nothing leaves the group on stop

    run(gw, body)
    assert len(up.requests) == 12
    assert all(r.headers.get("x-switchboard-priority") is None for r in up.requests)  # not forwarded upstream


def test_server_errors_are_retried_and_a_poison_request_goes_to_the_error_file(standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway(config_for(up.url, redis, max_attempts=3))
    up.push(Fault.status(500), Fault.ok())  # the first request: one failure, then an answer
    up.push(Fault.status(500), Fault.status(500), Fault.status(500))  # the second: poisoned after three tries

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        batch_id = await rig.enqueue(2)
        worker = rig.worker(http, concurrency=1)
        task = await working(worker)
        batch = await rig.finished(batch_id)
        await stopped(worker, task)
        assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        output, errors = await rig.lines(batch["output_file_id"]), await rig.lines(batch["error_file_id"])
        assert [line["custom_id"] for line in output] == ["req-0"]
        assert [line["custom_id"] for line in errors] == ["req-1"]
        assert errors[0]["response"]["status_code"] == 502  # the gateway's answer to an upstream 500
        assert errors[0]["response"]["body"]["error"]["type"] == "upstream_error"
        metrics = rig.metrics[0]
        assert value(metrics, "switchboard_worker_retries_total", stream="chat", reason="server_error") == 3
        assert value(metrics, "switchboard_worker_requests_total", stream="chat", outcome="poisoned") == 1

    run(gw, body)
    assert len(up.requests) == 5


def test_a_client_error_is_final_and_not_retried(standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway(config_for(up.url, redis))
    up.push(Fault.status(400))

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        batch_id = await rig.enqueue(1)
        worker = rig.worker(http)
        task = await working(worker)
        batch = await rig.finished(batch_id)
        await stopped(worker, task)
        errors = await rig.lines(batch["error_file_id"])
        assert errors[0]["response"]["status_code"] == 400

    run(gw, body)
    assert len(up.requests) == 1


def test_yielding_to_interactive_traffic_is_waited_out_and_not_an_attempt(standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway({**config_for(up.url, redis, max_attempts=1, yield_at=0.5),
                  "limits": {"max_concurrent_requests": 2}})
    release = threading.Event()
    up.set_default(lambda: Fault.ok() if release.is_set() else Fault.delay(30.0))
    held = threading.Thread(target=httpx.post, args=(gw.url + CHAT,),
                            kwargs={"json": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                    "timeout": 60})
    held.start()

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        await poll("the interactive request upstream", lambda: len(up.requests) >= 1)
        batch_id = await rig.enqueue(1)
        worker = rig.worker(http)
        task = await working(worker)
        metrics = rig.metrics[0]
        await poll("a yield", lambda: value(metrics, "switchboard_worker_retries_total", stream="chat",
                                                reason="yielding") >= 2)
        release.set()
        up.stop()  # ends the held interactive request; the gateway then has room
        up.start()
        batch = await rig.finished(batch_id)
        await stopped(worker, task)
        assert batch["request_counts"]["completed"] == 1  # max_attempts 1: waiting cost no attempt

    run(gw, body)
    held.join(timeout=30)


def test_a_dead_workers_entries_are_claimed_after_the_visibility_timeout(standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway(config_for(up.url, redis, visibility_timeout_s=1.0))

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        batch_id = await rig.enqueue(3)
        stream = rig.store.stream_key("chat")
        # A worker that read everything and died: the entries are pending under its name.
        await rig.store.redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=10)
        worker = rig.worker(http, name="alive")
        task = await working(worker)
        batch = await rig.finished(batch_id)
        await stopped(worker, task)
        assert batch["request_counts"]["completed"] == 3
        assert value(rig.metrics[0], "switchboard_worker_claimed_total", stream="chat") == 3

    run(gw, body)


def test_on_stop_unfinished_requests_are_handed_back_and_another_worker_takes_them_at_once(
        standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway(config_for(up.url, redis, visibility_timeout_s=600.0))  # only a hand-back makes them claimable
    up.push(Fault.delay(60.0), Fault.delay(60.0))

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        batch_id = await rig.enqueue(2)
        first = rig.worker(http, name="first", concurrency=2, grace_s=0.2)
        task = await working(first)
        await poll("both requests upstream", lambda: len(up.requests) >= 2)
        await stopped(first, task)
        stream = rig.store.stream_key("chat")
        pending = await rig.store.redis.xpending_range(stream, GROUP, "-", "+", 10)
        assert len(pending) == 2 and all(p["time_since_delivered"] >= 600_000 for p in pending)
        second = rig.worker(http, name="second")
        task = await working(second)
        batch = await rig.finished(batch_id)
        await stopped(second, task)
        assert batch["request_counts"]["completed"] == 2
        assert value(rig.metrics[1], "switchboard_worker_claimed_total", stream="chat") == 2

    run(gw, body)


def test_a_request_waiting_to_retry_when_its_batch_is_cancelled_is_dropped_unsent(standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway(config_for(up.url, redis, visibility_timeout_s=600.0))  # the cancel ends without waiting it out
    up.push(Fault.status(500))

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        batch_id = await rig.enqueue(3)
        worker = rig.worker(http, concurrency=1, backoff_base_s=2.0)
        task = await working(worker)
        await poll("the first try upstream", lambda: len(up.requests) >= 1)
        await rig.store.cancel(batch_id)
        batch = await rig.finished(batch_id, "cancelled")
        await poll("the held entry dropped", lambda: pending_is_empty(rig, rig.store.stream_key("chat")))
        await stopped(worker, task)
        assert batch["request_counts"]["completed"] == 0
        assert value(rig.metrics[0], "switchboard_worker_requests_total", stream="chat", outcome="skipped") == 1

    run(gw, body)
    assert len(up.requests) == 1  # no request started after the cancel


async def pending_is_empty(rig: Rig, stream: str) -> bool:
    return (await rig.store.redis.xpending(stream, GROUP))["pending"] == 0


def test_a_departed_worker_that_holds_nothing_leaves_the_group(standin, gateway, redis) -> None:
    up = standin(name="up")
    gw = gateway(config_for(up.url, redis, visibility_timeout_s=0.2))

    async def body(rig: Rig, http: httpx.AsyncClient) -> None:
        stream = rig.store.stream_key("chat")
        await rig.store.ensure_group("chat")
        await rig.store.redis.xgroup_createconsumer(stream, GROUP, "departed")  # joined, then was killed
        worker = rig.worker(http, name="alive")
        task = await working(worker)
        await poll("the departed worker removed", lambda: consumer_gone(rig, stream, "departed"))
        await stopped(worker, task)

    run(gw, body)


async def consumer_gone(rig: Rig, stream: str, name: str) -> bool:
    return name.encode() not in {c["name"] for c in await rig.store.redis.xinfo_consumers(stream, GROUP)}
