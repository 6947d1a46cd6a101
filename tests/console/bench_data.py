"""Fixed benchmark runs for the Benchmarks pane's tests and SVG snapshots, and the pane alone in an app.

Runs are ``BenchResult`` objects with known metrics (as ``vllm bench serve`` names them), under fixed ids, so what
the pane draws is the same every run: two single runs at different concurrency, a three-rate sweep, a cancelled
run, and one whose model name and error text carry terminal escapes.
"""

from __future__ import annotations

import math
from typing import Any

from textual.app import App, ComposeResult

from console.actions.bench import BenchRuns
from console.panes.benchmarks import BenchmarksPane
from console.sources.poller import Health, Observed
from services.bench.result import BenchResult, TargetIdentity
from services.bench.spec import BenchSpec, RandomDataset
from tests.console.sample_data import NOW

CLEAR_SCREEN = "\x1b[2J"
BASE_URL = "http://127.0.0.1:8000"


def metrics(req_s: float, tok_s: float, ttft: float, itl: float, completed: int = 100, failed: int = 0,
            **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "duration": completed / req_s, "completed": completed, "failed": failed,
        "total_input_tokens": completed * 512, "total_output_tokens": completed * 128, "request_throughput": req_s,
        "request_goodput": None, "output_throughput": tok_s, "total_token_throughput": tok_s * 5,
        "max_output_tokens_per_s": tok_s * 1.4, "max_concurrent_requests": 8,
        "mean_ttft_ms": ttft * 1.1, "median_ttft_ms": ttft, "std_ttft_ms": ttft / 4, "p99_ttft_ms": ttft * 2.5,
        "mean_tpot_ms": itl * 1.05, "median_tpot_ms": itl, "std_tpot_ms": itl / 5, "p99_tpot_ms": itl * 1.8,
        "mean_itl_ms": itl, "median_itl_ms": itl * 0.95, "std_itl_ms": itl / 3, "p99_itl_ms": itl * 3,
        "mean_e2el_ms": ttft + 127 * itl, "median_e2el_ms": ttft + 120 * itl, "std_e2el_ms": 40.0,
        "p99_e2el_ms": (ttft + 127 * itl) * 1.6,
    }
    values.update(extra)
    return values


def result(label: str, values: dict[str, Any], *, concurrency: int | None = 8, rate: float = math.inf,
           model: str = "smollm2-135m", runner: str = "builtin", sweep_id: str | None = None,
           cancelled: bool = False, errors: dict[str, int] | None = None) -> BenchResult:
    spec = BenchSpec(base_url=BASE_URL, endpoint="completions", dataset=RandomDataset(input_len=512, output_len=128),
                     num_prompts=100, max_concurrency=concurrency, request_rate=rate, label=label,
                     runner=runner)  # type: ignore[arg-type]
    return BenchResult(spec=spec, runner=runner, metrics=values, target=TargetIdentity(base_url=BASE_URL, model=model,
                       engine="vllm", engine_version="0.11.0"), cancelled=cancelled, sweep_id=sweep_id,
                       errors=errors or {})


def sample_runs() -> tuple[tuple[str, BenchResult], ...]:
    """Oldest first, as the store lists them."""
    sweep = "5e1f0a2b9c3d"
    return (
        ("20261130T061502.000001Z-tp1", result("tp1", metrics(2.10, 268.8, 180.0, 28.0))),
        ("20261130T063011.000002Z-tp2", result("tp2", metrics(2.94, 376.3, 150.0, 19.5), runner="vllm")),
        ("20261130T064500.000003Z-rates", result("rates", metrics(0.98, 125.4, 95.0, 15.0), rate=1.0,
                                                   concurrency=None, sweep_id=sweep)),
        ("20261130T064700.000004Z-rates", result("rates", metrics(1.91, 244.5, 120.0, 18.0), rate=2.0,
                                                   concurrency=None, sweep_id=sweep)),
        ("20261130T064900.000005Z-rates", result("rates", metrics(2.60, 332.8, 410.0, 26.0), rate=4.0,
                                                   concurrency=None, sweep_id=sweep)),
        ("20261130T070100.000006Z-smoke", result("smoke", metrics(1.20, 150.0, 240.0, 30.0, completed=37, failed=2),
                                                   cancelled=True, errors={"HTTP 503: overloaded": 2})),
        ("20261130T071000.000007Z", result("", metrics(0.50, 60.0, 900.0, 40.0, completed=10, failed=90),
                                             model=f"evil{CLEAR_SCREEN}model",
                                             errors={f"boom{CLEAR_SCREEN}\x07": 90})),
    )


def bench_runs(runs: tuple[tuple[str, BenchResult], ...] | None = None) -> BenchRuns:
    return BenchRuns("/home/oncall/.local/share/switchboard/bench", sample_runs() if runs is None else runs)


class BenchPaneApp(App[None]):
    """The Benchmarks pane alone, fed once with the sample runs (or ``observed``), the runs' cursor focused;
    ``marks`` are pressed as space on those rows, ``cursor`` is the run the cursor rests on."""

    def __init__(self, observed: Observed[Any] | None = None, status: str = "b starts a benchmark",
                 marks: tuple[str, ...] = (), cursor: str | None = None) -> None:
        super().__init__()
        self.observed = observed or Observed("bench", bench_runs(), NOW - 1.2, Health.LIVE)
        self.status, self.marks, self.cursor = status, marks, cursor

    def compose(self) -> ComposeResult:
        yield BenchmarksPane("0", id="benchmarks")

    def on_mount(self) -> None:
        pane = self.query_one(BenchmarksPane)
        pane.show(self.observed, self.status, NOW)
        for run_id in self.marks:
            pane.body.move_to(run_id)
            pane.action_mark()
        if self.cursor is not None:
            pane.body.move_to(self.cursor)
        pane.body.focus()
