"""Canary releases, the pure part: the state machine on injected times, Argo's preconditions, the gates, the
per-arm windows merged across replicas, and sticky arm assignment."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import pytest

from services.admin_api import CanaryStep, GateResult, JudgeSettings, PauseStep, ReleaseSpec, Thresholds
from services.gateway.canary import (
    LATENCY_BOUNDS_MS,
    ActionRefused,
    ArmWindow,
    Release,
    act,
    advance,
    assign_arm,
    evaluate,
    start,
)

T0 = 1_000_000.0


def weight(w: int) -> CanaryStep:
    return CanaryStep(setWeight=w)


def pause(seconds: float | None = None) -> CanaryStep:
    return CanaryStep(pause=PauseStep(duration_s=seconds))


ANALYSIS = CanaryStep.model_validate({"analysis": {}})


def spec(steps: list[CanaryStep], judge: bool = False, **thresholds: object) -> ReleaseSpec:
    return ReleaseSpec(name="rel", pool="p", stable="old", canary="new", steps=steps,
                       thresholds=Thresholds(**thresholds),  # type: ignore[arg-type]
                       judge=JudgeSettings(target="judge") if judge else None)


def gate(name: str, verdict: str, value: float | None = 0.0, threshold: float = 0.01,
         samples: tuple[int, int] = (50, 50)) -> GateResult:
    return GateResult(gate=name, verdict=verdict, value=value, threshold=threshold,  # type: ignore[arg-type]
                      samples={"stable": samples[0], "canary": samples[1]}, detail=f"{name} detail")


PASSING = [gate("error_rate", "pass"), gate("p99_latency", "pass", 1.0, 3.0), gate("cost", "pass", 1.0, 2.0)]


def moved(release: Release, now: float, gates: list[GateResult] | None = None) -> Release:
    after = advance(release, now, gates)
    assert after is not None, f"expected the release to move at {now - T0:+.0f}s (step {release.status.step_index})"
    return after


def window(fast: int = 0, slow: int = 0, errors: int = 0, slow_s: float = 0.7, fast_s: float = 0.003) -> ArmWindow:
    arm = ArmWindow()
    for _ in range(fast):
        arm.success(fast_s)
    for _ in range(slow):
        arm.success(slow_s)
    for _ in range(errors):
        arm.failure()
    return arm


def costed(arm: ArmWindow, n: int, each: float) -> ArmWindow:
    arm.cost += n * each
    arm.costed += n
    return arm


def judged(arm: ArmWindow, n: int, score: float) -> ArmWindow:
    arm.quality_sum += n * score
    arm.judged += n
    return arm


def by_gate(gates: list[GateResult]) -> dict[str, GateResult]:
    return {g.gate: g for g in gates}


# ---- the state machine -------------------------------------------------------------------------------------


def test_advance_walks_set_weight_pause_and_analysis_to_healthy() -> None:
    release = start(spec([weight(10), pause(60), ANALYSIS, weight(50), ANALYSIS, weight(100)]), T0, "alice")
    assert (release.status.phase, release.status.step_index, release.status.weight) == ("Progressing", 0, 0)
    first_window = release.step_key

    release = moved(release, T0 + 1)
    assert (release.status.step_index, release.status.weight, release.desired_weight) == (1, 10, 10)
    assert release.step_key != first_window, "a setWeight starts a new analysis window"
    window_at_10 = release.step_key

    assert advance(release, T0 + 60, None) is None, "the pause of 60 s started at +1 s"
    release = moved(release, T0 + 61)
    assert (release.status.phase, release.status.step_index, release.step_key) == ("Progressing", 2, window_at_10)

    assert advance(release, T0 + 62, None) is None, "an analysis step waits for an evaluation"
    release = moved(release, T0 + 62, PASSING)
    assert (release.status.step_index, release.status.message) == (3, "analysis passed")
    release = moved(release, T0 + 63)
    assert (release.status.step_index, release.status.weight) == (4, 50)
    release = moved(release, T0 + 64, PASSING)
    release = moved(release, T0 + 65)
    assert (release.status.step_index, release.status.weight) == (6, 100)
    release = moved(release, T0 + 66)
    assert (release.status.phase, release.status.weight, release.finished) == ("Healthy", 100, True)
    assert advance(release, T0 + 67, PASSING) is None, "a finished release stays where it is"

    history = list(reversed(release.status.history))
    assert [(t.phase, t.step_index) for t in history] == [
        ("Progressing", 0), ("Progressing", 1), ("Progressing", 2), ("Progressing", 3), ("Progressing", 4),
        ("Progressing", 5), ("Progressing", 6), ("Healthy", 6)]
    assert history[0].actor == "alice" and {t.actor for t in history[1:]} == {"controller"}
    assert [t.time - T0 for t in history] == [0, 1, 61, 62, 63, 64, 65, 66]


def test_finishing_the_steps_promotes_fully_even_when_the_last_step_is_not_100() -> None:
    """Healthy is Argo's fully promoted: the canary takes all the traffic, the old target is kept at 0."""
    release = moved(moved(start(spec([weight(50), pause()]), T0, "ops"), T0), T0 + 1)
    promoted = act(release, "promote", T0 + 2, "ops", "go")
    done = moved(promoted, T0 + 3)
    assert (done.status.phase, done.status.weight) == ("Healthy", 100)


