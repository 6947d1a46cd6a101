"""Client-key metering with an injected clock, on a real SQLite state store (two meters = two processes)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.gateway.keys import ClientKey
from services.gateway.state.sqlite_store import SQLiteStore
from services.gateway.usage import UsageMeter, period_end, period_start
from tests.clock import Clock

MINUTE_0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()  # a Monday, at a minute boundary


def key(**limits: object) -> ClientKey:
    fields = {"rpm_limit": None, "tpm_limit": None, "budget_usd": None, "budget_period": "day", **limits}
    return ClientKey(id="key_1", hash="h", prefix="sk-sb-abcd", name="svc", owner="o", tier="free", routes=(),
                     expires_at=None, disabled=False, created_at=0.0, created_by="t", **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "state.db")
    asyncio.run(store.open())
    return store


def test_the_request_limit_is_a_sliding_minute(store: SQLiteStore) -> None:
    clock = Clock(MINUTE_0 + 50)
    meter, k = UsageMeter(store, clock=clock), key(rpm_limit=10)
    assert all(meter.admit(k) is None for _ in range(10))
    refusal = meter.admit(k)
    assert refusal is not None and refusal.status == 429 and refusal.reason == "rpm"
    assert refusal.retry_after_s == 10  # the current minute holds all ten: wait for it to end
    clock.now = MINUTE_0 + 90  # half of the previous minute still counts: 5 of its 10
    assert sum(meter.admit(k) is None for _ in range(10)) == 5  # 5 carried + 5 new = the limit of 10
    refusal = meter.admit(k)
    assert refusal is not None and 1 <= (refusal.retry_after_s or 0) <= 30
    clock.now = MINUTE_0 + 185  # two minutes on: nothing carried over
    assert all(meter.admit(k) is None for _ in range(10))


def test_tokens_count_once_the_answer_reports_them(store: SQLiteStore) -> None:
    clock = Clock(MINUTE_0 + 1)
    meter, k = UsageMeter(store, clock=clock), key(tpm_limit=100)
    assert meter.admit(k) is None
    meter.record(k, tokens=100, cost=0.0)
    refusal = meter.admit(k)
    assert refusal is not None and refusal.reason == "tpm"
    assert meter.usage(k).tokens_this_minute == 100 and meter.usage(k).requests_this_minute == 1


def test_a_spent_budget_refuses_until_the_period_ends(store: SQLiteStore) -> None:
    clock = Clock(MINUTE_0)
    meter, k = UsageMeter(store, clock=clock), key(budget_usd=1.0, budget_period="day")
    assert meter.admit(k) is None
    meter.record(k, tokens=10, cost=1.5)
    refusal = meter.admit(k)
    assert refusal is not None and refusal.code == "insufficient_quota"
    assert refusal.retry_after_s == 12 * 3600  # noon to midnight UTC
    clock.now = MINUTE_0 + 12 * 3600
    assert meter.admit(k) is None and meter.usage(k).spend_usd == 0.0


def test_two_processes_on_one_file_see_each_others_counts_after_a_sync(store: SQLiteStore, tmp_path: Path) -> None:
    clock = Clock(MINUTE_0 + 5)
    other = SQLiteStore(tmp_path / "state.db")
    first, second = UsageMeter(store, clock=clock), UsageMeter(other, clock=clock)
    k = key(rpm_limit=4, budget_usd=10.0)

    async def scenario() -> None:
        assert first.admit(k) is None and first.admit(k) is None
        first.record(k, tokens=7, cost=2.5)
        assert second.admit(k) is None
        await first.sync()
        await second.sync()
        await first.sync()
        assert first.usage(k).requests_this_minute == second.usage(k).requests_this_minute == 3
        assert second.usage(k).tokens_this_minute == 7 and second.usage(k).spend_usd == 2.5
        assert second.admit(k) is None  # the fourth
        assert second.admit(k) is not None and first.admit(k) is None  # first has not heard of it yet
        await second.sync()
        await first.sync()
        assert first.admit(k) is not None

    asyncio.run(scenario())


def test_budget_periods_start_and_end_on_utc_calendar_boundaries() -> None:
    now = datetime(2026, 12, 31, 18, 30, tzinfo=UTC).timestamp()  # a Thursday
    assert period_start("day", now) == datetime(2026, 12, 31, tzinfo=UTC).timestamp()
    assert period_start("week", now) == datetime(2026, 12, 28, tzinfo=UTC).timestamp()
    assert period_start("month", now) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert period_end("month", period_start("month", now)) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert period_start("total", now) == 0 and period_end("total", 0) is None
