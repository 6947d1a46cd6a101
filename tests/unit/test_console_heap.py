"""The console's garbage-collector policy (console.heap): full passes only while the operator is idle."""

from __future__ import annotations

import gc

from console.heap import AT_MOST_S, EVERY_S, IDLE_S, QuietCollector
from tests.clock import Clock


def test_a_full_pass_waits_for_an_idle_operator_and_never_more_than_at_most_s() -> None:
    clock, passes = Clock(), []
    heap = QuietCollector(clock, collect=lambda: passes.append(clock.now))
    clock.now += EVERY_S + 1
    heap.input_seen()  # a key just now: not while they type
    assert not heap.tick()
    clock.now += IDLE_S
    assert heap.tick() and passes == [clock.now]
    assert not heap.tick()  # not again before EVERY_S
    for _ in range(int(2 * AT_MOST_S)):  # typing without a pause for AT_MOST_S still gets one
        clock.now += 0.5
        heap.input_seen()
        heap.tick()
    assert len(passes) == 2 and passes[1] - passes[0] == AT_MOST_S


def test_start_freezes_and_turns_automatic_full_passes_off_and_stop_restores_both() -> None:
    before = gc.get_threshold()
    heap = QuietCollector()
    heap.start()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 1000 * before[2]
    finally:
        heap.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
