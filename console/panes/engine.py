"""Engine: the bundled vLLM's queue, KV cache, prefix cache hit rate and latency percentiles."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.panes.base import Pane
from console.panes.format import bar, number, percent, seconds_as_ms
from console.sources.poller import Observed
from console.text import safe_text
from services.backend.metrics import EngineMetrics, LatencySummary

KV_BAR_WIDTH = 16


class EngineBody(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    EngineBody { height: 1fr; padding: 0 1; scrollbar-size: 1 1; }
    EngineBody > #engine-figures { height: 8; }
    """


class EnginePane(Pane):
    TITLE = "Engine"

    def compose(self) -> ComposeResult:
        with EngineBody():
            yield Static(id="engine-figures")

    @property
    def body(self) -> EngineBody:
        return self.query_one(EngineBody)

    def show(self, observed: Observed[EngineMetrics] | None, now: float) -> None:
        figures = self.query_one("#engine-figures", Static)
        self.show_health(observed, now)
        if not self.changed(observed.data if observed else None, observed.error if observed else None):
            return
        if observed is None:
            figures.update(Text("no engine_url in this context", style="dim"), layout=False)
        elif observed.data is None:
            message = "waiting for the engine" if observed.error is None else observed.error
            figures.update(safe_text(message, style="dim"), layout=False)
        else:
            figures.update(render_metrics(observed.data), layout=False)


def _latency(summary: LatencySummary | None) -> Text:
    if summary is None or not summary.count:
        return Text("-", style="dim")
    return Text.assemble("p50 ", (seconds_as_ms(summary.p50), "bold"), "  p99 ", (seconds_as_ms(summary.p99), "bold"),
                         (f"  n={number(summary.count)}", "dim"))


def render_metrics(m: EngineMetrics) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_row("Model", safe_text(", ".join(m.models) or "-"))
    waiting_style = "bold yellow" if (m.waiting or 0) > 0 else "bold"
    grid.add_row("Requests", Text.assemble("running ", (number(m.running), "bold"),
                                           "  waiting ", (number(m.waiting), waiting_style)))
    if m.kv_cache_usage is None:
        grid.add_row("KV cache", "-")
    else:
        usage = m.kv_cache_usage
        style = "green" if usage < 0.65 else "yellow" if usage < 0.85 else "bold red"
        grid.add_row("KV cache", Text.assemble((bar(usage, KV_BAR_WIDTH), style), " ", (percent(usage), "bold")))
    grid.add_row("Prefix hit", percent(m.prefix_cache_hit_rate))
    grid.add_row("TTFT", _latency(m.ttft))
    grid.add_row("ITL", _latency(m.itl))
    grid.add_row("E2E", _latency(m.e2e))
    grid.add_row("Tokens", Text.assemble("in ", number(m.prompt_tokens), "  out ", number(m.generation_tokens),
                                         "  done ", number(m.requests_finished)))
    return grid
