"""`vllm bench serve`'s metric definitions on synthetic timelines with known answers."""

from __future__ import annotations

import itertools
import math

import pytest

from services.bench.loadgen import plan_offsets
from services.bench.metrics import RequestRecord, compute, percentile, tpot_of
from services.bench.spec import BenchSpec


def spec(**kw: object) -> BenchSpec:
    return BenchSpec(base_url="http://127.0.0.1:1", **kw)  # type: ignore[arg-type]


def ok(ttft: float, itl: list[float], tokens: int, start: float = 0.0, prompt: int = 10) -> RequestRecord:
    return RequestRecord(success=True, prompt_len=prompt, output_tokens=tokens, ttft=ttft, itl=itl,
                         latency=ttft + sum(itl), start=start)


def test_docs_example_two_40ms_gaps_give_itl_40_and_tpot_20() -> None:
    # vLLM's docs: 5 tokens in 3 chunks, first at 100 ms, then two 40 ms gaps (two tokens a chunk), end at 180 ms.
    m = compute([ok(0.100, [0.040, 0.040], tokens=5)], 1.0, spec())
    assert m["median_itl_ms"] == pytest.approx(40.0)
    assert m["mean_itl_ms"] == pytest.approx(40.0)
    assert m["median_tpot_ms"] == pytest.approx(20.0)  # (180 - 100) / (5 - 1)
    assert m["median_ttft_ms"] == pytest.approx(100.0)
    assert m["median_e2el_ms"] == pytest.approx(180.0)


def test_itl_pools_every_gap_rather_than_averaging_per_request() -> None:
    records = [ok(0.05, [0.010, 0.010, 0.010], tokens=4), ok(0.05, [0.050], tokens=2)]
    m = compute(records, 1.0, spec())
    assert m["mean_itl_ms"] == pytest.approx(20.0)  # (10+10+10+50)/4, not (10+50)/2
    assert m["median_itl_ms"] == pytest.approx(10.0)
    assert m["mean_tpot_ms"] == pytest.approx(30.0)  # per request: 10 and 50


def test_failed_requests_are_counted_apart_from_every_statistic_and_total() -> None:
    failed = RequestRecord(success=False, error="HTTP 500", prompt_len=999, output_tokens=999, ttft=9.0, latency=9.0)
    m = compute([ok(0.1, [0.02], tokens=2, prompt=7), failed], 2.0, spec())
    assert (m["completed"], m["failed"]) == (1, 1)
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (7, 2)
    assert m["mean_ttft_ms"] == pytest.approx(100.0)
    assert m["request_throughput"] == pytest.approx(0.5)
    assert m["output_throughput"] == pytest.approx(1.0)
    assert m["total_token_throughput"] == pytest.approx(4.5)


def test_tpot_skips_single_token_requests_and_goodput_counts_them_with_tpot_zero() -> None:
    one = ok(0.2, [], tokens=1)
    assert tpot_of(one) == 0.0
    fast = ok(0.05, [0.01, 0.01], tokens=3)     # tpot 10 ms, e2el 70 ms
    slow = ok(0.05, [0.09, 0.09], tokens=3)     # tpot 90 ms
    m = compute([one, fast, slow], 2.0, spec(goodput={"tpot": 50}))
    assert m["request_goodput"] == pytest.approx(1.0)  # one (tpot 0) and fast: 2 good / 2 s
    assert m["mean_tpot_ms"] == pytest.approx(50.0)     # only fast and slow have a TPOT
    m = compute([one, fast, slow], 2.0, spec(goodput={"tpot": 50, "ttft": 100}))
    assert m["request_goodput"] == pytest.approx(0.5)  # one's TTFT of 200 ms misses
    assert compute([fast], 1.0, spec())["request_goodput"] is None


def test_statistics_follow_numpy_population_std_and_linear_percentiles() -> None:
    records = [ok(t / 1000, [], tokens=1) for t in (1, 2, 3, 4)]
    m = compute(records, 1.0, spec(percentiles=[50, 99, 99.9]))
    assert m["mean_ttft_ms"] == pytest.approx(2.5)
    assert m["std_ttft_ms"] == pytest.approx(math.sqrt(1.25))
    assert m["p50_ttft_ms"] == pytest.approx(2.5)
    assert m["p99_ttft_ms"] == pytest.approx(3.97)
    assert m["p99.9_ttft_ms"] == pytest.approx(3.997)
    assert percentile([], 99) == 0.0
    empty = compute([], 1.0, spec())
    assert empty["completed"] == 0 and empty["mean_itl_ms"] == 0.0 and empty["max_concurrent_requests"] == 0


def test_peak_tokens_per_second_and_peak_concurrency() -> None:
    a = ok(0.05, [0.1] * 9, tokens=10, start=0.0)      # chunks at 0.05 .. 0.95: all 10 in second 0
    b = ok(0.2, [0.1] * 4, tokens=5, start=0.9)         # [0.9, 1.5): chunks at 1.1 .. 1.5, second 1
    c = ok(0.1, [], tokens=1, start=a.latency)           # starts exactly when a ends: half-open, not concurrent
    m = compute([a, b, c], 2.0, spec())
    assert m["max_output_tokens_per_s"] == 10.0
    assert m["max_concurrent_requests"] == 2


def test_vllm_key_names_are_all_present() -> None:
    m = compute([ok(0.1, [0.01], tokens=2)], 1.0, spec())
    for key in ("duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
                "request_goodput", "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
                "max_concurrent_requests"):
        assert key in m
    for name in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p50", "p90", "p99"):
            assert f"{stat}_{name}_ms" in m


def test_request_plan_is_rescaled_to_last_num_prompts_over_rate() -> None:
    offsets = plan_offsets(200, rate=50.0, burstiness=1.0, seed=3)
    assert offsets[-1] == pytest.approx(4.0)
    assert all(b >= a for a, b in itertools.pairwise(offsets))
    assert offsets == plan_offsets(200, rate=50.0, burstiness=1.0, seed=3)
    assert offsets != plan_offsets(200, rate=50.0, burstiness=1.0, seed=4)
    assert plan_offsets(3, rate=math.inf, burstiness=1.0, seed=0) == [0.0, 0.0, 0.0]
    even = plan_offsets(4, rate=2.0, burstiness=math.inf, seed=0)
    assert even == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_lower_burstiness_gives_burstier_gaps() -> None:
    def spread(burstiness: float) -> float:
        offsets = plan_offsets(2000, rate=100.0, burstiness=burstiness, seed=1)
        gaps = [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
        mean = sum(gaps) / len(gaps)
        return math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean  # coefficient of variation

    # gamma(k): cv = 1/sqrt(k): 2 for k=0.25, 1 for Poisson, 0.5 for k=4
    assert spread(0.25) == pytest.approx(2.0, rel=0.15)
    assert spread(1.0) == pytest.approx(1.0, rel=0.1)
    assert spread(4.0) == pytest.approx(0.5, rel=0.1)
