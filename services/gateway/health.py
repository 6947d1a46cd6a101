"""Per-target health: EMA latency, a rolling error window, cooldowns and a circuit breaker.

Everything here runs on the event loop thread, so no locks. Time comes from ``time.monotonic``
(wall-clock times are derived only when a snapshot is reported).
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from dataclasses import dataclass

from services.gateway.config import Health


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class ErrorClass(enum.StrEnum):
    """What went wrong with one upstream attempt; a bounded label value."""

    RATE_LIMIT = "rate_limit"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECT = "connect"
    AUTH = "auth"
    CLIENT = "client"
    MALFORMED = "malformed"


# Failures that say the target is unhealthy. CLIENT errors are the caller's fault; AUTH has its
# own cooldown and does not count against the error rate (the key is wrong, not the service).
UNHEALTHY = frozenset(
    {ErrorClass.RATE_LIMIT, ErrorClass.SERVER, ErrorClass.TIMEOUT, ErrorClass.CONNECT, ErrorClass.MALFORMED}
)


class _SecondBuckets:
    """Counts of attempts and failures per whole second over a rolling window."""

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self._buckets: deque[list[int]] = deque()  # [second, total, errors]

    def add(self, now: float, error: bool) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            bucket = self._buckets[-1]
        else:
            bucket = [second, 0, 0]
            self._buckets.append(bucket)
            self._trim(second)
        bucket[1] += 1
        bucket[2] += error

    def _trim(self, second: int) -> None:
        oldest = second - self.window_s + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def totals(self, now: float, window_s: int | None = None) -> tuple[int, int]:
        """(attempts, errors) over the last ``window_s`` seconds (default: the whole window)."""
        oldest = int(now) - (window_s or self.window_s) + 1
        total = errors = 0
        for second, count, errs in self._buckets:
            if second >= oldest:
                total += count
                errors += errs
        return total, errors

    def clear(self) -> None:
        self._buckets.clear()


@dataclass(frozen=True)
class HealthSnapshot:
    breaker: BreakerState
    cooldown_until: float | None  # monotonic seconds
    cooldown_reason: str | None
    ema_latency_ms: float | None
    error_rate: float
    window_requests: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None


class TargetHealth:
    """Health of one target, updated after each upstream attempt."""

    LATENCY_SAMPLES = 4096
    RECENT_S = 60
    RATE_WINDOW_S = 10

    def __init__(self, settings: Health, clock=time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.ema_latency_ms: float | None = None
        self.breaker = BreakerState.CLOSED
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.cooldown_until = 0.0
        self.cooldown_reason: str | None = None
        self._window = _SecondBuckets(settings.error_window_s)
        self._recent = _SecondBuckets(self.RATE_WINDOW_S)
        self._latencies: deque[tuple[float, float]] = deque(maxlen=self.LATENCY_SAMPLES)

    # ---- decisions -------------------------------------------------------------------------

    def cooling_down(self, now: float | None = None) -> bool:
        return (now if now is not None else self.clock()) < self.cooldown_until

    def available(self, now: float | None = None) -> bool:
        """May a new request be sent here now? A half-open breaker admits one probe at a time."""
        now = self.clock() if now is None else now
        if now < self.cooldown_until:
            return False
        if self.breaker is BreakerState.OPEN:
            return now - self.opened_at >= self.settings.breaker.cooldown_s
        if self.breaker is BreakerState.HALF_OPEN:
            return not self.probe_in_flight
        return True

    def error_rate(self, now: float | None = None) -> float:
        total, errors = self._window.totals(self.clock() if now is None else now)
        return errors / total if total else 0.0

    def badness(self, now: float) -> tuple[float, float]:
        """Ordering key for 'least bad' when nothing is available: soonest usable, then fewest errors."""
        ready_at = max(self.cooldown_until, self.opened_at + self.settings.breaker.cooldown_s
                       if self.breaker is BreakerState.OPEN else 0.0)
        return (max(0.0, ready_at - now), self.error_rate(now))

    # ---- updates ---------------------------------------------------------------------------

    def on_attempt_start(self) -> None:
        """Called when a request is sent; moves an expired open breaker to half-open (the probe)."""
        now = self.clock()
        if self.breaker is BreakerState.OPEN and now - self.opened_at >= self.settings.breaker.cooldown_s:
            self.breaker = BreakerState.HALF_OPEN
        if self.breaker is BreakerState.HALF_OPEN:
            self.probe_in_flight = True

    def on_success(self, latency_s: float) -> None:
        now = self.clock()
        latency_ms = latency_s * 1000.0
        alpha = self.settings.ema_alpha
        self.ema_latency_ms = (
            latency_ms if self.ema_latency_ms is None else alpha * latency_ms + (1 - alpha) * self.ema_latency_ms
        )
        self._latencies.append((now, latency_ms))
        self._window.add(now, False)
        self._recent.add(now, False)
        if self.breaker is not BreakerState.CLOSED:
            self.breaker = BreakerState.CLOSED
            self.probe_in_flight = False
            self._window.clear()

    def on_failure(self, error: ErrorClass) -> None:
        now = self.clock()
        self._recent.add(now, True)
        if error not in UNHEALTHY:
            self.probe_in_flight = False
            return
        self._window.add(now, True)
        if self.breaker is BreakerState.HALF_OPEN:
            self._open(now)
            return
        total, errors = self._window.totals(now)
        breaker = self.settings.breaker
        if total >= breaker.min_requests and errors / total > breaker.error_rate_threshold:
            self._open(now)

    def on_abandoned(self) -> None:
        """The attempt ended without a verdict (the client went away): release a held probe."""
        self.probe_in_flight = False

    def cool_down(self, seconds: float, reason: str) -> None:
        until = self.clock() + seconds
        if until > self.cooldown_until:
            self.cooldown_until = until
            self.cooldown_reason = reason

    def _open(self, now: float) -> None:
        self.breaker = BreakerState.OPEN
        self.opened_at = now
        self.probe_in_flight = False

    # ---- reporting -------------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        now = self.clock()
        total, errors = self._window.totals(now)
        recent_total, _ = self._recent.totals(now, self.RATE_WINDOW_S)
        cutoff = now - self.RECENT_S
        latencies = sorted(ms for at, ms in self._latencies if at >= cutoff)
        breaker = self.breaker
        if breaker is BreakerState.OPEN and now - self.opened_at >= self.settings.breaker.cooldown_s:
            breaker = BreakerState.HALF_OPEN
        return HealthSnapshot(
            breaker=breaker,
            cooldown_until=self.cooldown_until if now < self.cooldown_until else None,
            cooldown_reason=self.cooldown_reason if now < self.cooldown_until else None,
            ema_latency_ms=self.ema_latency_ms,
            error_rate=errors / total if total else 0.0,
            window_requests=total,
            requests_per_s=recent_total / self.RATE_WINDOW_S,
            p50_ms=_percentile(latencies, 0.50),
            p99_ms=_percentile(latencies, 0.99),
        )


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[index]
