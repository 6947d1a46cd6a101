"""Releases: the gateway's canary releases and the cluster's Argo Rollouts in one rollout widget
(console.panes.rollout), as Argo shows rollouts.

The figures (gate values against thresholds, step kinds) are formatted by console.actions.releases, so the
pane, the confirm dialog and ``switchboard release show`` read the same; an Argo rollout's figures come from
console.rollout_views (``kubectl argo rollouts get rollout``'s rules).
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult

from console.actions.releases import GATE_LABELS, gate_figures, samples_text, step_kind
from console.panes.base import Pane
from console.panes.format import ms
from console.panes.rollout import ArmView, GateView, RolloutBoard, RolloutView, TransitionView
from console.panes.table import KeyedTable
from console.rollout_views import RolloutRow
from console.sources.poller import Observed
from services.admin_api import ArmStats, ReleaseList, ReleaseState

ARM_COLUMNS = ("Req", "Err", "p99", "$/req", "Quality", "Judged", "J.err", "Dropped")


def _arm(name: str, arm: ArmStats) -> ArmView:
    return ArmView(name, (
        f"{arm.requests}",
        "-" if arm.error_rate is None else f"{arm.error_rate * 100:.1f}%",
        ms(arm.p99_ms),
        "-" if arm.cost_per_request is None else f"${arm.cost_per_request:.5f}",
        "-" if arm.quality is None else f"{arm.quality:.2f}",
        f"{arm.judged}",
        f"{arm.judge_errors}",
        f"{arm.judge_dropped}",
    ))


def rollout_view(release: ReleaseState) -> RolloutView:
    spec = release.spec
    gates = tuple(GateView(GATE_LABELS.get(g.gate, g.gate), g.verdict, *gate_figures(g),
                           samples=samples_text(g.samples)) for g in release.analysis)
    arms = tuple(_arm(name, release.arms[name]) for name in ("stable", "canary") if name in release.arms)
    kind = step_kind(spec, release.step_index)
    return RolloutView(
        key=spec.name, name=spec.name, phase=release.phase, aborted=release.aborted,
        step=min(release.step_index + 1, release.steps_total), steps_total=release.steps_total, step_kind=kind,
        actual_weight=release.actual_weight, desired_weight=release.desired_weight,
        subtitle=f"pool {spec.pool}: stable {spec.stable} → canary {spec.canary}",
        time_in_step_s=release.time_in_step_s, pause_left_s=release.pause_left_s, gates=gates,
        samples_label="n stable/canary",
        arm_columns=ARM_COLUMNS, arms=arms, message=release.message,
        history=tuple(TransitionView(t.time, t.phase, t.step_index + 1, t.actor, t.reason) for t in release.history),
    )


def argo_view(row: RolloutRow) -> RolloutView:
    """An Argo rollout as the plugin's ``get rollout`` reads: icon + phase, step i/n, SetWeight and ActualWeight,
    the current AnalysisRun's metrics (✔ ✖ ? ⚠ counts, phase, message), the revision."""
    gates_title, gates = "", ()
    if row.analysis is not None:
        run = row.analysis
        kind = "background analysis" if run.background else "AnalysisRun"
        gates_title = f"{kind} {run.name}: {run.phase}" + (f": {run.message}" if run.message else "")
        gates = tuple(GateView(m.name, m.verdict, m.counts, m.phase, samples=m.message) for m in run.metrics)
    desired, updated, ready, available = row.replicas
    weights = "traffic routing" if row.traffic_routing else "replica weights"
    revision = "-" if row.revision is None else str(row.revision)
    return RolloutView(
        key=row.key, name=row.name, phase=row.phase, icon=row.icon, aborted=row.aborted, pending=row.pending,
        step=row.step, steps_total=row.steps_total, step_kind=row.step_kind, actual_weight=row.actual_weight,
        desired_weight=row.desired_weight, message=row.message, gates=gates, gates_title=gates_title,
        gate_columns=("Measured", "Phase"), samples_label="Message",
        subtitle=(f"Argo rollout {row.namespace}/{row.name} · revision {revision} · {row.strategy}, {weights} · "
                  f"replicas {desired} desired, {updated} updated, {ready} ready, {available} available"),
    )


class ReleasesPane(Pane):
    TITLE = "Releases"

    _argo: tuple[RolloutRow, ...] = ()

    def compose(self) -> ComposeResult:
        yield RolloutBoard(id="releases-board")

    @property
    def board(self) -> RolloutBoard:
        return self.query_one(RolloutBoard)

    @property
    def body(self) -> KeyedTable:
        return self.board.table

    @property
    def selected_release(self) -> str | None:
        """The name of the release under the cursor."""
        return self.board.selected_key

    def show(self, observed: Observed[ReleaseList], now: float, rollouts: Sequence[RolloutRow] = ()) -> None:
        """The gateway's releases, then the cluster's Argo rollouts (``rollouts``: none without a cluster)."""
        listing = observed.data
        note = ""
        if listing is not None:
            count = len(listing.releases)
            note = f"v{listing.version} · {count} release{'' if count == 1 else 's'}"
        if rollouts:
            note += f"{' · ' if note else ''}{len(rollouts)} Argo rollout{'' if len(rollouts) == 1 else 's'}"
        self.show_health(observed, now, note)
        argo = tuple(rollouts)
        if argo == self._argo:
            argo = self._argo  # equal rows rebuilt from the same snapshot: nothing to redraw
        self._argo = argo
        if not self.changed(listing, observed.error, *argo):
            return
        views = [rollout_view(release) for release in listing.releases] if listing is not None else []
        views += [argo_view(row) for row in argo]
        if views:
            self.board.show(views)
        elif listing is None:
            self.board.show_empty("waiting for the gateway" if observed.error is None else observed.error)
        else:
            self.board.show_empty("no canary releases (releases: in the gateway config, or POST /admin/releases)")
