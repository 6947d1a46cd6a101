"""``vllm bench serve``'s metrics (serve.py ``calculate_metrics``), pure: records in, its result keys out.

Per successful request: TTFT, E2EL (``latency``), TPOT = (latency - ttft) / (output_tokens - 1) when more than one
token came, and the gaps between its chunks (ITL). ITL statistics pool every gap of every successful request, so
chunks carrying several tokens make ITL larger than TPOT. Statistics are numpy's: population std, percentiles by
linear interpolation, 0 for an empty list. Failed requests count only in ``failed``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.bench.spec import BenchSpec


@dataclass
class RequestRecord:
    """One request's timeline in seconds (``start`` on the run's perf_counter clock)."""

    success: bool = False
    error: str = ""
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    start: float = 0.0
    queue_time: float = 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """numpy.percentile(values, p) with its default linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile_word(p: float) -> str:
    """As vLLM names keys: ``p99``, ``p99.9``."""
    return str(int(p)) if int(p) == p else str(p)


def _stats(name: str, seconds: Sequence[float], percentiles: Iterable[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    out = {
        f"mean_{name}_ms": statistics.fmean(ms) if ms else 0.0,
        f"median_{name}_ms": statistics.median(ms) if ms else 0.0,
        f"std_{name}_ms": statistics.pstdev(ms) if ms else 0.0,
    }
    for p in percentiles:
        out[f"p{percentile_word(p)}_{name}_ms"] = percentile(ms, p)
    return out


def tpot_of(record: RequestRecord) -> float:
    """(latency - ttft) / (output_tokens - 1); 0 with one token or none (what goodput uses for those)."""
    if record.output_tokens > 1:
        return (record.latency - record.ttft) / (record.output_tokens - 1)
    return 0.0


def is_good(record: RequestRecord, slos_ms: dict[str, float]) -> bool:
    """Every given SLO holds (``slo >= measured``), as DistServe's goodput."""
    measured = {"ttft": record.ttft, "tpot": tpot_of(record), "e2el": record.latency}
    return all(slo / 1000.0 >= measured[key] for key, slo in slos_ms.items())


def peaks(records: Sequence[RequestRecord]) -> tuple[float, int]:
    """(max_output_tokens_per_s, max_concurrent_requests) of the successful requests.

    Tokens: each chunk's time rebuilt as start + ttft + cumulative gaps, counted in 1 s buckets from the earliest
    start. Concurrency: a sweep line over [start, start + latency).
    """
    ok = [r for r in records if r.success]
    if not ok:
        return 0.0, 0
    origin = min(r.start for r in ok)
    buckets: dict[int, int] = {}
    events: list[tuple[float, int]] = []
    for r in ok:
        t = r.start + r.ttft
        times = [t]
        for gap in r.itl:
            t += gap
            times.append(t)
        for when in times:
            second = int(when - origin)
            buckets[second] = buckets.get(second, 0) + 1
        events.append((r.start, 1))
        events.append((r.start + r.latency, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant: half-open intervals
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return float(max(buckets.values())), peak


def compute(records: Sequence[RequestRecord], duration_s: float, spec: BenchSpec) -> dict[str, float | int | None]:
    """vLLM's result keys for ``records`` measured over ``duration_s``."""
    ok = [r for r in records if r.success]
    duration = duration_s if duration_s > 0 else math.nan
    total_input = sum(r.prompt_len for r in ok)
    total_output = sum(r.output_tokens for r in ok)
    tpots = [tpot_of(r) for r in ok if r.output_tokens > 1]
    itls = [gap for r in ok for gap in r.itl]
    peak_tokens, peak_concurrency = peaks(records)
    goodput = None
    if spec.goodput:
        goodput = sum(1 for r in ok if is_good(r, spec.goodput)) / duration
    out: dict[str, float | int | None] = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(ok) / duration,
        "request_goodput": goodput,
        "output_throughput": total_output / duration,
        "total_token_throughput": (total_input + total_output) / duration,
        "max_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": peak_concurrency,
        "rtfx": 0.0,
    }
    series = {"ttft": [r.ttft for r in ok], "tpot": tpots, "itl": itls, "e2el": [r.latency for r in ok]}
    for name, values in series.items():
        out.update(_stats(name, values, spec.percentiles))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
