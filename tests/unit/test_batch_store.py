"""BatchStore against a real redis-server: queueing, idempotent results, finalize by one caller, cancel,
the queue snapshot, and Redis being down."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from services.batch.formats import result_line
from services.batch.store import GROUP, BatchStore, QueuedRequest, QueueFull
from tests.clock import Clock
from tests.redis_server import RedisServer
from tests.server_process import free_port


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


def settings(**overrides: Any) -> SimpleNamespace:
    values = {"prefix": f"test-{uuid.uuid4().hex[:10]}", "file_dir": None, "inline_max_bytes": 4 << 20,
              "file_ttl_s": 3600, "max_queued_per_key": 1000, "visibility_timeout_s": 60.0}
    return SimpleNamespace(**(values | overrides))


def requests(n: int) -> list[QueuedRequest]:
    return [QueuedRequest(f"req-{i}", json.dumps({"model": "chat", "messages": [{"role": "user", "content": str(i)}]}))
            for i in range(n)]


def run(server: RedisServer, body, **overrides: Any) -> Any:  # type: ignore[no-untyped-def]
    async def main() -> Any:
        store = BatchStore.from_url(server.url, settings(**overrides), clock=Clock(1_800_000_000.0))
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


async def create(store: BatchStore, n: int, owner: str = "key-a") -> dict[str, Any]:
    return await store.enqueue(owner=owner, owner_name="alice", input_file_id="file-x",
                               endpoint="/v1/chat/completions", requests=requests(n),
                               metadata={"description": "nightly"})


def ok_line(custom_id: str) -> dict[str, Any]:
    return result_line(custom_id, 200, {"choices": [{"message": {"content": "hi"}}]})


def test_enqueue_puts_every_request_on_the_stream_with_the_contract_fields(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        batch = await create(store, 5)
        assert batch["status"] == "in_progress" and batch["request_counts"] == {"total": 5, "completed": 0,
                                                                                 "failed": 0}
        assert batch["id"].startswith("batch_") and batch["metadata"] == {"description": "nightly"}
        stream = store.stream_key("chat")
        assert await store.redis.xlen(stream) == 5
        read = await store.redis.xreadgroup(GROUP, "w1", {stream: ">"}, count=10)
        entries = read[0][1]
        first = {k.decode(): v.decode() for k, v in entries[0][1].items()}
        assert first["batch"] == batch["id"] and first["custom_id"] == "req-0" and first["owner"] == "key-a"
        assert json.loads(first["body"])["model"] == "chat"
        assert await store.batch_status(batch["id"]) == "in_progress"

    run(server, body)


def test_first_result_wins_and_exactly_one_caller_finalizes(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        batch = await create(store, 3)
        bid = batch["id"]
        assert await store.attempt(bid, "req-0") == 1
        assert await store.attempt(bid, "req-0") == 2
        assert await store.record_result(bid, "req-0", ok_line("req-0"), True) is True
        assert await store.record_result(bid, "req-0", ok_line("req-0"), True) is False  # done twice, stored once
        assert await store.record_result(bid, "req-0", result_line("req-0", 500, {}), False) is False
        failed = result_line("req-1", None, error_code="poison", error_message="failed 3 times")
        assert await store.record_result(bid, "req-1", failed, False) is True
        await store.maybe_finalize(bid)
        assert (await store.get_batch(bid))["status"] == "in_progress"  # req-2 has no result yet
        await store.record_result(bid, "req-2", ok_line("req-2"), True)
        await asyncio.gather(*(store.maybe_finalize(bid) for _ in range(8)))
        done = await store.get_batch(bid)
        assert done["status"] == "completed" and done["completed_at"] is not None
        assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        output = await store.files.content(done["output_file_id"], "key-a")
        errors = await store.files.content(done["error_file_id"], "key-a")
        out_lines = [json.loads(line) for line in output.decode().splitlines()]
        err_lines = [json.loads(line) for line in errors.decode().splitlines()]
        assert sorted(line["custom_id"] for line in out_lines) == ["req-0", "req-2"]
        assert [line["custom_id"] for line in err_lines] == ["req-1"]
        assert err_lines[0]["response"] is None and err_lines[0]["error"]["code"] == "poison"
        output_files = [k async for k in store.redis.scan_iter(f"{store.prefix}:file:*:content")]
        assert len(output_files) == 2  # one finalizer wrote one output and one error file
        assert await store.record_result(bid, "req-2", ok_line("req-2"), True) is False  # final: no more results
        snapshot = await store.queue_snapshot()
        chat = next(s for s in snapshot.streams if s.endpoint == "chat")
        assert chat.retries_total == 1 and chat.completed_per_s == pytest.approx(3 / 60)

    run(server, body)


def test_a_batch_without_errors_has_no_error_file(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        bid = (await create(store, 1))["id"]
        await store.record_result(bid, "req-0", ok_line("req-0"), True)
        await store.maybe_finalize(bid)
        done = await store.get_batch(bid)
        assert done["status"] == "completed" and done["output_file_id"] and done["error_file_id"] is None

    run(server, body)


def test_cancel_empties_the_stream_and_waits_for_what_is_in_flight(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        bid = (await create(store, 4))["id"]
        await store.record_result(bid, "req-0", ok_line("req-0"), True)
        await store.attempt(bid, "req-1")  # a worker is sending req-1
        cancelling = await store.cancel(bid)
        assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
        assert await store.redis.xlen(store.stream_key("chat")) == 0
        assert await store.record_result(bid, "req-1", ok_line("req-1"), True) is True  # finished ones stay
        await store.maybe_finalize(bid)
        cancelled = await store.get_batch(bid)
        assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
        output = await store.files.content(cancelled["output_file_id"], "key-a")
        assert sorted(json.loads(line)["custom_id"] for line in output.decode().splitlines()) == ["req-0", "req-1"]
        assert cancelled["request_counts"] == {"total": 4, "completed": 2, "failed": 0}
        assert (await store.cancel(bid))["status"] == "cancelled"  # again: unchanged
        assert await store.attempt(bid, "req-2") == 0  # a worker that checked the status before the cancel

    run(server, body)


def test_cancel_before_any_worker_ran_is_cancelled_at_once(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        bid = (await create(store, 3))["id"]
        cancelled = await store.cancel(bid)
        assert cancelled["status"] == "cancelled" and cancelled["request_counts"]["completed"] == 0
        assert await store.queued_for("key-a") == 0

    run(server, body)


def test_an_attempt_older_than_the_visibility_timeout_no_longer_holds_a_cancel(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        bid = (await create(store, 2))["id"]
        await store.attempt(bid, "req-0")  # its worker is killed: no result will come
        assert (await store.cancel(bid))["status"] == "cancelling"
        store.clock.now += 61
        assert (await store.get_batch(bid))["status"] == "cancelled"

    run(server, body)


def test_max_queued_per_key_counts_unfinished_requests_per_key(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        first = await create(store, 6)
        with pytest.raises(QueueFull, match="6 requests queued"):
            await create(store, 5)
        await create(store, 5, owner="key-b")  # another key has its own allowance
        await store.record_result(first["id"], "req-0", ok_line("req-0"), True)
        assert await store.queued_for("key-a") == 5
        await create(store, 5)

    run(server, body, max_queued_per_key=10)


def test_list_pages_newest_first_per_owner(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        ids = [(await create(store, 1))["id"] for _ in range(5)]
        await create(store, 1, owner="key-b")
        page, more = await store.list_batches("key-a", limit=2)
        assert [b["id"] for b in page] == ids[::-1][:2] and more
        page2, more2 = await store.list_batches("key-a", after=page[-1]["id"], limit=3)
        assert [b["id"] for b in page2] == ids[::-1][2:5] and not more2
        assert await store.get_batch(ids[0], owner="key-b") is None

    run(server, body)


def test_large_outputs_go_to_the_file_dir(server: RedisServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def body(store: BatchStore) -> None:
        bid = (await create(store, 2))["id"]
        for cid in ("req-0", "req-1"):
            await store.record_result(bid, cid, ok_line(cid), True)
        await store.maybe_finalize(bid)
        done = await store.get_batch(bid)
        assert (tmp_path / f"{done['output_file_id']}.jsonl").exists()
        assert len((await store.files.content(done["output_file_id"], "key-a")).splitlines()) == 2

    run(server, body, file_dir=str(tmp_path), inline_max_bytes=10)


def test_queue_snapshot_reports_depth_pending_workers_and_batches(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        store.clock.now = time.time()
        batch = await create(store, 3)
        stream = store.stream_key("chat")
        await store.redis.xreadgroup(GROUP, "worker-1", {stream: ">"}, count=1)
        snapshot = await store.queue_snapshot()
        assert snapshot.enabled and snapshot.reason is None
        chat = next(s for s in snapshot.streams if s.endpoint == "chat")
        assert (chat.length, chat.pending) == (3, 1) and chat.oldest_age_s is not None
        assert [(w.name, w.pending) for w in chat.workers] == [("worker-1", 1)]
        progress = next(b for b in snapshot.batches if b.id == batch["id"])
        assert (progress.total, progress.owner, progress.description) == (3, "alice", "nightly")

    run(server, body)


def test_queue_snapshot_with_redis_down_says_why_without_raising() -> None:
    async def main() -> None:
        url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
        store = BatchStore.from_url(url, settings())
        try:
            snapshot = await store.queue_snapshot()
        finally:
            await store.aclose()
        assert snapshot.enabled and "redis unreachable" in (snapshot.reason or "")
        assert "hunter2" not in (snapshot.reason or "")

    asyncio.run(main())



def test_queueing_recreates_a_lost_group_so_no_entry_is_skipped(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        await create(store, 1)
        stream = store.stream_key("chat")
        await store.redis.delete(stream)  # a Redis that lost the stream and its group
        await create(store, 2)
        read = await store.redis.xreadgroup(GROUP, "w1", {stream: ">"}, count=10)
        assert [fields[b"custom_id"] for _, fields in read[0][1]] == [b"req-0", b"req-1"]

    run(server, body)


def test_an_abandoned_attempt_no_longer_holds_a_cancel(server: RedisServer) -> None:
    async def body(store: BatchStore) -> None:
        bid = (await create(store, 2))["id"]
        await store.attempt(bid, "req-0")  # failed once; the worker backs off before trying again
        assert (await store.cancel(bid))["status"] == "cancelling"
        await store.abandon(bid, "req-0")  # it then finds the batch cancelling and drops the entry
        await store.maybe_finalize(bid)
        assert (await store.get_batch(bid))["status"] == "cancelled"

    run(server, body)