def test_a_failed_gate_rolls_back_from_progressing_naming_the_gate_and_its_numbers() -> None:
    release = moved(start(spec([weight(20), pause(3600), weight(100)]), T0, "ops"), T0)
    failing = [gate("error_rate", "fail", 0.05, 0.01), gate("p99_latency", "pass", 1.0, 3.0)]
    rolled = moved(release, T0 + 5, failing)
    status = rolled.status
    assert (status.phase, status.weight, status.aborted, status.step_index) == ("Degraded", 0, True, 1)
    assert status.message == "rolled back: gate error_rate failed: 0.05 > 0.01 (error_rate detail)"
    assert status.history[0].actor == "controller" and status.history[0].reason == status.message
    assert advance(rolled, T0 + 6, PASSING) is None


def test_a_failed_gate_rolls_back_a_paused_release_too() -> None:
    release = moved(moved(start(spec([weight(20), pause(), weight(100)]), T0, "ops"), T0), T0 + 1)
    assert release.status.phase == "Paused"
    assert advance(release, T0 + 2, PASSING) is None, "passing gates do not end a pause without a duration"
    rolled = moved(release, T0 + 3, [*PASSING[:2], gate("cost", "fail", 4.0, 2.0)])
    assert (rolled.status.phase, rolled.status.weight, rolled.status.aborted) == ("Degraded", 0, True)
    assert "gate cost failed: 4 > 2" in rolled.status.message


def test_an_inconclusive_analysis_pauses_with_the_reason_and_does_not_advance_on_its_own() -> None:
    steps = [weight(20), ANALYSIS, weight(100)]
    release = moved(start(spec(steps, min_requests=50), T0, "ops"), T0)
    short = [gate("error_rate", "pass"), gate("p99_latency", "inconclusive", None, 3.0, samples=(30, 7))]
    paused = moved(release, T0 + 1, short)
    assert (paused.status.phase, paused.status.step_index, paused.status.weight) == ("Paused", 1, 20)
    assert paused.status.message == ("analysis inconclusive, too few samples: p99_latency (stable 30, canary 7; "
                                     "needs 50)")
    assert advance(paused, T0 + 2, short) is None
    assert advance(paused, T0 + 3, PASSING) is None, "a paused analysis waits for an operator, never advances by itself"
    resumed = act(paused, "resume", T0 + 4, "bob", "more traffic now")
    assert moved(resumed, T0 + 5, PASSING).status.step_index == 2


def test_an_analysis_with_a_fail_and_an_inconclusive_gate_rolls_back() -> None:
    release = moved(start(spec([weight(20), ANALYSIS, weight(100)]), T0, "ops"), T0)
    gates = [gate("error_rate", "fail", 0.2, 0.01), gate("p99_latency", "inconclusive", None, 3.0)]
    assert moved(release, T0 + 1, gates).status.phase == "Degraded"


# ---- operator actions ------------------------------------------------------------------------------------


