"""The Benchmarks pane's view model: past runs as rows, two runs side by side with ratios, a sweep's throughput as
a text chart, and the live line of a run in progress. Pure and Textual-free: the pane only draws what this returns.

Runs come from ``services.bench.store.RunStore`` as ``(id, BenchResult)`` pairs. Every string here may have come
from a server or a result file (model names, labels, error texts); the pane draws them through the sanitizer.
Whether a ratio is good news depends on the metric: more throughput is better, more latency is worse, so the
comparison says "better" or "worse" in words, never by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from services.bench.result import BenchResult
from services.bench.runners import Progress
from services.bench.store import compare

Run = tuple[str, BenchResult]  # (run id, result), as the store lists them
SAME_WITHIN = 0.02  # ratios within 2% of 1 read "same"
CHART_BAR = 24  # cells of the longest bar
BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, so short bars still differ
HIGHER_IS_BETTER = ("completed", "request_throughput", "request_goodput", "output_throughput",
                    "total_token_throughput", "max_output_tokens_per_s")
NEUTRAL = ("duration", "total_input_tokens", "total_output_tokens", "max_concurrent_requests")


@dataclass(frozen=True)
class RunRow:
    key: str  # the run id: what marks and the comparison refer to
    mark: str  # "A" / "B" for the two compared runs, "" otherwise
    when: str  # "11-30 07:52" (UTC, from the id)
    label: str
    runner: str
    model: str
    load: str  # "rate 4/s", "conc 8", "rate 4/s · conc 8", "all at once"
    done: str  # "98/100": completed of the prompts
    failed: str
    req_s: str
    tok_s: str
    ttft: str  # median, ms
    itl: str  # median, ms
    note: str  # "cancelled", "sweep (3)", ""
    cancelled: bool


@dataclass(frozen=True)
class CompareLine:
    metric: str
    a: str
    b: str
    ratio: str  # "1.23x", "-" when either is missing
    verdict: str  # "better", "worse", "same", "" (a count or a duration: neither)


@dataclass(frozen=True)
class ChartLine:
    x: str  # "rate 4/s" or "conc 8"
    bar: str
    value: str  # "1,234 tok/s"


def number(value: float | None, unit: str = "") -> str:
    """``1,234``, ``12.3``, ``0.52``; ``-`` when unknown."""
    if value is None or math.isnan(value):
        return f"-{unit}"
    if math.isinf(value):
        return f"inf{unit}"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return f"{text}{unit}"


def millis(value: float | None) -> str:
    """A latency given in ms: ``45ms``, ``2.30s``; ``-`` when unknown."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def rate_text(rate: float) -> str:
    return "inf" if math.isinf(rate) else f"{rate:g}/s"


def load_text(result: BenchResult) -> str:
    spec = result.spec
    parts = [] if math.isinf(spec.request_rate) else [f"rate {rate_text(spec.request_rate)}"]
    if spec.max_concurrency is not None:
        parts.append(f"conc {spec.max_concurrency}")
    return " · ".join(parts) or "all at once"


def when_text(run_id: str) -> str:
    """``11-30 07:52`` from an id ``20261130T075201.123456Z-label`` (UTC, as the store names runs)."""
    stamp = run_id.split("-", 1)[0]
    if len(stamp) < 13 or stamp[8] != "T":
        return stamp[:11]
    return f"{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}"


