"""The Benchmarks pane: past runs newest first, space marks two for a side-by-side comparison with ratios, the
sweep under the cursor as a throughput chart, the run under the cursor in brief; strings from result files drawn
escaped; in the console it is pane 0, listed in help, and it reads the runs the store holds."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Static

from console.app import PANE_IDS, create_app
from console.contexts import Context
from console.panes.benchmarks import BenchmarksPane, comparison
from console.screens import HelpScreen
from console.sources.poller import Health, Observed
from services.bench.store import RunStore
from tests.console.bench_data import CLEAR_SCREEN, BenchPaneApp, bench_runs, metrics, result, sample_runs
from tests.console.pilot_helpers import wait_for
from tests.console.sample_data import NOW

pytestmark = pytest.mark.anyio
RUNS = sample_runs()
TP1, TP2, RATE1, RATE2, RATE4, SMOKE, HOSTILE = (run_id for run_id, _ in RUNS)
SIZE = (120, 40)


def plain(renderable: object) -> str:
    console = Console(width=118, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def detail_text(pane: BenchmarksPane) -> str:
    return plain(pane.detail())


async def test_runs_newest_first_and_two_marked_compare_side_by_side() -> None:
    app = BenchPaneApp()
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(BenchmarksPane)
        assert pane.body.row_keys == [run_id for run_id, _ in reversed(RUNS)]
        assert pane.title_plain.startswith("0 Benchmarks LIVE") and "7 runs" in pane.title_plain
        pane.body.move_to(TP1)
        await pilot.press("space")
        pane.body.move_to(TP2)
        await pilot.press("space")
        assert pane.marked == (TP1, TP2)
        assert (pane.body.get_cell(TP1, "mark"), pane.body.get_cell(TP2, "mark")) == ("A", "B")
        text = detail_text(pane)
        assert "A 11-30 06:15 tp1" in text and "B 11-30 06:30 tp2" in text
        throughput = next(line for line in text.splitlines() if line.strip().startswith("output_throughput"))
        assert throughput.split() == ["output_throughput", "269", "376", "1.40x", "better"]
        ttft = next(line for line in text.splitlines() if line.strip().startswith("median_ttft_ms"))
        assert ttft.split() == ["median_ttft_ms", "180ms", "150ms", "0.83x", "better"]
        pane.body.move_to(SMOKE)
        await pilot.press("space")  # a third mark drops the oldest
        assert pane.marked == (TP2, SMOKE)
        assert pane.body.get_cell(TP1, "mark") == "" and pane.body.get_cell(SMOKE, "mark") == "B"
        await pilot.press("space")  # unmark
        assert pane.marked == (TP2,)
        assert "space marks runs to compare" in detail_text(pane)


async def test_a_sweep_under_the_cursor_shows_throughput_against_rate() -> None:
    app = BenchPaneApp(cursor=RATE2)
    async with app.run_test(size=(80, 24)):
        pane = app.query_one(BenchmarksPane)
        lines = detail_text(pane).splitlines()
        assert lines[0].startswith("output tok/s against rate · sweep 5e1f0a2b9c3d")
        bars = [line.split() for line in lines[1:4]]
        assert [b[:2] for b in bars] == [["rate", "1/s"], ["rate", "2/s"], ["rate", "4/s"]]
        assert [b[-2] for b in bars] == ["125", "244", "333"]
        assert len(bars[0][2]) < len(bars[1][2]) < len(bars[2][2])
        assert pane.body.get_cell(RATE2, "note") == "sweep (3)"


async def test_strings_from_results_are_drawn_escaped() -> None:
    app = BenchPaneApp(cursor=HOSTILE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = detail_text(app.query_one(BenchmarksPane))
        assert "evil␛[2Jmodel" in text and "boom␛[2J␇" in text
        assert "\x1b[2J" not in text and "\x07" not in text
        assert "\x1b[2J" not in app.export_screenshot()


def test_a_metric_named_by_a_result_file_is_drawn_escaped_in_the_comparison() -> None:
    """A Job's pod log or vLLM's own file names the metrics: a hostile key must not reach the terminal raw."""
    hostile = result("pod", metrics(1.0, 100.0, 200.0, 20.0, **{f"p9{CLEAR_SCREEN}\x07_ttft_ms": 5.0}))
    text = plain(comparison(("a", "b"), {"a": result("a", metrics(1.0, 100.0, 200.0, 20.0)), "b": hostile}))
    assert "p9␛[2J␇_ttft_ms" in text
    assert "\x1b" not in text and "\x07" not in text


async def test_empty_waiting_and_failing_stores_say_so() -> None:
    empty = Observed("bench", bench_runs(()), NOW - 1, Health.LIVE)
    app = BenchPaneApp(observed=empty)
    async with app.run_test(size=SIZE):
        pane = app.query_one(BenchmarksPane)
        assert pane.body.row_keys == [] and detail_text(pane).strip() == ""
        assert pane.body._empty_note == "no runs yet in /home/oncall/.local/share/switchboard/bench"
    failing = Observed("bench", None, None, Health.DOWN, error=f"PermissionError: denied{chr(27)}[2J")
    app = BenchPaneApp(observed=failing)
    async with app.run_test(size=SIZE):
        pane = app.query_one(BenchmarksPane)
        assert pane.body._empty_note == f"PermissionError: denied{chr(27)}[2J"  # drawn through the table's sanitizer
        assert "PermissionError: denied␛[2J" in pane.title_plain and "\x1b" not in app.export_screenshot()


async def test_in_the_console_it_is_pane_0_in_help_and_reads_the_store(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    store = RunStore()
    saved = [store.save(result) for _, result in RUNS[:2]]
    assert PANE_IDS[-1] == "benchmarks" and len(PANE_IDS) == 10
    context = Context(name="t", admin_url="http://127.0.0.1:9", token_env=None, engine_url=None,
                      poll_interval_s=0.2, timeout_s=0.5)
    app = create_app(context, operator="alice@bastion", down_after_s=60.0)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.query_one(BenchmarksPane)
        await pilot.press("0")
        assert app.active_pane == "benchmarks" and pane.key == "0"
        await wait_for(pilot, lambda: pane.body.row_keys == saved[::-1], 10.0, "the stored runs")
        assert math.isclose(float(pane.body.get_cell(saved[1], "req_s")), 2.94)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        navigation = plain(app.screen.query_one("#help-navigation", Static).content)
        actions = plain(app.screen.query_one("#help-actions", Static).content)
        assert re.search(r"^ 0 +Jump to the Benchmarks pane", navigation, re.M)
        assert re.search(r"^ space +Benchmarks: mark the run to compare", navigation, re.M)
        assert re.search(r"^ b +Benchmark: open the form", actions, re.M)


async def test_a_runners_output_shows_its_latest_lines_escaped_while_it_runs() -> None:
    app = BenchPaneApp(status="vllm run: 3/10 done, 0 failed · b cancels")
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(BenchmarksPane)
        log = (*(f"line {n}" for n in range(60)), f"pod says {chr(27)}]0;owned{chr(7)}")
        pane.show(app.observed, "vllm run: 4/10 done, 0 failed · b cancels", NOW, log)
        await pilot.pause()
        text = detail_text(pane)
        assert text.startswith("runner output (last ")
        assert "line 59" in text and "line 0\n" not in text
        assert text.rstrip().endswith("pod says ␛]0;owned␇")
        pane.show(app.observed, "vllm run finished: 10 requests, 1 run saved (x)", NOW, ())
        assert "runner output" not in detail_text(pane)
