"""Benchmarks: the run in progress (one live line), past runs newest first, and below them either two marked runs
side by side with ratios, the throughput chart of the sweep under the cursor, or the run under the cursor in brief.

``space`` marks the run under the cursor (A, then B; a third mark drops the oldest). Rows and figures come from
console.views.bench; this module only draws them. Labels, model names and error texts come from result files and
servers: every cell passes the table's sanitizer and every other string ``safe_text``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.actions.bench import BenchRuns
from console.panes.base import Pane
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from console.text import safe_text
from console.views.bench import (
    Run,
    RunRow,
    compare_lines,
    load_text,
    metric_value,
    run_rows,
    sweep_axis,
    sweep_chart,
    sweep_of,
    toggle_mark,
    when_text,
)
from services.bench.result import BenchResult

RUN_COLUMNS = (
    ("", "mark", 1),
    ("When (UTC)", "when", 11),
    ("Label", "label", 10),
    ("Runner", "runner", 7),
    ("Model", "model", 18),
    ("Load", "load", 16),
    ("Done", "done", 7),
    ("Fail", "failed", 4),
    ("Req/s", "req_s", 5),
    ("Tok/s", "tok_s", 6),
    ("TTFT", "ttft", 6),
    ("ITL", "itl", 6),
    ("Note", "note", 9),
)
RUN_DROPS = ("model", "runner", "load", "failed", "label")
BRIEF = (("request_throughput", "req/s"), ("output_throughput", "out tok/s"), ("request_goodput", "goodput"),
         ("mean_ttft_ms", "TTFT mean"), ("p99_ttft_ms", "TTFT p99"), ("mean_tpot_ms", "TPOT mean"),
         ("p99_itl_ms", "ITL p99"), ("p99_e2el_ms", "E2EL p99"))
VERDICT_STYLE = {"better": "green", "worse": "bold red", "same": "dim"}


class BenchmarksPane(Pane):
    TITLE = "Benchmarks"

    DEFAULT_CSS = """
    BenchmarksPane > #bench-status { height: 1; color: $text; }
    BenchmarksPane > #bench-runs { height: 2; max-height: 60%; min-height: 2; }
    BenchmarksPane > #bench-detail { height: 1fr; min-height: 2; scrollbar-size: 1 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark to compare", show=False),
        Binding("shift+down", "scroll_detail(1)", "Scroll detail down", show=False),
        Binding("shift+up", "scroll_detail(-1)", "Scroll detail up", show=False),
    ]

    def __init__(self, key: str, *, id: str) -> None:
        super().__init__(key, id=id)
        self.runs: tuple[Run, ...] = ()
        self.marked: tuple[str, ...] = ()
        self.runner_log: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(id="bench-status")
        yield KeyedTable(RUN_COLUMNS, id="bench-runs", optional=RUN_DROPS)
        with VerticalScroll(id="bench-detail"):
            yield Static(id="bench-detail-text")

    @property
    def body(self) -> KeyedTable:
        return self.query_one("#bench-runs", KeyedTable)

    @property
    def selected_run(self) -> str | None:
        return self.body.cursor_key

    def show(self, observed: Observed[BenchRuns], status: str, now: float, log: tuple[str, ...] = ()) -> None:
        """``status``: the desk's live line (the run in progress, or what the last one came to); ``log``: the output
        of the runner in progress (vllm bench serve's, a Job's pod log), shown below the runs while it goes."""
        listing = observed.data
        count = len(listing.runs) if listing is not None else 0
        self.show_health(observed, now, f"{count} run{'' if count == 1 else 's'}" if listing is not None else "")
        if not self.changed(listing, observed.error, status, log):
            return
        self.runner_log = log
        self.query_one("#bench-status", Static).update(safe_text(status, style="bold" if "·" in status else "dim"))
        self.runs = listing.runs if listing is not None else ()
        self.marked = toggle_mark(self.marked, "", {run_id for run_id, _ in self.runs})
        if listing is None:
            self.body.show_empty("reading past runs" if observed.error is None else observed.error)
        elif not listing.runs:
            self.body.show_empty(f"no runs yet in {listing.directory}")
        else:
            self._show_rows()
        self._show_detail()

    def _show_rows(self) -> None:
        rows = run_rows(self.runs, self.marked)
        self.body.styles.height = len(rows) + 1  # as tall as its runs, up to 60% of the pane (CSS)
        self.body.sync([run_cells(row) for row in rows])

    def action_mark(self) -> None:
        run_id = self.selected_run
        if run_id is None:
            return
        self.marked = toggle_mark(self.marked, run_id, {i for i, _ in self.runs})
        self._show_rows()
        self._show_detail()

    def action_scroll_detail(self, lines: int) -> None:
        self.query_one("#bench-detail", VerticalScroll).scroll_relative(y=lines, animate=False)

    def on_keyed_table_row_highlighted(self) -> None:
        self._show_detail()  # the message goes on to the app, which updates the key bar

    def _show_detail(self) -> None:
        self.query_one("#bench-detail-text", Static).update(self.detail())

    def detail(self) -> RenderableType:
        """What sits below the runs: the comparison, the sweep's chart, or the run under the cursor."""
        results = dict(self.runs)
        if len(self.marked) == 2:
            return comparison(self.marked, results)
        if self.runner_log:
            return runner_output(self.runner_log, max(self.query_one("#bench-detail").size.height - 1, 1))
        current = self.selected_run
        if current is None or current not in results:
            return Text("")
        sweep = sweep_of(self.runs, current)
        hint = Text("space marks runs to compare (A, then B)", style="dim")
        if len(sweep) > 1:
            return Group(chart(sweep), hint)
        return Group(brief(current, results[current]), hint)


