"""External actions in the audit log, on both stores (a real SQLite file, a real redis-server): appended beside
the commits, read back merged newest first, older entries and older SQLite files still readable."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.gateway.state.base import AuditEntry, ControlState, StateStore, StoreUnavailable
from services.gateway.state.redis_store import RedisStore
from services.gateway.state.sqlite_store import SQLiteStore
from tests.redis_server import RedisServer
from tests.server_process import free_port

StoreFactory = Callable[[], StateStore]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture(params=["sqlite", "redis"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes store instances on one backing store (a second instance reads what the first wrote)."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "state.db")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    url = request.getfixturevalue("server").url
    return lambda: RedisStore(url, prefix=prefix)


@asynccontextmanager
async def opened(factory: StoreFactory) -> AsyncIterator[StateStore]:
    store = factory()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def state(version: int, at: float) -> ControlState:
    return ControlState(version=version, weights={"chat": {"a": version, "b": 100 - version}}, updated_at=at,
                        updated_by="alice")


def change(version: int, at: float) -> AuditEntry:
    return AuditEntry(version=version, time=at, actor="ops", operator="alice@bastion", action="set_weights",
                      target="chat", reason=f"change {version}", before={"a": version - 1}, after={"a": version})


def external(version: int, at: float, action: str = "rollout.promote") -> AuditEntry:
    patch = json.dumps({"status": {"pauseConditions": None}})
    return AuditEntry(version=version, time=at, actor="ops", operator="bob@laptop", action=action,
                      target="prod-eu/ai-prod/rollouts/ai-api", reason=f"{action} at {version}", before=None,
                      after={"detail": [patch], "outcome": "ok"}, kind="kubernetes")


async def interleaved(store: StateStore, start: float) -> list[AuditEntry]:
    """commit v1, external at v1, commit v2, external at v2, one second apart; newest first."""
    written = [change(1, start), external(1, start + 1), change(2, start + 2), external(2, start + 3, "rollout.abort")]
    await store.commit(0, state(1, start), written[0])
    await store.append_audit(written[1])
    await store.commit(1, state(2, start + 2), written[2])
    await store.append_audit(written[3])
    return written[::-1]


def test_appended_entries_come_back_with_the_commits_newest_first(new_store: StoreFactory) -> None:
    async def body() -> None:
        start = time.time()
        async with opened(new_store) as writer:
            expected = await interleaved(writer, start)
            assert (await writer.load()).version == 2, "an appended entry changes no state"
        async with opened(new_store) as reader:  # durable: another instance reads it back
            entries = await reader.audit()
        assert entries == expected
        assert [(e.kind, e.action) for e in entries] == [
            ("kubernetes", "rollout.abort"), ("gateway", "set_weights"),
            ("kubernetes", "rollout.promote"), ("gateway", "set_weights")]

    run(body)


def test_limit_and_since_apply_to_the_merged_list(new_store: StoreFactory) -> None:
    async def body() -> None:
        start = time.time()
        async with opened(new_store) as store:
            newest_first = await interleaved(store, start)
            assert await store.audit(limit=2) == newest_first[:2]
            assert await store.audit(limit=3) == newest_first[:3]
            assert await store.audit(since=start + 1) == newest_first[:3]
            assert await store.audit(since=start + 1, limit=1) == newest_first[:1]
            assert await store.audit(since=start + 3) == newest_first[:1]
            assert await store.audit(since=start + 10) == []

    run(body)


def test_entries_at_the_same_time_order_by_version_then_insertion(tmp_path: Path) -> None:
    """SQLite keeps the two kinds in two tables; same-second entries still come back in the order written."""
    async def body() -> None:
        at = time.time()
        async with opened(lambda: SQLiteStore(tmp_path / "state.db")) as store:
            await store.commit(0, state(1, at), change(1, at))
            first, second = external(1, at, "rollout.promote"), external(1, at, "rollout.abort")
            await store.append_audit(first)
            await store.append_audit(second)
            await store.commit(1, state(2, at), change(2, at))
            third = external(2, at, "rollout.retry")
            await store.append_audit(third)
            assert await store.audit() == [third, change(2, at), second, first, change(1, at)]

    run(body)


def test_an_entry_stored_without_a_kind_loads_as_a_gateway_entry() -> None:
    old = asdict(change(3, 1000.0))
    del old["kind"]
    entry = AuditEntry.from_json(json.dumps(old))
    assert entry.kind == "gateway" and entry == change(3, 1000.0)
    assert json.loads(external(1, 1.0).to_json())["kind"] == "kubernetes"


OLD_SCHEMA = """
CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE audit (version INTEGER PRIMARY KEY, time REAL NOT NULL, entry TEXT NOT NULL);
CREATE INDEX audit_time ON audit (time);
CREATE TABLE key_usage (key_id TEXT NOT NULL, kind TEXT NOT NULL, bucket INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0, spend REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, kind, bucket));
"""


def old_entry_json(entry: AuditEntry) -> str:
    """The entry as the previous version stored it: no ``kind``."""
    data = asdict(entry)
    del data["kind"]
    return json.dumps(data, sort_keys=True)


def test_an_sqlite_file_from_before_gains_the_table_on_open_and_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    start = time.time()
    old_state, old_entry = state(1, start), change(1, start)
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO state (id, version, doc) VALUES (1, 1, ?)", (old_state.to_json(),))
        conn.execute("INSERT INTO audit (version, time, entry) VALUES (1, ?, ?)", (start, old_entry_json(old_entry)))
    conn.close()

    async def body() -> None:
        async with opened(lambda: SQLiteStore(path)) as store:
            assert await store.load() == old_state
            assert await store.audit() == [old_entry]
            await store.append_audit(external(1, start + 1))
            await store.commit(1, state(2, start + 2), change(2, start + 2))
            assert [e.kind for e in await store.audit()] == ["gateway", "kubernetes", "gateway"]

    run(body)
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert "external_audit" in tables


def test_a_redis_stream_entry_without_a_kind_loads_as_a_gateway_entry(server: RedisServer) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    start = time.time()

    async def body() -> None:
        client = aioredis.Redis.from_url(server.url)
        try:
            await client.xadd(f"{prefix}:audit", {"entry": old_entry_json(change(1, start))})
        finally:
            await client.aclose()
        async with opened(lambda: RedisStore(server.url, prefix=prefix)) as store:
            await store.append_audit(external(0, start + 1))
            assert await store.audit() == [external(0, start + 1), change(1, start)]

    run(body)


def test_redis_stores_an_entry_sent_twice_by_the_clients_retry_once(server: RedisServer) -> None:
    """The client retries once on a broken connection; the script drops the second copy of the same entry."""
    async def body() -> None:
        async with opened(lambda: RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex[:10]}")) as store:
            at = time.time()
            await store.append_audit(external(0, at))
            await store.append_audit(external(0, at))
            await store.append_audit(external(0, at + 1))
            assert await store.audit() == [external(0, at + 1), external(0, at)]

    run(body)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_an_unreachable_store_raises_store_unavailable(backend: str, tmp_path: Path) -> None:
    async def body() -> None:
        store: StateStore = (SQLiteStore(tmp_path / "missing" / "state.db") if backend == "sqlite"
                             else RedisStore(f"redis://127.0.0.1:{free_port()}/0"))
        try:
            with pytest.raises(StoreUnavailable):
                await store.append_audit(external(0, time.time()))
            assert store.degraded
        finally:
            await store.close()

    run(body)
