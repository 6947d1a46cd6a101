"""Providers: one row per target with health, breaker, cooldown, traffic, errors, latency and a trend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.app import ComposeResult

from console.panes.base import Pane
from console.panes.format import ms, number, percent, sparkline, status_text
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from services.admin_api import GatewayState, TargetState

TREND_WIDTH = 12
COLUMNS = (
    ("Target", "target", 20),
    ("Status", "status", 9),
    ("Breaker", "breaker", 7),
    ("Cooldown", "cooldown", 8),
    ("Req/s", "rps", 6),
    ("Err", "err", 6),
    ("p50", "p50", 7),
    ("p99", "p99", 7),
    ("EMA", "ema", 7),
    ("Req/s trend", "trend", TREND_WIDTH),
)


class ProvidersPane(Pane):
    TITLE = "Providers"

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="providers-table")

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
        Text(target.name, style="bold" if target.enabled else "dim"),
        status_text(target.status),
        Text(target.breaker, style=breaker_style),
        Text(cooldown, style="yellow" if target.cooldown_left_s else "dim"),
        number(target.requests_per_s),
        err,
        ms(target.p50_ms),
        ms(target.p99_ms),
        ms(target.ema_latency_ms),
        Text(sparkline(trend, TREND_WIDTH), style="cyan"),
    )
    return target.name, cells
