"""GPU pods: the cluster's pods grouped by workload (console.views.pods), with a k9s-like ``/`` filter.

Rows that need attention carry a ``!`` and the reason word (CrashLoopBackOff, NotReady, Unschedulable) as well as
red or yellow, so NO_COLOR still shows them. A huge cluster costs one view-model pass per new snapshot (or per
minute, for the ages) and at most ``MAX_ROWS`` rendered rows; the ``/`` filter reaches the rest.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input

from console.panes.base import Pane
from console.panes.table import Column, KeyedTable, Row
from console.sources.poller import Observed
from console.views.pods import NO_WORKLOAD, PodRow, PodRowCache, WorkloadGroup, age_text, filtered, pod_groups

MAX_ROWS = 200  # rows rendered at most (headers included): a screen holds far fewer; the filter finds the rest
GROUP_KEY = "workload:"
COLUMNS: tuple[Column, ...] = (
    ("Pod", "pod", 24), ("GPU", "gpus", 3), ("Node", "node", 11), ("GPU model", "model", 14),
    ("Status", "status", 22), ("Rst", "restarts", 3), ("Age", "age", 4), ("Last warning", "warning", 20),
)
NARROW_DROPS = ("age", "restarts", "warning", "node")  # 120 columns keep them all; 80: pod, GPU, model, status
VENDOR_PREFIX = "NVIDIA-"  # every nvidia.com/gpu.product starts so: the column shows the rest
NO_CLUSTER = "no cluster configured for this context (kubeconfig / kube_context)"


def pod_cells(pod: PodRow, wall_now: float) -> list[str | Text]:
    ready = f"{pod.ready}/{pod.containers}"
    if pod.problem:
        style = "bold red" if pod.problem in ("CrashLoopBackOff", "Failed") else "bold yellow"
        status = Text.assemble(("! ", style), (f"{ready} {pod.problem}", style))
    else:
        status = Text(f"{ready} {pod.phase}", style="green" if pod.phase == "Running" else "")
    model = pod.gpu_model.removeprefix(VENDOR_PREFIX) or "-"
    return [f"  {pod.name}", str(pod.gpus) if pod.gpus else "-", pod.node or "-", model, status,
            str(pod.restarts), age_text(pod.age_s(wall_now)), Text(pod.warning, style="yellow") if pod.warning else ""]


def group_cells(group: WorkloadGroup) -> list[str | Text]:
    count = len(group.pods)
    summary = f"{count} pod{'' if count == 1 else 's'}" + (f", {group.problems} !" if group.problems else "")
    style = "bold" if group.workload != NO_WORKLOAD else "bold dim"
    return [Text(group.workload, style=style), str(group.gpus) if group.gpus else "", "", "",
            Text(summary, style="bold red" if group.problems else "dim"), "", "", ""]


def rows(groups: list[WorkloadGroup], wall_now: float, limit: int = MAX_ROWS) -> list[Row]:
    """Header and pod rows, at most ``limit``; a last row says how many pods were left out."""
    out: list[Row] = []
    total = sum(len(g.pods) for g in groups)
    shown = 0
    for group in groups:
        if len(out) + 1 >= limit:
            break
        out.append((GROUP_KEY + group.workload, group_cells(group)))
        for pod in group.pods:
            if len(out) + 1 >= limit:
                break
            out.append((pod.key, pod_cells(pod, wall_now)))
            shown += 1
    if shown < total:
        more = Text(f"… {total - shown} more pods: / filters", style="dim italic")
        out.append(("more:", [more, "", "", "", "", "", "", ""]))
    return out


class PodFilter(Input):
    """The ``/`` line at the pane's foot (styled by the pane: Input's own border would take three lines)."""


class GpuPodsPane(Pane):
    TITLE = "GPU pods"
    DEFAULT_CSS = """
    GpuPodsPane > PodFilter { dock: bottom; height: 1; border: none; padding: 0 1; display: none; }
    GpuPodsPane > PodFilter:focus { border: none; }
    GpuPodsPane > PodFilter.-shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, key: str, *, id: str) -> None:
        super().__init__(key, id=id)
        self.needle = ""
        self._groups: list[WorkloadGroup] | None = None
        self._row_cache = PodRowCache()
        self._wall = 0.0
        self._observed: Observed[object] | None = None
        self._now = 0.0
        self._count = ""

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="gpu-pods-table", optional=NARROW_DROPS)
        yield PodFilter(placeholder="filter pods, workloads, nodes (escape clears)", id="gpu-pods-filter")

    @property
    def body(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def filter_input(self) -> PodFilter:
        return self.query_one(PodFilter)

    def show(self, observed: Observed[object] | None, now: float, wall_time: float) -> None:
        """``now``: the monotonic clock of data ages; ``wall_time`` (Unix): the pods' ages, redrawn each minute."""
        snapshot = observed.data if observed else None
        pods = snapshot.kinds.get("pods") if snapshot is not None else None  # type: ignore[attr-defined]
        self._count = f"{len(pods.objects)} pods" if pods is not None and pods.listed and not pods.absent else ""
        self._observed, self._now = observed, now
        self._title_note()
        if not self.changed(snapshot, observed.error if observed else None, int(wall_time // 60)):
            return
        self._groups = None
        if observed is None:
            self.body.show_empty(NO_CLUSTER)
        elif snapshot is None:
            self.body.show_empty("waiting for the cluster" if observed.error is None else observed.error)
        elif pods is not None and pods.absent:
            self.body.show_empty(pods.absent)
        else:
            self._groups = pod_groups(snapshot, self._row_cache)  # type: ignore[arg-type]
            self._wall = wall_time
            self._draw()

    def _draw(self) -> None:
        if self._groups is None:
            return
        groups = filtered(self._groups, self.needle)
        if groups:
            self.body.sync(rows(groups, self._wall))
        elif self.needle:
            self.body.show_empty(f"no pod, workload or node matches '{self.needle}'")
        else:
            self.body.show_empty("no pods")

    def _title_note(self) -> None:
        note = " · ".join(part for part in (self._count, f"/{self.needle}" if self.needle else "") if part)
        self.show_health(self._observed, self._now, note)

    def set_filter(self, needle: str) -> None:
        self.needle = needle
        self._draw()
        self._title_note()

    def action_filter(self) -> None:
        box = self.filter_input
        box.add_class("-shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.filter_input
        box.value = ""
        box.remove_class("-shown")
        self.set_filter("")
        self.body.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.set_filter(event.value.strip())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            self.filter_input.remove_class("-shown")
        self.body.focus()

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and self.filter_input.has_focus:
            event.stop()
            self.action_clear_filter()