def run_cells(row: RunRow) -> Row:
    style = "dim" if row.cancelled else ""
    return row.key, (Text(row.mark, style="bold reverse" if row.mark else ""), row.when,
                     safe_text(row.label, style="bold"), row.runner, row.model, row.load, row.done, row.failed,
                     row.req_s, row.tok_s, row.ttft, row.itl, Text(row.note, style=style or "cyan"))


def comparison(marked: tuple[str, ...], results: dict[str, BenchResult]) -> RenderableType:
    a_id, b_id = marked
    a, b = results[a_id], results[b_id]
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("Metric", no_wrap=True)
    table.add_column(safe_text(f"A {_short(a_id)}"), justify="right", no_wrap=True)
    table.add_column(safe_text(f"B {_short(b_id)}"), justify="right", no_wrap=True)
    table.add_column("B/A", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for line in compare_lines(a, b):
        table.add_row(safe_text(line.metric), line.a, line.b, line.ratio, Text(line.verdict, style=VERDICT_STYLE.get(
            line.verdict, "")))
    return table


def runner_output(log: tuple[str, ...], lines: int = 40) -> RenderableType:
    """The runner's latest output lines, escaped: a process or a pod wrote them."""
    head = Text(f"runner output (last {min(len(log), lines)} lines)", style="bold")
    return Group(head, *(safe_text(line) for line in log[-lines:]))


def chart(sweep: list[Run]) -> RenderableType:
    axis = sweep_axis(sweep)
    title = Text(f"output tok/s against {axis} · sweep {sweep[0][1].sweep_id}", style="bold")
    table = Table(box=None, padding=(0, 1), show_header=False, show_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, style="cyan")
    table.add_column(no_wrap=True, justify="right")
    for line in sweep_chart(sweep):
        table.add_row(line.x, line.bar, line.value)
    return Group(safe_text(title), table)


def brief(run_id: str, result: BenchResult) -> RenderableType:
    head = safe_text(f"{run_id} · {result.runner} · {result.target.model or result.spec.model or '-'} · "
                     f"{load_text(result)} · tokens: {result.tokenizer}", style="bold")
    figures = Text(" · ").join(Text.assemble((f"{label} ", "dim"), metric_value(key, result.metric(key)))
                               for key, label in BRIEF if result.metric(key) is not None)
    lines = [head, figures]
    if result.errors:
        text, count = max(result.errors.items(), key=lambda item: item[1])
        lines.append(safe_text(f"{sum(result.errors.values())} failed; most often ({count}): {text}", style="red"))
    return Group(*lines)


def _short(run_id: str) -> str:
    label = run_id.partition("-")[2]
    return when_text(run_id) + (f" {label}" if label else "")
