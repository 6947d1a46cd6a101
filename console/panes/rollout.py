"""A progressive-delivery widget: a list of rollouts beside the selected one's detail, as Argo Rollouts shows them.

It draws ``RolloutView``s, a neutral description of one rollout: the gateway's canary releases are one
source (console.panes.releases), Argo Rollouts on Kubernetes another (same phases, steps, weights and
analysis). Per rollout: the phase in Argo's colours (Healthy green, Progressing cyan, Paused yellow,
Degraded red), step i/n with its kind, the canary's actual weight as a bar with the desired weight marked,
time in step and what is left of a timed pause, each gate with value, threshold and verdict (with the
per-arm sample counts), the arms' figures, the message and the latest transitions, newest first.
The list takes the focus (up/down select a rollout); shift+up/down scroll the detail.

Every string in a view may come from a server; all of them are drawn through ``console.text.safe_text``
(the list through the keyed table, the detail here). The widget renders what it is given and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from console.panes.format import age, utc_time
from console.panes.table import KeyedTable, Row
from console.text import safe_text

PHASE_STYLE = {"Healthy": "bold green", "Progressing": "bold cyan", "Paused": "bold yellow", "Degraded": "bold red"}
PHASE_ICON = {"Healthy": "✔", "Progressing": "◌", "Paused": "⏸", "Degraded": "✖"}
VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", "running": "dim"}
VERDICT_ICON = {"pass": "✔", "fail": "✖", "inconclusive": "?", "running": "…"}
HISTORY_LINES = 4
WEIGHT_BAR = 20
LIST_COLUMNS = (
    ("Release", "name", 16),
    ("Phase", "phase", 13),
    ("Step", "step", 5),
    ("Canary", "weight", 7),
)
LIST_WIDTH = sum(width + 2 for _, _, width in LIST_COLUMNS) + 1  # the cells, their gaps and the scrollbar
STACK_BELOW = LIST_WIDTH + 64  # narrower than this, the detail goes below the list
STACKED_LIST_ROWS = 4


@dataclass(frozen=True)
class GateView:
    label: str  # "error rate", "p99 latency", ... (an AnalysisRun metric's name for Argo)
    verdict: str  # pass, fail, inconclusive, running
    value: str  # the canary's figure as read, e.g. "0.4%", "1.20x"
    threshold: str  # e.g. "≤ 1.0%"
    samples: str = ""  # per-arm sample counts, e.g. "stable 120 · canary 14"


@dataclass(frozen=True)
class ArmView:
    name: str  # stable, canary
    figures: tuple[str, ...]  # one per ``RolloutView.arm_columns``


@dataclass(frozen=True)
class TransitionView:
    time: float  # Unix time
    phase: str
    step: int  # 1-based
    actor: str
    reason: str


@dataclass(frozen=True)
class RolloutView:
    key: str  # identity handed back as the selection (never drawn)
    name: str
    phase: str  # Healthy, Progressing, Paused, Degraded
    step: int  # 1-based, as Argo's "Step: 2/10"
    steps_total: int
    step_kind: str  # "setWeight 20", "pause 1h00m", "analysis", "complete"
    actual_weight: int | None  # the canary's weight as applied
    desired_weight: int | None  # as the steps call for
    aborted: bool = False
    subtitle: str = ""  # what replaces what, e.g. "pool chat: stable a -> canary b"
    time_in_step_s: float | None = None
    pause_left_s: float | None = None
    gates: tuple[GateView, ...] = ()
    samples_label: str = "Samples"  # the gates' sample counts column, e.g. "stable/canary"
    arm_columns: tuple[str, ...] = ()
    arms: tuple[ArmView, ...] = ()
    message: str = ""
    history: tuple[TransitionView, ...] = ()  # any order; drawn newest first
    icon: str | None = None  # the phase's icon when the source has its own (Argo's plugin: ॥ Paused)
    pending: bool = False  # a change sent that the controller has not observed yet
    gate_columns: tuple[str, str] = ("Canary", "Threshold")  # the gates' value and threshold headers
    gates_title: str = ""  # a line above the gates, e.g. the AnalysisRun's name, phase and message


def _pending_text() -> Text:
    return Text(" pending", style="bold magenta")


def phase_text(phase: str, aborted: bool = False, icon: str | None = None) -> Text:
    text = Text(f"{icon or PHASE_ICON.get(phase, '?')} {phase}", style=PHASE_STYLE.get(phase, "bold"))
    if aborted and phase != "Degraded":
        text.append(" (aborted)", style="red")
    return text


def verdict_text(verdict: str) -> Text:
    return Text(f"{VERDICT_ICON.get(verdict, '?')} {verdict}", style=VERDICT_STYLE.get(verdict, ""))


def weight_bar(actual: int | None, desired: int | None, width: int = WEIGHT_BAR) -> Text:
    """The canary's applied weight as a solid bar; the way still to go to the desired weight shaded (or, when
    the applied weight is above the desired, the excess in red)."""
    if actual is None:
        return Text("-".ljust(width), style="dim")
    target = actual if desired is None else desired
    solid, goal = round(actual / 100 * width), round(target / 100 * width)
    bar = Text()
    bar.append("█" * min(solid, goal), style="cyan")
    if goal > solid:
        bar.append("░" * (goal - solid), style="yellow")
    elif solid > goal:
        bar.append("█" * (solid - goal), style="red")
    bar.append("·" * (width - max(solid, goal)), style="dim")
    return bar


def weights_text(view: RolloutView) -> Text:
    line = Text.assemble(("canary ", "bold"), weight_bar(view.actual_weight, view.desired_weight),
                         (f" {'-' if view.actual_weight is None else view.actual_weight}%", "bold"))
    if view.desired_weight is not None and view.desired_weight != view.actual_weight:
        line.append(f"  desired {view.desired_weight}%", style="yellow")
    elif view.desired_weight is not None:
        line.append("  = desired", style="dim")
    return line


def step_text(view: RolloutView) -> Text:
    line = Text.assemble(("step ", "dim"), (f"{view.step}/{view.steps_total} ", "bold"), safe_text(view.step_kind))
    line.no_wrap, line.overflow = True, "ellipsis"
    if view.time_in_step_s is not None:
        line.append(f"  in step {age(view.time_in_step_s)}", style="dim")
    if view.pause_left_s is not None:
        line.append(f"  {age(view.pause_left_s)} left", style="yellow")
    return line


def _table() -> Table:
    return Table(box=None, padding=(0, 1), collapse_padding=True, pad_edge=False, show_edge=False,
                 header_style="bold dim", expand=False)


def gates_table(gates: Sequence[GateView], samples_label: str = "Samples",
                columns: tuple[str, str] = ("Canary", "Threshold")) -> Table:
    table = _table()
    table.add_column("Gate", no_wrap=True)
    table.add_column(safe_text(columns[0]), justify="right", no_wrap=True)
    table.add_column(safe_text(columns[1]), justify="right", no_wrap=True)
    table.add_column("Verdict", no_wrap=True)
    table.add_column(safe_text(samples_label), style="dim", no_wrap=True, overflow="ellipsis")
    for gate in gates:
        table.add_row(safe_text(gate.label), safe_text(gate.value, style="bold"), safe_text(gate.threshold),
                      verdict_text(gate.verdict), safe_text(gate.samples))
    return table


def arms_table(columns: Sequence[str], arms: Sequence[ArmView]) -> Table:
    table = _table()
    table.add_column("Arm", no_wrap=True)
    for column in columns:
        table.add_column(safe_text(column), justify="right", no_wrap=True)
    for arm in arms:
        table.add_row(safe_text(arm.name, style="bold"), *(safe_text(figure) for figure in arm.figures))
    return table


def history_lines(history: Sequence[TransitionView], limit: int = HISTORY_LINES) -> list[Text]:
    newest = sorted(history, key=lambda t: t.time, reverse=True)[:limit]
    lines = []
    for t in newest:
        line = Text.assemble((utc_time(t.time), "dim"), " ", phase_text(t.phase), (f" step {t.step} ", "dim"))
        line.append_text(safe_text(t.actor, style="italic"))
        line.append(": ")
        line.append_text(safe_text(t.reason))
        line.no_wrap, line.overflow = True, "ellipsis"
        lines.append(line)
    return lines


def detail(view: RolloutView) -> RenderableType:
    """Everything about one rollout, top to bottom in the order an on-call engineer reads it."""
    head = Text.assemble(safe_text(view.name, style="bold"), "  ", phase_text(view.phase, view.aborted, view.icon))
    if view.pending:
        head.append_text(_pending_text())
    head.append("  ")
    head.append_text(step_text(view))
    head.no_wrap, head.overflow = True, "ellipsis"
    parts: list[RenderableType] = [head, weights_text(view)]
    if view.message:
        parts.append(Text.assemble(("» ", "bold"), safe_text(view.message, style="italic")))
    if view.gates_title:
        parts.append(safe_text(view.gates_title, style="bold dim"))
    parts.append(gates_table(view.gates, view.samples_label, view.gate_columns) if view.gates
                 else Text("no analysis yet", style="dim"))
    if view.arms:
        parts.append(arms_table(view.arm_columns, view.arms))
    if view.subtitle:
        parts.append(safe_text(view.subtitle, style="dim"))
    if view.history:
        parts.append(Text("History (newest first)", style="bold dim"))
        parts += history_lines(view.history)
    return Group(*parts)


def list_row(view: RolloutView) -> Row:
    weight = "-" if view.actual_weight is None else f"{view.actual_weight}%"
    if view.desired_weight is not None and view.desired_weight != view.actual_weight:
        weight_cell = Text.assemble((weight, "bold"), (f"→{view.desired_weight}", "yellow"))
    else:
        weight_cell = Text(weight, style="bold")
    phase = phase_text(view.phase, view.aborted, view.icon)
    if view.pending:
        phase.append_text(_pending_text())
    return view.key, (safe_text(view.name, style="bold"), phase,
                      f"{view.step}/{view.steps_total}", weight_cell)


class RolloutDetail(VerticalScroll, can_focus=False):
    DEFAULT_CSS = "RolloutDetail { height: 1fr; width: 1fr; padding: 0 1; scrollbar-size: 1 1; }"

    def compose(self) -> ComposeResult:
        yield Static(id="rollout-detail-body")

    def show(self, content: RenderableType) -> None:
        self.query_one(Static).update(content)


class RolloutBoard(Horizontal):
    """The rollout list (it takes the focus: up/down select) beside the selected rollout's detail.

    Below ``STACK_BELOW`` columns they are stacked: the list above (a few rows), the detail below.
    """

    DEFAULT_CSS = f"""
    RolloutBoard {{ height: 1fr; }}
    RolloutBoard > KeyedTable {{ width: {LIST_WIDTH}; height: 1fr; }}
    RolloutBoard.-stacked {{ layout: vertical; }}
    RolloutBoard.-stacked > KeyedTable {{ width: 1fr; height: auto; max-height: {STACKED_LIST_ROWS + 1}; }}
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("shift+down", "scroll_detail(2)", "Scroll the detail down", show=False),
        Binding("shift+up", "scroll_detail(-2)", "Scroll the detail up", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._views: dict[str, RolloutView] = {}
        self._shown_detail: RolloutView | None = None
        self._detail_drawn = False

    def compose(self) -> ComposeResult:
        yield KeyedTable(LIST_COLUMNS, id=f"{self.id or 'rollout'}-list")
        yield RolloutDetail()

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected_key(self) -> str | None:
        return self.table.cursor_key

    def show(self, views: Sequence[RolloutView]) -> None:
        self._views = {view.key: view for view in views}
        self.table.sync([list_row(view) for view in views])
        self._show_detail()

    def show_empty(self, note: str) -> None:
        self._views = {}
        self.table.show_empty(note)
        self._show_detail()

    def action_scroll_detail(self, lines: int) -> None:
        detail = self.query_one(RolloutDetail)
        detail.scroll_to(y=detail.scroll_y + lines, animate=False)

    def on_resize(self) -> None:
        self.set_class(self.size.width < STACK_BELOW, "-stacked")

    def on_keyed_table_row_highlighted(self) -> None:
        self._show_detail()  # not stopped: the app re-checks which actions may run for the new selection

    def _show_detail(self) -> None:
        key = self.selected_key
        view = self._views.get(key) if key is not None else None
        if view == self._shown_detail and self._detail_drawn:
            return  # every snapshot brings new, often equal, views: redrawing lays the whole screen out again
        self._shown_detail, self._detail_drawn = view, True
        self.query_one(RolloutDetail).show(detail(view) if view is not None else Text(""))
