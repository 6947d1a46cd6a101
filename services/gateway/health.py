"""Per-target health: latency EMAs, a rolling error window, cooldowns and a circuit breaker.

Latency has two meanings, kept apart: *TTFT*, the time from sending a stream request to its first
chunk, and *total*, the time to a whole answer (a non-stream response, or a stream's last chunk).
Each has its own EMA and window percentiles; the router's latency requirement reads TTFT for
stream requests and total latency otherwise.

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


class _LatencySeries:
    """One meaning of latency: an EMA over every sample, and samples kept for window percentiles."""

    SAMPLES = 4096

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.ema_ms: float | None = None
        self._samples: deque[tuple[float, float]] = deque(maxlen=self.SAMPLES)

    def add(self, now: float, ms: float) -> None:
        self.ema_ms = ms if self.ema_ms is None else self.alpha * ms + (1 - self.alpha) * self.ema_ms
        self._samples.append((now, ms))

    def percentiles(self, since: float) -> tuple[float | None, float | None]:
        """(p50, p99) of the samples taken at or after ``since``."""
        values = sorted(ms for at, ms in self._samples if at >= since)
        return _percentile(values, 0.50), _percentile(values, 0.99)


@dataclass(frozen=True)
class HealthSnapshot:
    breaker: BreakerState
    cooldown_until: float | None  # monotonic seconds
    cooldown_reason: str | None
    error_rate: float
    window_requests: int
    requests_per_s: float
    ttft_ema_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    total_ema_ms: float | None
    total_p50_ms: float | None
    total_p99_ms: float | None


class TargetHealth:
    """Health of one target, updated after each upstream attempt."""

    RECENT_S = 60
    RATE_WINDOW_S = 10

    def __init__(self, settings: Health, clock=time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.ttft = _LatencySeries(settings.ema_alpha)
        self.total = _LatencySeries(settings.ema_alpha)
        self.breaker = BreakerState.CLOSED
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.cooldown_until = 0.0
        self.cooldown_reason: str | None = None
        self._window = _SecondBuckets(settings.error_window_s)
        self._recent = _SecondBuckets(self.RATE_WINDOW_S)

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

    @property
    def ema_latency_ms(self) -> float | None:
        """Total latency's EMA (the name from before TTFT and total were split)."""
        return self.total.ema_ms

    def latency_ema_ms(self, stream: bool) -> float | None:
        """The EMA the latency rule compares for a request: TTFT for streams, total latency otherwise."""
        return self.ttft.ema_ms if stream else self.total.ema_ms

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

    def on_first_token(self, ttft_s: float) -> None:
        """A stream's first chunk arrived ``ttft_s`` after the request was sent (however it ends)."""
        self.ttft.add(self.clock(), ttft_s * 1000.0)

    def on_success(self, total_s: float) -> None:
        """A whole answer arrived ``total_s`` after the request was sent (non-stream body or last chunk)."""
        now = self.clock()
        self.total.add(now, total_s * 1000.0)
        self._window.add(now, False)
        self._recent.add(now, False)
        if self.breaker is not BreakerState.CLOSED:
            self.breaker = BreakerState.CLOSED
            self.probe_in_flight = False
            self._window.clear()

    def on_failure(self, error: ErrorClass) -> None:
        """A failed attempt. A CLIENT error is the caller's fault: it is not a verdict on the target,
        so it touches neither the error window, the request rate nor the breaker (a probe is released)."""
        if error is ErrorClass.CLIENT:
            self.on_abandoned()
            return
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
        ttft_p50, ttft_p99 = self.ttft.percentiles(cutoff)
        total_p50, total_p99 = self.total.percentiles(cutoff)
        breaker = self.breaker
        if breaker is BreakerState.OPEN and now - self.opened_at >= self.settings.breaker.cooldown_s:
            breaker = BreakerState.HALF_OPEN
        return HealthSnapshot(
            breaker=breaker,
            cooldown_until=self.cooldown_until if now < self.cooldown_until else None,
            cooldown_reason=self.cooldown_reason if now < self.cooldown_until else None,
            error_rate=errors / total if total else 0.0,
            window_requests=total,
            requests_per_s=recent_total / self.RATE_WINDOW_S,
            ttft_ema_ms=self.ttft.ema_ms,
            ttft_p50_ms=ttft_p50,
            ttft_p99_ms=ttft_p99,
            total_ema_ms=self.total.ema_ms,
            total_p50_ms=total_p50,
            total_p99_ms=total_p99,
        )


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[index]
