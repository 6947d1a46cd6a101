"""RedisStore against a real redis-server (tests/redis_server.py): CAS, audit, watch, outage and recovery."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.gateway.state.base import AuditEntry, ControlState, StaleVersion, StoreUnavailable
from services.gateway.state.redis_store import RedisStore, redact
from tests.redis_server import RedisServer
from tests.server_process import free_port


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def state(version: int, weight: int = 1, by: str = "alice") -> ControlState:
    return ControlState(version=version, weights={"chat": {"a": weight, "b": 100 - weight}},
                        updated_at=time.time(), updated_by=by)


def entry(version: int, at: float | None = None, reason: str = "test") -> AuditEntry:
    return AuditEntry(version=version, time=time.time() if at is None else at, actor="ops", operator="alice@bastion",
                      action="set_weights", target="chat", reason=reason, before={"a": 1}, after={"a": version})


def run(body: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return asyncio.run(body(*args))


async def opened(url: str, prefix: str, **kwargs: Any) -> RedisStore:
    store = RedisStore(url, prefix=prefix, **kwargs)
    await store.open()
    return store


async def wait_for(check: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout_s``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def audit_length(url: str, key: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.xlen(key))
    finally:
        await client.aclose()


def test_load_on_empty_store_is_version_zero(server: RedisServer, prefix: str) -> None:
    async def body() -> None:
        store = await opened(server.url, prefix)
        assert await store.load() == ControlState()
        assert await store.audit() == []
        assert store.degraded is None
        await store.close()

    run(body)


def test_commit_then_load_from_another_instance(server: RedisServer, prefix: str) -> None:
    async def body() -> None:
        a, b = await opened(server.url, prefix), await opened(server.url, prefix)
        first = state(1)
        assert await a.commit(0, first, entry(1)) == first
        assert await b.load() == first
        second = state(2, weight=30, by="bob")
        await b.commit(1, second, entry(2))
        assert await a.load() == second
        assert [e.version for e in await a.audit()] == [2, 1]
        with pytest.raises(ValueError):
            await a.commit(2, state(5), entry(5))  # the new version must be base + 1
        await a.close()
        await b.close()

    run(body)


def test_stale_base_version_raises_with_current_state_and_writes_nothing(server: RedisServer, prefix: str) -> None:
    async def body() -> None:
        store = await opened(server.url, prefix)
        current = state(1)
        await store.commit(0, current, entry(1))
        before = await audit_length(server.url, store.audit_key)
        for base in (0, 4):  # behind and ahead of the stored version
            with pytest.raises(StaleVersion) as caught:
                await store.commit(base, state(base + 1, weight=77), entry(base + 1))
            assert caught.value.current == current
        assert await audit_length(server.url, store.audit_key) == before == 1
        assert await store.load() == current
        await store.close()

    run(body)


def test_concurrent_commits_on_the_same_base_exactly_one_wins(server: RedisServer, prefix: str) -> None:
    async def body() -> None:
        a, b = await opened(server.url, prefix), await opened(server.url, prefix)
        results = await asyncio.gather(
            a.commit(0, state(1, weight=10, by="a"), entry(1, reason="a")),
            b.commit(0, state(1, weight=90, by="b"), entry(1, reason="b")),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, ControlState)]
        losers = [r for r in results if isinstance(r, StaleVersion)]
        assert len(winners) == 1 and len(losers) == 1, results
        assert losers[0].current == winners[0] == await a.load()
        trail = await a.audit()
        assert len(trail) == 1 and trail[0].reason == winners[0].updated_by
        await a.close()
        await b.close()

    run(body)


def test_audit_is_newest_first_with_since_and_limit(server: RedisServer, prefix: str) -> None:
    async def body() -> None:
        store = await opened(server.url, prefix)
        t0 = time.time()
        for version in range(1, 6):
            await store.commit(version - 1, state(version), entry(version, at=t0 + version))
        assert [e.version for e in await store.audit()] == [5, 4, 3, 2, 1]
        assert [e.version for e in await store.audit(limit=2)] == [5, 4]
        assert [e.version for e in await store.audit(since=t0 + 3)] == [5, 4, 3]
        assert [e.version for e in await store.audit(since=t0 + 3, limit=1)] == [5]
        assert await store.audit(since=t0 + 60) == []
        assert await store.audit(limit=0) == []
        # Entries older than ``since`` inside the scanned id range are skipped, paging on past them.
        assert [e.version for e in await store.audit(since=t0 + 1, limit=2)] == [5, 4]
        await store.close()

    run(body)


def test_watch_reports_a_commit_from_another_store_within_a_second(server: RedisServer, prefix: str) -> None:
    async def body() -> None:
        a = await opened(server.url, prefix)
        await a.commit(0, state(1), entry(1))
        # A long poll interval: the change must arrive through pub/sub.
        b = await opened(server.url, prefix, poll_s=30)
        seen: list[ControlState] = []

        async def on_change(new: ControlState) -> None:
            seen.append(new)

        watcher = asyncio.create_task(b.watch(on_change))
        await asyncio.sleep(0.2)
        assert seen == []  # the state it started with is not a change
        second = state(2, weight=40)
        await a.commit(1, second, entry(2))
        assert await wait_for(lambda: bool(seen), 1.0) < 1.0
        assert seen == [second]
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        await a.close()
        await b.close()

    run(body)


def test_watch_polls_when_a_message_is_lost(server: RedisServer, prefix: str) -> None:
    async def body() -> None:
        store = await opened(server.url, prefix, poll_s=0.2)
        seen: list[int] = []
        watcher = asyncio.create_task(store.watch(lambda new: seen.append(new.version)))  # a sync callback
        await asyncio.sleep(0.1)
        raw = aioredis.Redis.from_url(server.url)
        await raw.set(store.state_key, state(7).to_json())  # written with no PUBLISH
        await raw.aclose()
        await wait_for(lambda: seen == [7], 1.0)
        watcher.cancel()
        await store.close()

    run(body)


def test_a_cancelled_watch_always_stops(server: RedisServer, prefix: str) -> None:
    """redis-py's timed pub/sub read can swallow a cancel that lands as its timeout expires; the watch must
    stop all the same, or the gateway's shutdown waits forever. A short poll makes that moment common."""
    async def body() -> None:
        store = await opened(server.url, prefix, poll_s=0.005)
        try:
            for attempt in range(60):
                watcher = asyncio.create_task(store.watch(lambda new: None))
                await asyncio.sleep(0.002 * (attempt % 10))
                watcher.cancel()
                done, _ = await asyncio.wait([watcher], timeout=10)
                assert done, f"attempt {attempt}: the cancelled watch is still running"
                assert watcher.cancelled()
        finally:
            await store.close()

    run(body)


