"""SVG snapshots of the Benchmarks pane: in the console at 80x24 (jumped to with 0) and 120x40, the benchmark form at
80x24, and the pane alone with two runs compared (wide) and a sweep's chart (80 columns). The runs are fixed
(tests/console/bench_data.py), so what is drawn is the same every run.

Regenerate after an intended change: ``pytest tests/console/test_bench_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from console.app import SwitchboardApp
from console.sources.poller import Health, Observed
from tests.console.bench_data import BenchPaneApp, bench_runs, sample_runs
from tests.console.sample_data import NOW, snapshot_app

RUNS = [run_id for run_id, _ in sample_runs()]


def with_runs() -> SwitchboardApp:
    app = snapshot_app()
    app.receive(Observed("bench", bench_runs(), NOW - 2.1, Health.LIVE))
    return app


def test_console_80x24_benchmarks(snap_compare) -> None:
    assert snap_compare(with_runs(), terminal_size=(80, 24), press=["0"])


def test_console_120x40_benchmarks(snap_compare) -> None:
    assert snap_compare(with_runs(), terminal_size=(120, 40), press=["0"])


def test_benchmark_form_80x24(snap_compare) -> None:
    assert snap_compare(with_runs(), terminal_size=(80, 24), press=["0", "b"])


def test_benchmarks_pane_comparing_two_runs(snap_compare) -> None:
    assert snap_compare(BenchPaneApp(marks=(RUNS[0], RUNS[1])), terminal_size=(120, 32))


def test_benchmarks_pane_sweep_chart_80_columns(snap_compare) -> None:
    assert snap_compare(BenchPaneApp(cursor=RUNS[3]), terminal_size=(80, 16))