def in_phase(phase: str) -> Release:
    """A release of [setWeight 20, pause, setWeight 50, setWeight 100] in each of Argo's phases."""
    release = moved(start(spec([weight(20), pause(), weight(50), weight(100)]), T0, "ops"), T0)
    if phase == "Progressing":
        return release
    release = moved(release, T0 + 1)
    if phase == "Paused":
        return release
    if phase == "Degraded":
        return act(release, "abort", T0 + 2, "ops", "bad")
    return act(release, "promote-full", T0 + 2, "ops", "good")


ALLOWED = {
    "promote": {"Progressing", "Paused"},
    "promote-full": {"Progressing", "Paused", "Degraded"},
    "pause": {"Progressing"},
    "resume": {"Paused"},
    "abort": {"Progressing", "Paused"},
    "retry": {"Degraded"},
}


@pytest.mark.parametrize("phase", ["Progressing", "Paused", "Degraded", "Healthy"])
@pytest.mark.parametrize("action", sorted(ALLOWED))
def test_actions_follow_argos_preconditions(action: str, phase: str) -> None:
    release = in_phase(phase)
    assert release.status.phase == phase
    if phase in ALLOWED[action]:
        after = act(release, action, T0 + 10, "carol@host", "on-call call")
        assert after.status.history[0].actor == "carol@host"
        assert after.status.history[0].reason == f"{action} by carol@host: on-call call"
    else:
        with pytest.raises(ActionRefused) as refused:
            act(release, action, T0 + 10, "carol@host", "on-call call")
        assert phase in str(refused.value) or "already" in str(refused.value)


def test_promote_is_refused_for_an_aborted_release_whatever_its_phase_says() -> None:
    release = in_phase("Paused")
    aborted = replace(release, status=replace(release.status, aborted=True))
    with pytest.raises(ActionRefused, match="not aborted"):
        act(aborted, "promote", T0 + 5, "ops", "go")


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ActionRefused, match="unknown action"):
        act(in_phase("Paused"), "yolo", T0, "ops", "go")


def test_action_results() -> None:
    paused = in_phase("Paused")
    promoted = act(paused, "promote", T0 + 5, "ops", "go")
    assert (promoted.status.phase, promoted.status.step_index, promoted.status.paused_at) == ("Progressing", 2, None)
    assert moved(promoted, T0 + 6).status.weight == 50

    full = act(paused, "promote-full", T0 + 5, "ops", "go")
    assert (full.status.phase, full.status.weight, full.status.step_index) == ("Healthy", 100, 4)

    aborted = act(paused, "abort", T0 + 5, "ops", "stop")
    assert (aborted.status.phase, aborted.status.weight, aborted.status.aborted) == ("Degraded", 0, True)

    retried = act(aborted, "retry", T0 + 9, "ops", "fixed")
    status = retried.status
    assert (status.phase, status.step_index, status.weight, status.aborted) == ("Progressing", 0, 0, False)
    assert (status.step_started_at, status.window_started_at) == (T0 + 9, T0 + 9)
    assert retried.step_key != aborted.step_key, "a retry counts its analysis afresh"


def test_resume_moves_the_step_start_on_by_the_time_spent_paused() -> None:
    release = moved(start(spec([weight(20), pause(100), weight(100)]), T0, "ops"), T0)
    assert release.status.step_started_at == T0
    held = act(release, "pause", T0 + 30, "ops", "look closer")
    assert (held.status.phase, held.status.paused_at) == ("Paused", T0 + 30)
    assert advance(held, T0 + 200, None) is None, "an operator's pause holds a timed pause too"
    resumed = act(held, "resume", T0 + 90, "ops", "fine")
    assert resumed.status.step_started_at == T0 + 60
    assert resumed.status.phase == "Progressing" and resumed.status.paused_at is None
    assert advance(resumed, T0 + 159, None) is None, "70 s of the pause were left when it was held"
    assert moved(resumed, T0 + 160).status.step_index == 2


def test_a_release_survives_its_stored_form() -> None:
    release = moved(start(spec([weight(20), pause(5), ANALYSIS, weight(100)], judge=True), T0, "ops"), T0 + 1)
    assert Release.from_dict(release.to_dict()) == release


# ---- the gates -------------------------------------------------------------------------------------------