def test_open_warns_when_redis_is_not_durable(
    server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        caplog.set_level(logging.WARNING, logger="services.gateway.state.redis_store")
        store = await opened(server.url, prefix)
        assert "appendfsync" not in caplog.text
        raw = aioredis.Redis.from_url(server.url)
        await raw.config_set("appendfsync", "everysec")
        try:
            await store.open()
        finally:
            await raw.config_set("appendfsync", "always")
            await raw.aclose()
        assert "appendfsync=everysec" in caplog.text
        await store.close()

    run(body)


def test_password_is_never_shown() -> None:
    assert redact("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("rediss://user:secret@host/1") == "rediss://user:***@host/1"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"

    async def body() -> None:
        store = RedisStore(f"redis://:secret@127.0.0.1:{free_port()}/0")  # nothing listens there
        with pytest.raises(StoreUnavailable) as caught:
            await store.load()
        assert "secret" not in str(caught.value) and "redis://:***@127.0.0.1" in str(caught.value)
        assert store.degraded is not None and "secret" not in store.degraded
        await store.close()

    run(body)


def test_redis_killed_then_back_on_the_same_port(prefix: str) -> None:
    async def body(redis: RedisServer) -> None:
        a = await opened(redis.url, prefix)
        watching = await opened(redis.url, prefix, poll_s=0.2)
        seen: list[int] = []
        watcher = asyncio.create_task(watching.watch(lambda new: seen.append(new.version)))
        await a.commit(0, state(1), entry(1))
        await wait_for(lambda: seen == [1], 1.0)

        redis.kill()
        for attempt in (lambda: a.commit(1, state(2), entry(2)), a.load, a.audit):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"redis unreachable at redis://127\.0\.0\.1"):
                await attempt()
            assert time.monotonic() - started < 3.0
        assert a.degraded is not None and redis.url in a.degraded
        await wait_for(lambda: watching.degraded is not None, 1.5)

        redis.start()
        # Another replica writes at once, before the watcher is back: the pub/sub message is lost to it.
        other = RedisStore(redis.url, prefix=prefix)
        assert (await other.load()).version == 1  # acknowledged before the kill, so fsynced: still there
        await other.commit(1, state(2, weight=55), entry(2))
        await wait_for(lambda: watching.degraded is None, 2.0)
        await wait_for(lambda: seen == [1, 2], 2.0)
        assert (await a.load()).version == 2 and a.degraded is None
        assert [e.version for e in await a.audit()] == [2, 1]

        watcher.cancel()
        for store in (a, watching, other):
            await store.close()

    with RedisServer() as redis:
        run(body, redis)
