"""Metering client keys: requests and tokens per minute, spend per budget period.

Per-minute limits use a sliding window estimated from two fixed minutes (the previous minute's count,
weighted by how much of it still lies inside the last 60 s, plus the current minute's), as Cloudflare and
Redis's own rate-limit patterns do: no burst of twice the limit at a minute boundary, two counters a key.

The hot path never waits for a store. Each replica counts locally and at once; every ``sync_s`` a
background task adds its unsynced counts to the state store and reads back the totals of all replicas.
So a limit holds across replicas within what the *other* replicas admit in one sync interval: with R
replicas and a key sending q requests/s in all, at most ``(R - 1) * q * sync_s`` requests over the limit
(0.25 s by default: a key at 400 requests/s over 4 replicas could get 75 more than its limit in a
minute). On SQLite the totals are the processes sharing the file; spend survives restarts on both stores.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.admin_api import KeyUsage
from services.gateway.keys import ClientKey
from services.gateway.state.base import StateStore, StoreUnavailable, UsageRead, UsageTotals

log = logging.getLogger("switchboard.usage")

WINDOW_S = 60
SYNC_S = 0.25
IDLE_FORGET_S = 180  # a key unused this long is no longer synced (its counts have expired anyway)


def period_start(period: str, now: float) -> int:
    """Start (Unix seconds, UTC) of the budget period holding ``now``; 0 for 'total'."""
    if period == "total":
        return 0
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return int(day.timestamp())


def period_end(period: str, start: int) -> float | None:
    if period == "total":
        return None
    begin = datetime.fromtimestamp(start, UTC)
    if period == "day":
        end = begin + timedelta(days=1)
    elif period == "week":
        end = begin + timedelta(weeks=1)
    else:
        end = (begin.replace(day=28) + timedelta(days=4)).replace(day=1)
    return end.timestamp()


@dataclass(frozen=True)
class Refusal:
    """Why a key may not send this request now: the 4xx the client gets."""

    status: int
    code: str
    message: str
    reason: str  # bounded metric label
    retry_after_s: int | None = None


@dataclass
class _Meter:
    """One key's counts as this replica sees them: all replicas' totals at the last sync plus local ones since."""

    minute: int
    period: int
    period_ends_at: float
    previous: list[int] = field(default_factory=lambda: [0, 0])  # [requests, tokens] in minute - 1
    current: list[int] = field(default_factory=lambda: [0, 0])  # [requests, tokens] in minute
    spend: float = 0.0
    last_used: float = 0.0
    budgeted: bool = False  # kept in sync while idle, so a budget holds from a replica's first request on


class UsageMeter:
    def __init__(self, store: StateStore, sync_s: float = SYNC_S, clock=time.time) -> None:
        self.store = store
        self.sync_s = sync_s
        self.clock = clock
        self._meters: dict[str, _Meter] = {}
        self._periods: dict[str, str] = {}
        self._pending_counts: defaultdict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self._pending_spend: defaultdict[tuple[str, int], float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None
        self._syncing = asyncio.Lock()  # the loop and an admin read may both ask; one sync at a time

    # ---- hot path ----------------------------------------------------------------------------

    def _meter(self, key: ClientKey, now: float) -> _Meter:
        minute = int(now // WINDOW_S)
        meter = self._meters.get(key.id)
        if meter is None or self._periods.get(key.id) != key.budget_period:
            meter = self._meters[key.id] = _Meter(minute, 0, -math.inf)
            self._periods[key.id] = key.budget_period
        if meter.minute != minute:
            meter.previous = meter.current if minute == meter.minute + 1 else [0, 0]
            meter.current = [0, 0]
            meter.minute = minute
        if now >= meter.period_ends_at:
            meter.period = period_start(key.budget_period, now)
            meter.period_ends_at = period_end(key.budget_period, meter.period) or math.inf
            meter.spend = 0.0
        meter.last_used = now
        meter.budgeted = key.budget_usd is not None
        return meter

    def admit(self, key: ClientKey, now: float | None = None) -> Refusal | None:
        """Check the key's limits and, when the request may go, count it. None means admitted."""
        now = self.clock() if now is None else now
        meter = self._meter(key, now)
        if key.budget_usd is not None and meter.spend >= key.budget_usd:
            end = meter.period_ends_at
            return Refusal(429, "insufficient_quota",
                           f"key '{key.name}' has spent its {key.budget_period} budget of ${key.budget_usd:g} "
                           f"(${meter.spend:.4f})", "budget",
                           None if end == math.inf else max(1, math.ceil(end - now)))
        elapsed = now - meter.minute * WINDOW_S
        carried = 1.0 - elapsed / WINDOW_S  # the share of the previous minute still inside the last 60 s
        if key.rpm_limit is not None:
            used = meter.previous[0] * carried + meter.current[0]
            if used + 1 > key.rpm_limit:
                return Refusal(429, "rate_limit_exceeded",
                               f"key '{key.name}' is over its limit of {key.rpm_limit} requests per minute",
                               "rpm", _retry_after(meter.previous[0], meter.current[0], key.rpm_limit - 1, elapsed))
        if key.tpm_limit is not None:
            used = meter.previous[1] * carried + meter.current[1]
            if used >= key.tpm_limit:
                return Refusal(429, "rate_limit_exceeded",
                               f"key '{key.name}' is over its limit of {key.tpm_limit} tokens per minute",
                               "tpm", _retry_after(meter.previous[1], meter.current[1], key.tpm_limit - 1, elapsed))
        meter.current[0] += 1
        self._pending_counts[(key.id, meter.minute)][0] += 1
        return None

    def record(self, key: ClientKey, tokens: int, cost: float, now: float | None = None) -> None:
        """Tokens and spend of an answered request (known only once the upstream reported usage)."""
        now = self.clock() if now is None else now
        meter = self._meter(key, now)
        if tokens:
            meter.current[1] += tokens
            self._pending_counts[(key.id, meter.minute)][1] += tokens
        if cost:
            meter.spend += cost
            self._pending_spend[(key.id, meter.period)] += cost

    # ---- reporting ---------------------------------------------------------------------------

    def usage(self, key: ClientKey, now: float | None = None) -> KeyUsage:
        now = self.clock() if now is None else now
        meter = self._meters.get(key.id)
        minute = int(now // WINDOW_S)
        if meter is None:
            return KeyUsage(requests_this_minute=0, tokens_this_minute=0, spend_usd=0.0,
                            period_started_at=_period_or_none(key.budget_period, now))
        counts = meter.current if meter.minute == minute else [0, 0]
        return KeyUsage(requests_this_minute=counts[0], tokens_this_minute=counts[1],
                        spend_usd=round(meter.spend if now < meter.period_ends_at else 0.0, 6),
                        period_started_at=_period_or_none(key.budget_period, now))

    # ---- sync with the store -----------------------------------------------------------------

    async def start(self, keys: list[ClientKey]) -> None:
        """Read every key's totals once (a restarted replica knows spent budgets before its first request),
        then sync in the background."""
        try:
            await self.sync(keys)
        except StoreUnavailable as exc:
            log.error("client-key usage unavailable at start-up, counting from zero: %s", exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await self.sync()  # hand over what this replica counted since the last sync
        except StoreUnavailable as exc:
            log.warning("usage counted since the last sync is lost: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.sync()
            except StoreUnavailable:
                pass  # kept pending; the store's degraded flag says why
            except Exception:
                log.exception("usage sync failed; retrying")

    async def sync(self, keys: list[ClientKey] | None = None) -> None:
        """Add local counts to the store and read back all replicas' totals (for ``keys`` too, when given)."""
        async with self._syncing:
            await self._sync(keys)

    async def _sync(self, keys: list[ClientKey] | None) -> None:
        now = self.clock()
        for key in keys or ():
            self._meter(key, now)
        for key_id in [k for k, m in self._meters.items() if now - m.last_used > IDLE_FORGET_S and not m.budgeted]:
            del self._meters[key_id]
            self._periods.pop(key_id, None)
        if not self._meters and not self._pending_counts and not self._pending_spend:
            return
        counts, spend = dict(self._pending_counts), dict(self._pending_spend)
        self._pending_counts.clear()
        self._pending_spend.clear()
        reads = [UsageRead(key_id, meter.minute, meter.period) for key_id, meter in self._meters.items()]
        try:
            totals = await self.store.sync_usage({k: (v[0], v[1]) for k, v in counts.items()}, spend, reads)
        except BaseException:
            for k, v in counts.items():
                pending = self._pending_counts[k]
                pending[0] += v[0]
                pending[1] += v[1]
            for k, amount in spend.items():
                self._pending_spend[k] += amount
            raise
        for read in reads:
            meter = self._meters.get(read.key_id)
            total = totals.get(read.key_id)
            if meter is None or total is None or meter.minute != read.minute or meter.period != read.period:
                continue  # the window moved while we waited: the next sync sets it
            self._apply(read.key_id, meter, total)

    def _apply(self, key_id: str, meter: _Meter, total: UsageTotals) -> None:
        """Totals from the store plus what was counted here while the sync was in flight."""
        since = self._pending_counts.get((key_id, meter.minute), (0, 0))
        meter.previous = [total.previous_requests, total.previous_tokens]
        meter.current = [total.requests + since[0], total.tokens + since[1]]
        meter.spend = total.spend + self._pending_spend.get((key_id, meter.period), 0.0)


def _retry_after(previous: int, current: int, allowed: int, elapsed: float) -> int:
    """Whole seconds until the sliding-window estimate drops to ``allowed`` (at least 1)."""
    if current > allowed or previous == 0:
        return max(1, math.ceil(WINDOW_S - elapsed))
    # previous * (1 - (elapsed + t) / 60) + current <= allowed
    wait = WINDOW_S * (1 - (allowed - current) / previous) - elapsed
    return max(1, math.ceil(wait))


def _period_or_none(period: str, now: float) -> float | None:
    return None if period == "total" else float(period_start(period, now))
