"""Providers: one row per target with health, breaker, cooldown, traffic, errors, latency and a trend.

Latency is shown twice, never mixed: time to first token (streams) and total latency (whole answers),
each as window p50 and p99 and the health tracker's EMA. At 80 columns the trend, breaker, cooldown and
the EMAs give way, so the percentiles stay in view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.app import ComposeResult

from console.panes.base import Pane
from console.panes.format import ms, number, percent, sparkline, status_text
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from console.text import safe_text
from services.admin_api import GatewayState, TargetState

TREND_WIDTH = 8
LATENCY_WIDTH = 5  # what format.ms needs below 100 s
COLUMNS = (
    ("Target", "target", 17),
    ("Status", "status", 9),
    ("Breaker", "breaker", 7),
    ("Cooldown", "cooldown", 8),
    ("Req/s", "rps", 6),
    ("Err", "err", 6),
    ("p50", "ttft_p50", LATENCY_WIDTH),
    ("p99", "ttft_p99", LATENCY_WIDTH),
    ("EMA", "ttft_ema", LATENCY_WIDTH),
    ("p50", "total_p50", LATENCY_WIDTH),
    ("p99", "total_p99", LATENCY_WIDTH),
    ("EMA", "total_ema", LATENCY_WIDTH),
    ("Trend", "trend", TREND_WIDTH),
)
GROUPS = (("TTFT", "ttft_p50", "ttft_ema"), ("Total", "total_p50", "total_ema"))
NARROW_DROPS = ("trend", "breaker", "cooldown", "ttft_ema", "total_ema")


class ProvidersPane(Pane):
    TITLE = "Providers"

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="providers-table", groups=GROUPS, optional=NARROW_DROPS)

    @property
    def body(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected_target(self) -> str | None:
        return self.body.cursor_key

    def show(self, observed: Observed[GatewayState], trends: Mapping[str, Sequence[float]], now: float) -> None:
        self.show_health(observed, now)
        state = observed.data
        if not self.changed(state, observed.error):
            return
        if state is None:
            self.body.show_empty("waiting for the gateway" if observed.error is None else observed.error)
            return
        self.body.sync([_row(t, trends.get(t.name, ())) for t in state.targets])


def _row(target: TargetState, trend: Sequence[float]) -> Row:
    breaker_style = {"closed": "green", "half_open": "yellow", "open": "bold red"}[target.breaker]
    cooldown = f"{target.cooldown_left_s:.0f}s" if target.cooldown_left_s else "-"
    err = Text(percent(target.error_rate), style="red" if target.error_rate >= 0.05 else "")
    cells = (
        safe_text(target.name, style="bold" if target.enabled else "dim"),
        status_text(target.status),
        Text(target.breaker, style=breaker_style),
        Text(cooldown, style="yellow" if target.cooldown_left_s else "dim"),
        number(target.requests_per_s),
        err,
        ms(target.ttft_p50_ms),
        ms(target.ttft_p99_ms),
        Text(ms(target.ttft_ema_ms), style="dim"),
        ms(target.total_p50_ms),
        ms(target.total_p99_ms),
        Text(ms(target.total_ema_ms), style="dim"),
        Text(sparkline(trend, TREND_WIDTH), style="cyan"),
    )
    return target.name, cells