def sweep_sizes(runs: Sequence[Run]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for _, result in runs:
        if result.sweep_id:
            sizes[result.sweep_id] = sizes.get(result.sweep_id, 0) + 1
    return sizes


def run_row(run_id: str, result: BenchResult, mark: str = "", sweep_size: int = 0) -> RunRow:
    spec, m = result.spec, result.metric
    completed, failed = int(m("completed") or 0), int(m("failed") or 0)
    note = "cancelled" if result.cancelled else f"sweep ({sweep_size})" if sweep_size > 1 else ""
    return RunRow(key=run_id, mark=mark, when=when_text(run_id), label=spec.label or "-", runner=result.runner,
                  model=result.target.model or spec.model or "-", load=load_text(result),
                  done=f"{completed}/{spec.num_prompts}", failed=str(failed), req_s=number(m("request_throughput")),
                  tok_s=number(m("output_throughput")), ttft=millis(m("median_ttft_ms")),
                  itl=millis(m("median_itl_ms")), note=note, cancelled=result.cancelled)


def run_rows(runs: Sequence[Run], marked: Sequence[str] = ()) -> list[RunRow]:
    """Newest first; the first marked run is A, the second B."""
    sizes = sweep_sizes(runs)
    marks = {run_id: "AB"[i] for i, run_id in enumerate(marked[:2])}
    return [run_row(run_id, result, marks.get(run_id, ""), sizes.get(result.sweep_id or "", 0))
            for run_id, result in reversed(runs)]


def toggle_mark(marked: Sequence[str], run_id: str, known: Collection[str]) -> tuple[str, ...]:
    """Marks after the operator toggles ``run_id``: at most two, the oldest mark dropped for a third; runs no longer
    listed are forgotten."""
    kept = [m for m in marked if m in known and m != run_id]
    if run_id not in marked and run_id in known:
        kept.append(run_id)
    return tuple(kept[-2:])


def verdict(metric: str, ratio: float | None) -> str:
    """Whether B's value is good news next to A's: more throughput is, more latency or failures are not."""
    if ratio is None or metric in NEUTRAL:
        return ""
    if abs(ratio - 1) <= SAME_WITHIN:
        return "same"
    return "better" if (ratio > 1) == (metric in HIGHER_IS_BETTER) else "worse"


def metric_value(metric: str, value: float | None) -> str:
    if metric.endswith("_ms"):
        return millis(value)
    if metric in ("completed", "failed", "total_input_tokens", "total_output_tokens", "max_concurrent_requests"):
        return "-" if value is None else f"{value:,.0f}"
    if metric == "duration":
        return "-" if value is None else f"{value:.2f}s"
    return number(value)


def compare_lines(a: BenchResult, b: BenchResult) -> list[CompareLine]:
    """Every metric either run has, A beside B, with B/A and whether B is better (``store.compare``'s rows)."""
    return [CompareLine(row.metric, metric_value(row.metric, row.a), metric_value(row.metric, row.b),
                        "-" if row.ratio is None else f"{row.ratio:.2f}x", verdict(row.metric, row.ratio))
            for row in compare(a, b)]


def sweep_of(runs: Sequence[Run], run_id: str) -> list[Run]:
    """The runs of ``run_id``'s sweep, in the order they ran; [] when it was not part of one."""
    found = next((r for i, r in runs if i == run_id), None)
    if found is None or not found.sweep_id:
        return []
    return [(i, r) for i, r in runs if r.sweep_id == found.sweep_id]


def sweep_axis(sweep: Sequence[Run]) -> str:
    """What the sweep varied: "rate" or "concurrency"."""
    rates = {r.spec.request_rate for _, r in sweep}
    return "rate" if len(rates) > 1 or not any(r.spec.max_concurrency for _, r in sweep) else "concurrency"


def bar(value: float, top: float, width: int = CHART_BAR) -> str:
    if top <= 0 or value <= 0:
        return ""
    eighths = round(8 * width * min(value, top) / top)
    return BLOCKS[-1] * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")


def sweep_chart(sweep: Sequence[Run], metric: str = "output_throughput", width: int = CHART_BAR) -> list[ChartLine]:
    """One bar per run of the sweep, ordered by the varied setting: throughput against rate (or concurrency)."""
    axis = sweep_axis(sweep)

    def setting(run: Run) -> float:
        spec = run[1].spec
        return spec.request_rate if axis == "rate" else float(spec.max_concurrency or math.inf)

    ordered = sorted(sweep, key=setting)
    values = [r.metric(metric) for _, r in ordered]
    top = max((v for v in values if v is not None), default=0.0)
    lines = []
    for run, value in zip(ordered, values, strict=True):
        x = f"rate {rate_text(run[1].spec.request_rate)}" if axis == "rate" else f"conc {run[1].spec.max_concurrency}"
        suffix = " (cancelled)" if run[1].cancelled else ""
        lines.append(ChartLine(x, bar(value or 0.0, top, width), number(value, " tok/s") + suffix))
    return lines


def progress_text(progress: Progress | None, label: str, cancelling: bool = False) -> str:
    """The live line: ``smoke: 120/500 done, 2 failed · 1,234 tok/s · TTFT p50 45ms · ITL p50 12ms · 12s``."""
    if progress is None:
        return f"{label}: starting" + (" · cancelling" if cancelling else "")
    phase = "warming up" if progress.phase == "warmup" else f"{progress.done}/{progress.total} done"
    parts = [f"{label}: {phase}, {progress.failed} failed"]
    if progress.rate is not None and not math.isinf(progress.rate):
        parts.append(f"rate {rate_text(progress.rate)}")
    parts += [number(progress.output_tok_s, " tok/s"), f"TTFT p50 {millis(progress.ttft_median_ms)}",
              f"ITL p50 {millis(progress.itl_median_ms)}", f"{progress.elapsed_s:.0f}s"]
    if cancelling:
        parts.append("cancelling")
    return " · ".join(parts)
