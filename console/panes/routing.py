"""Routing: pools, their targets and weights as bars; drained marks; a staged change as ``old -> new``."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from console.actions import StagedWeights
from console.panes.base import Pane
from console.panes.format import bar, status_text
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from console.text import safe_text
from services.admin_api import GatewayState

BAR_WIDTH = 14
SEP = "\x1f"  # pool and target names never contain it
COLUMNS = (
    ("Pool", "pool", 9),
    ("Target", "target", 17),
    ("Weight", "weight", BAR_WIDTH),
    ("", "value", 9),
    ("State", "state", 10),
)


def row_key(pool: str, target: str) -> str:
    return f"{pool}{SEP}{target}"


class RoutingPane(Pane):
    TITLE = "Routing"

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="routing-table")

    @property
    def body(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected(self) -> tuple[str, str] | None:
        key = self.body.cursor_key
        if key is None or SEP not in key:
            return None
        pool, target = key.split(SEP, 1)
        return pool, target

    def select(self, pool: str, target: str) -> bool:
        """Move the cursor to a pool's target; False when it is not shown."""
        return self.body.move_to(row_key(pool, target))

    def show(self, observed: Observed[GatewayState], staged: StagedWeights | None, now: float) -> None:
        state = observed.data
        note = ""
        if state is not None:
            note = f"v{state.version}" + (f" by {state.updated_by}" if state.updated_by else "")
            if staged is not None:
                note += " · STAGED (a apply, x discard)"
        self.show_health(observed, now, note)
        if not self.changed(state, staged, observed.error):
            return
        if state is None:
            self.body.show_empty("waiting for the gateway" if observed.error is None else observed.error)
            return
        self.body.sync(_rows(state, staged))


def _rows(state: GatewayState, staged: StagedWeights | None) -> list[Row]:
    targets = {t.name: t for t in state.targets}
    rows: list[Row] = []
    for pool in state.pools:
        pending = staged if staged is not None and staged.pool == pool.name else None
        for index, (name, weight) in enumerate(pool.weights.items()):
            target = targets.get(name)
            new = pending.after.get(name, weight) if pending else weight
            if new != weight:
                value = Text.assemble((f"{weight}", "dim"), " -> ", (f"{new}", "bold yellow"))
                weight_bar = Text(bar(new / 100, BAR_WIDTH), style="yellow")
            else:
                value = Text(f"{weight}", style="bold")
                weight_bar = Text(bar(weight / 100, BAR_WIDTH), style="dim" if target and target.drained else "green")
            if target is None:
                state_cell = Text("unknown", style="red")
            elif target.drained:
                state_cell = Text("⏸ drained", style="magenta")
            else:
                state_cell = status_text(target.status)
            pool_cell = safe_text(pool.name, style="bold" if pool.available else "bold red") if index == 0 else Text("")
            if index == 0 and not pool.available:
                pool_cell.append(" !", style="bold red")
            rows.append((row_key(pool.name, name), (pool_cell, safe_text(name), weight_bar, value, state_cell)))
    return rows