def test_error_rate_gate_pass_fail_and_inconclusive_below_the_minimum() -> None:
    rules = spec([weight(50)], min_requests=20, max_error_rate=0.05)
    stable = window(fast=20)
    passing = by_gate(evaluate(rules, stable, window(fast=19, errors=1)))["error_rate"]
    assert (passing.verdict, passing.value, passing.samples) == ("pass", 0.05, {"stable": 20, "canary": 20})
    failing = by_gate(evaluate(rules, stable, window(fast=18, errors=2)))["error_rate"]
    assert (failing.verdict, failing.value, failing.detail) == ("fail", 0.1, "canary 2/20 failed")
    short = by_gate(evaluate(rules, stable, window(fast=10, errors=9)))["error_rate"]
    assert short.verdict == "inconclusive", "19 requests of 20 needed: not enough to judge, even at 47% errors"
    none = by_gate(evaluate(rules, stable, ArmWindow()))["error_rate"]
    assert (none.verdict, none.value, none.detail) == ("inconclusive", None, "no canary requests yet")


def test_p99_gate_compares_the_arms_and_needs_successes_on_both() -> None:
    rules = spec([weight(50)], min_requests=20)
    stable = window(fast=100, fast_s=0.040)  # bucket 50 ms
    same = by_gate(evaluate(rules, stable, window(fast=100, fast_s=0.045)))["p99_latency"]
    assert (same.verdict, same.value) == ("pass", 1.0)
    slow = by_gate(evaluate(rules, stable, window(fast=97, slow=3, fast_s=0.045, slow_s=0.180)))["p99_latency"]
    assert (slow.verdict, slow.value, slow.threshold) == ("fail", 5.0, 3.0)
    assert slow.detail == "p99 canary 250ms vs stable 50ms"
    few_stable = by_gate(evaluate(rules, window(fast=19, errors=50), window(fast=100, slow=10)))["p99_latency"]
    assert few_stable.verdict == "inconclusive", "19 stable successes of 20 needed"
    failing_canary = by_gate(evaluate(rules, stable, window(fast=19, slow=0, errors=40)))["p99_latency"]
    assert failing_canary.verdict == "inconclusive", "errors have no latency: 19 canary successes of 20 needed"


def test_cost_gate_compares_cost_per_request() -> None:
    rules = spec([weight(50)], min_requests=20)
    stable = costed(window(fast=30), 30, 0.001)
    cheap = by_gate(evaluate(rules, stable, costed(window(fast=30), 30, 0.0015)))["cost"]
    assert (cheap.verdict, cheap.value) == ("pass", pytest.approx(1.5))
    dear = by_gate(evaluate(rules, stable, costed(window(fast=30), 30, 0.0025)))["cost"]
    assert (dear.verdict, dear.value) == ("fail", pytest.approx(2.5))
    assert dear.detail == "per request canary $0.002500 vs stable $0.001000"
    few = by_gate(evaluate(rules, stable, costed(window(fast=30), 19, 0.01)))["cost"]
    assert (few.verdict, few.samples) == ("inconclusive", {"stable": 30, "canary": 19})
    free = costed(window(fast=30), 30, 0.0)
    assert by_gate(evaluate(rules, free, costed(window(fast=30), 30, 0.0)))["cost"].verdict == "pass"
    paid = by_gate(evaluate(rules, free, costed(window(fast=30), 30, 0.001)))["cost"]
    assert (paid.verdict, paid.value) == ("fail", math.inf), "a free stable arm replaced by a paid one costs more"


def test_quality_gates_compare_judge_scores_and_the_floor() -> None:
    rules = spec([weight(50)], judge=True, min_judged=10, min_quality=0.5)
    stable = judged(window(fast=30), 20, 0.8)
    ok = by_gate(evaluate(rules, stable, judged(window(fast=30), 20, 0.75)))
    assert (ok["quality"].verdict, ok["quality"].value) == ("pass", pytest.approx(0.0625))
    assert (ok["quality_floor"].verdict, ok["quality_floor"].value) == ("pass", pytest.approx(0.75))
    drop = by_gate(evaluate(rules, stable, judged(window(fast=30), 20, 0.6)))
    assert (drop["quality"].verdict, drop["quality"].value) == ("fail", pytest.approx(0.25))
    assert drop["quality_floor"].verdict == "pass"
    low = by_gate(evaluate(rules, judged(window(fast=30), 20, 0.45), judged(window(fast=30), 20, 0.45)))
    assert (low["quality"].verdict, low["quality_floor"].verdict) == ("pass", "fail")
    few = judged(window(fast=30), 9, 0.0)
    few.judge_errors = 40  # unparseable or unavailable judge replies are no scores
    short = by_gate(evaluate(rules, stable, few))
    assert (short["quality"].verdict, short["quality_floor"].verdict) == ("inconclusive", "inconclusive")
    assert short["quality"].samples == {"stable": 20, "canary": 9}
    assert "40 judge errors" in short["quality"].detail


