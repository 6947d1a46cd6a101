"""Plain-text views of results for the CLI: vLLM's result block, the list of runs, a comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.bench.metrics import percentile_word
from services.bench.result import BenchResult
from services.bench.store import CompareRow, RunSummary

_SECTIONS = (("ttft", "Time to First Token", "TTFT"), ("tpot", "Time per Output Token (excl. 1st token)", "TPOT"),
             ("itl", "Inter-token Latency", "ITL"), ("e2el", "End-to-end Latency", "E2EL"))


def printable(text: object) -> str:
    """A server's string made safe for a terminal: control characters (escape sequences) become spaces."""
    return "".join(c if c.isprintable() else " " for c in str(text))


def _num(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return printable(value)


def format_result(result: BenchResult) -> str:
    """The block ``vllm bench serve`` prints, then what was measured and how."""
    m = result.metrics
    lines = ["{s:{c}^50}".format(s=" Serving Benchmark Result ", c="=")]

    def row(label: str, key: str, digits: int = 2) -> None:
        if key in m:
            lines.append(f"{label:<40} {_num(m[key], digits):<10}")

    row("Successful requests:", "completed")
    row("Failed requests:", "failed")
    row("Benchmark duration (s):", "duration")
    row("Total input tokens:", "total_input_tokens")
    row("Total generated tokens:", "total_output_tokens")
    row("Request throughput (req/s):", "request_throughput")
    if m.get("request_goodput") is not None:
        row("Request goodput (req/s):", "request_goodput")
    row("Output token throughput (tok/s):", "output_throughput")
    row("Peak output token throughput (tok/s):", "max_output_tokens_per_s")
    row("Peak concurrent requests:", "max_concurrent_requests")
    row("Total token throughput (tok/s):", "total_token_throughput")
    for name, title, short in _SECTIONS:
        if f"mean_{name}_ms" not in m:
            continue
        lines.append("{s:{c}^50}".format(s=title, c="-"))
        row(f"Mean {short} (ms):", f"mean_{name}_ms")
        row(f"Median {short} (ms):", f"median_{name}_ms")
        for p in result.spec.percentiles:
            row(f"P{percentile_word(p)} {short} (ms):", f"p{percentile_word(p)}_{name}_ms")
    lines.append("=" * 50)
    target = result.target
    engine = " ".join(printable(x) for x in (target.engine, target.engine_version) if x) or "not reported"
    spec = result.spec
    mode = f"concurrency {spec.max_concurrency}" if spec.max_concurrency else "unbounded concurrency"
    lines += [
        f"runner {result.runner}; {spec.endpoint} at {printable(spec.base_url)}; model {printable(target.model or '-')}"
        f"; engine {engine}",
        f"{spec.num_prompts} prompts ({spec.dataset.kind}), rate {_num(spec.request_rate)} req/s, burstiness "
        f"{_num(spec.burstiness)}, {mode}, {result.warmups_done} warm-ups; tokens: {printable(result.tokenizer)}",
    ]
    if target.engine_flags:
        lines.append("engine: " + ", ".join(f"{printable(k)}={printable(v)}" for k, v in target.engine_flags.items()))
    if result.errors:
        lines.append("errors: " + "; ".join(f"{n} x {printable(e)}" for e, n in result.errors.items()))
    if result.cancelled:
        lines.append("CANCELLED: the figures cover the requests that finished before the cancel")
    return "\n".join(lines)


def format_list(runs: Sequence[RunSummary]) -> str:
    if not runs:
        return "no runs yet (switchboard bench run ...)"
    head = ("id", "runner", "model", "endpoint", "rate", "conc", "ok/failed", "req/s", "out tok/s", "TTFT p50",
            "ITL p50")
    rows = [head]
    for r in runs:
        flag = " (cancelled)" if r.cancelled else ""
        rows.append((r.id + flag, r.runner, printable(r.model)[:32], r.endpoint, _num(r.request_rate),
                     _num(r.max_concurrency), f"{r.completed}/{r.failed}", _num(r.request_throughput),
                     _num(r.output_throughput), _num(r.median_ttft_ms), _num(r.median_itl_ms)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _cell(value: float | None) -> str:
    return str(int(value)) if value is not None and value.is_integer() and abs(value) < 1e15 else _num(value)


def format_compare(a_id: str, b_id: str, rows: Sequence[CompareRow]) -> str:
    table = [("metric", "A", "B", "B/A")]
    table += [(r.metric, _cell(r.a), _cell(r.b), "-" if r.ratio is None else f"{r.ratio:.3f}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [f"A = {a_id}", f"B = {b_id}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines)
