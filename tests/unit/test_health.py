"""Breaker transitions, the rolling error window and cooldowns, on a fake clock."""

from services.gateway.config import Breaker, Health
from services.gateway.health import BreakerState, ErrorClass, TargetHealth
from tests.clock import Clock


def make(clock: Clock) -> TargetHealth:
    return TargetHealth(Health(error_window_s=10, breaker=Breaker(error_rate_threshold=0.5, min_requests=4,
                                                                     cooldown_s=5)), clock=clock)


def test_breaker_waits_for_the_minimum_sample_then_opens() -> None:
    clock = Clock(500.0)
    health = make(clock)
    for _ in range(3):
        health.on_attempt_start()
        health.on_failure(ErrorClass.SERVER)
    assert health.breaker is BreakerState.CLOSED
    health.on_failure(ErrorClass.TIMEOUT)
    assert health.breaker is BreakerState.OPEN and not health.available()


def test_open_then_one_half_open_probe_then_closed_on_success() -> None:
    clock = Clock(500.0)
    health = make(clock)
    for _ in range(4):
        health.on_failure(ErrorClass.SERVER)
    clock.now += 4.9
    assert not health.available()
    clock.now += 0.2
    assert health.available()
    health.on_attempt_start()
    assert health.breaker is BreakerState.HALF_OPEN
    assert not health.available(), "only one probe while half-open"
    health.on_success(0.05)
    assert health.breaker is BreakerState.CLOSED and health.available()
    assert health.error_rate() == 0.0


def test_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock(500.0)
    health = make(clock)
    for _ in range(4):
        health.on_failure(ErrorClass.CONNECT)
    clock.now += 5
    health.on_attempt_start()
    health.on_failure(ErrorClass.SERVER)
    assert health.breaker is BreakerState.OPEN
    clock.now += 4
    assert not health.available()


def test_client_errors_do_not_count_against_health() -> None:
    clock = Clock(500.0)
    health = make(clock)
    for _ in range(10):
        health.on_failure(ErrorClass.CLIENT)
    assert health.breaker is BreakerState.CLOSED and health.error_rate() == 0.0


def test_error_window_rolls_off_old_failures() -> None:
    clock = Clock(500.0)
    health = make(clock)
    health.on_failure(ErrorClass.SERVER)
    health.on_success(0.01)
    assert health.error_rate() == 0.5
    clock.now += 11
    health.on_success(0.01)
    assert health.error_rate() == 0.0


def test_cooldown_blocks_until_it_expires_and_never_shortens() -> None:
    clock = Clock(500.0)
    health = make(clock)
    health.cool_down(3, "rate_limit")
    health.cool_down(1, "rate_limit")
    clock.now += 2
    assert not health.available()
    clock.now += 1.01
    assert health.available()


def test_snapshot_reports_percentiles_and_rate() -> None:
    clock = Clock(500.0)
    health = make(clock)
    for ms in range(1, 101):
        health.on_success(ms / 1000)
    snap = health.snapshot()
    assert snap.total_p50_ms == 50 and snap.total_p99_ms == 99
    assert snap.requests_per_s == 10.0


def test_ttft_and_total_latency_are_kept_apart() -> None:
    clock = Clock(500.0)
    health = make(clock)
    for ms in range(1, 101):
        health.on_first_token(ms / 10000)  # 0.1 .. 10 ms to the first chunk
        health.on_success(ms / 1000)  # 1 .. 100 ms to the whole answer
    snap = health.snapshot()
    assert (snap.ttft_p50_ms, snap.ttft_p99_ms) == (5.0, 9.9)
    assert (snap.total_p50_ms, snap.total_p99_ms) == (50.0, 99.0)
    assert snap.ttft_ema_ms is not None and snap.total_ema_ms is not None
    assert snap.ttft_ema_ms < 10 < snap.total_ema_ms
    assert health.latency_ema_ms(stream=True) == snap.ttft_ema_ms
    assert health.latency_ema_ms(stream=False) == snap.total_ema_ms == health.ema_latency_ms


def test_a_stream_that_fails_after_its_first_token_is_a_failure_with_a_ttft() -> None:
    clock = Clock(500.0)
    health = make(clock)
    health.on_first_token(0.02)
    health.on_failure(ErrorClass.CONNECT)
    snap = health.snapshot()
    assert snap.ttft_ema_ms == 20 and snap.total_ema_ms is None
    assert snap.error_rate == 1.0 and snap.window_requests == 1


def test_client_errors_leave_no_trace_on_health() -> None:
    clock = Clock(500.0)
    health = make(clock)
    for _ in range(10):
        health.on_attempt_start()
        health.on_failure(ErrorClass.CLIENT)
    snap = health.snapshot()
    assert (snap.breaker, snap.error_rate, snap.window_requests, snap.requests_per_s) == (BreakerState.CLOSED, 0, 0, 0)
    assert snap.cooldown_until is None
    for _ in range(4):
        health.on_failure(ErrorClass.SERVER)
    clock.now += 5
    health.on_attempt_start()
    health.on_failure(ErrorClass.CLIENT)
    assert health.breaker is BreakerState.HALF_OPEN and health.available(), "a client error is no verdict"