def test_without_a_judge_there_is_no_quality_gate() -> None:
    gates = evaluate(spec([weight(50)]), window(fast=200), window(fast=200))
    assert [g.gate for g in gates] == ["error_rate", "p99_latency", "cost"]


# ---- windows merged across replicas ----------------------------------------------------------------------


def test_p99_comes_from_the_merged_buckets_of_every_replica() -> None:
    one, two = window(fast=100), window(fast=98, slow=2)
    assert one.p99_ms() == 5 and two.p99_ms() == 800
    published = ArmWindow.from_dict(two.to_dict())  # what a replica publishes to the store
    merged = ArmWindow()
    merged.add(one)
    merged.add(published)
    assert merged.requests == 200
    assert merged.p99_ms() == 5, "2 slow of 200 is within the 1%: the other replica's p99 is not the merged one"
    merged.add(window(slow=1))
    assert merged.p99_ms() == 800


def test_merged_windows_add_every_count() -> None:
    one = judged(costed(window(fast=10, errors=2), 10, 0.01), 4, 0.5)
    one.judge_errors, one.judge_dropped = 3, 1
    merged = ArmWindow()
    merged.add(one)
    merged.add(ArmWindow.from_dict(one.to_dict()))
    stats = merged.stats()
    assert (stats.requests, stats.errors, stats.error_rate) == (24, 4, pytest.approx(4 / 24))
    assert (stats.cost_per_request, stats.quality) == (pytest.approx(0.01), pytest.approx(0.5))
    assert (stats.judged, stats.judge_errors, stats.judge_dropped) == (8, 6, 2)


def test_a_window_published_with_other_buckets_counts_no_latency() -> None:
    data = {**window(fast=5).to_dict(), "latency": [5, 0, 0]}
    assert ArmWindow.from_dict(data).latency == [0] * len(LATENCY_BOUNDS_MS)


def test_latency_beyond_the_last_bound_reports_the_largest_finite_bound() -> None:
    assert window(slow=1, slow_s=1000.0).p99_ms() == LATENCY_BOUNDS_MS[-2]


# ---- sticky assignment -------------------------------------------------------------------------------------

KEYS = [f"session-{i}" for i in range(4000)]


def test_a_sticky_key_always_lands_on_the_same_arm() -> None:
    first = [assign_arm("rel", key, 30, 0.0) for key in KEYS]
    again = [assign_arm("rel", key, 30, draw) for key, draw in zip(KEYS, [0.99, 0.0, 0.5] * 2000, strict=False)]
    assert first == again, "the draw does not matter when there is a sticky key"
    share = first.count("canary") / len(KEYS)
    assert 0.27 < share < 0.33


def test_raising_the_weight_only_moves_stable_keys_to_canary() -> None:
    arms = {w: [assign_arm("rel", key, w, 0.5) for key in KEYS] for w in (0, 1, 10, 20, 50, 100)}
    assert set(arms[0]) == {"stable"} and set(arms[100]) == {"canary"}
    weights = sorted(arms)
    for low, high in pairwise(weights):
        back = [k for k, a, b in zip(KEYS, arms[low], arms[high], strict=True) if a == "canary" and b == "stable"]
        assert back == [], f"keys moved back to stable from {low}% to {high}%"
        moved_over = sum(a == "stable" and b == "canary" for a, b in zip(arms[low], arms[high], strict=True))
        assert abs(moved_over / len(KEYS) - (high - low) / 100) < 0.03


def test_without_a_sticky_key_the_draw_decides() -> None:
    assert assign_arm("rel", None, 20, 0.19) == "canary"
    assert assign_arm("rel", None, 20, 0.20) == "stable"
    assert assign_arm("rel", None, 0, 0.0) == "stable"
