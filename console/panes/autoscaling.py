"""Autoscaling: each HPA (KEDA's under their ScaledObject) with replicas against min and max, metrics against
targets, conditions and why the count is what it is (console.views.autoscaling, which says what can be known)."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.panes.base import Pane
from console.panes.gpu_pods import NO_CLUSTER
from console.sources.poller import Observed
from console.text import safe_text
from console.views.autoscaling import AutoscalingView, HpaView, autoscaling_view

BAR_WIDTH = 20
LABEL_WIDTH = 34


class AutoscalingBody(VerticalScroll, can_focus=True):
    DEFAULT_CSS = """
    AutoscalingBody { height: 1fr; padding: 0 1; scrollbar-size: 1 1; }
    AutoscalingBody > #autoscaling-entries { height: auto; }
    """


def replica_bar(view: HpaView) -> Text:
    """``replicas 20 [████████████████████] min 2 max 20  AT MAX``: the bar spans 0..max, min marked by ``|``."""
    current = view.current if view.current is not None else 0
    maximum = max(view.maximum, 1)
    filled = round(BAR_WIDTH * min(current, maximum) / maximum)
    cells = ["█" if i < filled else "·" for i in range(BAR_WIDTH)]
    low = min(round(BAR_WIDTH * view.minimum / maximum), BAR_WIDTH - 1)
    if low > 0 and cells[low - 1] != "█":
        cells[low - 1] = "|"
    style = "bold red" if view.at_max else "yellow" if view.at_min else "green"
    line = Text.assemble("replicas ", (f"{'-' if view.current is None else view.current:>3} ", "bold"),
                         ("[" + "".join(cells) + "]", style), f" min {view.minimum} max {view.maximum}")
    if view.desired is not None and view.desired != view.current:
        line.append(f"  desired {view.desired}", style="bold")
    if view.at_max:
        line.append("  AT MAX", style="bold red")
    elif view.at_min and view.minimum > 0:
        line.append("  at min", style="yellow")
    return line


def entry(view: HpaView) -> Group:
    heading = Text.assemble((view.title, "bold"), " → ", view.target, (f"   last scale {view.last_scale}", "dim"))
    lines = [safe_text(heading)]
    if view.error:
        lines.append(safe_text(f"  {view.error}", style="bold red"))
        return Group(*lines)
    lines.append(Text("  ") + replica_bar(view))
    for metric in view.metrics:
        proposal = "" if metric.proposal is None else f"→ {metric.proposal}"
        figures = Text.assemble((f"{metric.current:>7}", "bold red" if metric.above else "bold"),
                                f" / {metric.target:<9}", (proposal, "dim"))
        lines.append(safe_text(Text("  ") + Text(metric.label[:LABEL_WIDTH].ljust(LABEL_WIDTH)) + figures))
    for why in view.why:
        lines.append(safe_text(Text.assemble(("  why ", "bold cyan"), why)))
    if view.conditions:
        conditions = Text("  ")
        for n, condition in enumerate(view.conditions):
            if n:
                conditions.append(" · ")
            style = "green" if condition.status == "True" else "yellow"
            if condition.type == "ScalingLimited":
                style = "bold red" if condition.status == "True" else "green"
            conditions.append(f"{condition.type} ", style="dim")
            conditions.append(f"{condition.status} {condition.reason}", style=style)
        lines.append(safe_text(conditions))
    return Group(*lines)


def render_view(view: AutoscalingView) -> Group:
    parts: list[Group | Text] = []
    for n, hpa in enumerate(view.entries):
        if n:
            parts.append(Text(""))
        parts.append(entry(hpa))
    if not view.entries:
        parts.append(Text("no HorizontalPodAutoscalers", style="dim"))
    for note in view.notes:
        parts.append(safe_text(note, style="dim italic"))
    return Group(*parts)


class AutoscalingPane(Pane):
    TITLE = "Autoscaling"

    def compose(self) -> ComposeResult:
        with AutoscalingBody():
            yield Static(id="autoscaling-entries")

    @property
    def body(self) -> AutoscalingBody:
        return self.query_one(AutoscalingBody)

    @property
    def text(self) -> str:
        """What the pane shows, as plain text (tests read it)."""
        return self._plain

    def show(self, observed: Observed[object] | None, now: float, wall_time: float) -> None:
        snapshot = observed.data if observed else None
        hpas = snapshot.kinds.get("hpas") if snapshot is not None else None  # type: ignore[attr-defined]
        note = f"{len(hpas.objects)} HPAs" if hpas is not None and hpas.listed and not hpas.absent else ""
        self.show_health(observed, now, note)
        if not self.changed(snapshot, observed.error if observed else None, int(wall_time // 60)):
            return
        view = None
        if observed is None:
            content: Group | Text = Text(NO_CLUSTER, style="dim")
        elif snapshot is None:
            content = safe_text("waiting for the cluster" if observed.error is None else observed.error, style="dim")
        else:
            view = autoscaling_view(snapshot, wall_time)  # type: ignore[arg-type]
            if view == self._view:
                return  # a new snapshot, the same figures: re-rendering every entry (and the layout) costs CPU
            content = render_view(view)
        self._view = view
        self._plain = _plain(content)
        self.query_one("#autoscaling-entries", Static).update(content)

    _plain = ""
    _view: AutoscalingView | None = None


def _plain(content: Group | Text) -> str:
    if isinstance(content, Text):
        return content.plain
    return "\n".join(_plain(part) for part in content.renderables)  # type: ignore[arg-type]
