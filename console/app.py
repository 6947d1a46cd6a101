"""The on-call console: a thin Textual shell over live snapshots and the action registry.

What it does: lay out the panes, switch between them, and route messages. One ``Poller`` per source
(``SOURCES``) hands each new ``Observed`` snapshot to ``SwitchboardApp.receive``; the app keeps the
latest snapshot per source and hands it to the panes fed by that source (``PANES``), which only render.
Keys, key bar, help and command palette come from the registry (console.actions); what an action does
(staging, writes, 409 handling, confirm flows) lives in its domain module there, which drives the app
through the ``ConsoleHost`` methods below.

Pause stops rendering, not only polling: snapshots that still arrive are kept but not drawn until the
operator resumes (or refreshes by hand, or a write answers).

Entry points: ``create_app(context, ...)`` (tests, benchmarks) and ``run_console(context, ...)`` (CLI).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

from console.actions import (
    CONSOLE_ACTIONS,
    REGISTRY,
    ActionState,
    Danger,
    StagedWeights,
    key_display,
    keymap,
    visible_actions,
)
from console.actions.bench import BenchDesk
from console.actions.rollouts import RolloutDesk, find_rollout
from console.bench_screen import BenchFormScreen
from console.contexts import Context, ContextError, default_operator
from console.heap import QuietCollector
from console.panes import (
    AuditPane,
    AutoscalingPane,
    EnginePane,
    GpuPodsPane,
    KeysPane,
    Pane,
    ProvidersPane,
    QueuePane,
    ReleasesPane,
    RoutingPane,
)
from console.panes.benchmarks import BenchmarksPane
from console.panes.keybar import KeyBar, KeyHint
from console.screens import ActionCommands, Confirmation, ConfirmScreen, HelpRow, HelpScreen, context_badge
from console.sources.engine import EngineClient
from console.sources.gateway import GatewayClient
from console.sources.kube import KubeSnapshot, KubeSource
from console.sources.poller import Health, Observed, Poller
from console.sources.prometheus import PrometheusClient, ProvidersView
from console.text import clean
from services.admin_api import BatchProgress, GatewayState, QueueSnapshot, ReleaseList, ReleaseState
from services.bench.spec import BenchSpec

log = logging.getLogger(__name__)

AUDIT_LIMIT = 50
KUBE_SOURCE = "kubernetes"  # the snapshots of console.sources.kube
TREND_POINTS = 180  # per target: 3 minutes at the default 1 s interval


# ---- what the console shows: sources and the panes they feed ------------------------------------------


@dataclass(frozen=True)
class Source:
    name: str
    fetcher: Callable[[SwitchboardApp], Callable[[], Awaitable[Any]] | None]  # None: not configured
    interval_factor: float = 1.0  # times the context's poll interval (the context's poll_intervals win)


@dataclass(frozen=True)
class PaneSpec:
    """One pane: its widget, the source that feeds it, and how its ``show`` is called."""

    id: str
    widget: type[Pane]
    source: str
    show: Callable[[SwitchboardApp, Any, Observed[Any] | None, float], None]
    wide: bool = False  # spans both grid columns; narrow panes sit side by side
    also: tuple[str, ...] = ()  # other sources whose snapshots redraw it (``show`` reads them from the app)
    rows: int = 1  # the share of the screen's height its grid row gets (fr), against the other rows

    @property
    def title(self) -> str:
        return self.widget.TITLE


SOURCES: tuple[Source, ...] = (
    Source("gateway", lambda app: app.gateway.state),
    Source("audit", lambda app: lambda: app.gateway.audit(limit=AUDIT_LIMIT), 2),
    Source("engine", lambda app: app.engine.metrics if app.engine is not None else None, 2),
    Source("keys", lambda app: app.gateway.keys, 2),
    Source("releases", lambda app: app.gateway.releases),
    Source("queue", lambda app: app.gateway.queue, 2),
    Source("bench", lambda app: app.bench.runs, 5),  # past runs, from files
    Source("prometheus", lambda app: app.prometheus.figures if app.prometheus is not None else None, 2),
)
PANES: tuple[PaneSpec, ...] = (  # in digit-key order: 1 jumps to the first
    PaneSpec("providers", ProvidersPane, "gateway",  # figures from Prometheus where the context names one
             lambda app, pane, o, now: pane.show(app.providers.view(app.snapshots["gateway"],
                                                                    app.snapshots.get("prometheus")),
                                                 app.history.trends(), now),
             wide=True, rows=4, also=("prometheus",)),
    PaneSpec("routing", RoutingPane, "gateway", lambda app, pane, o, now: pane.show(o, app.staged, now), rows=3),
    PaneSpec("engine", EnginePane, "engine", lambda app, pane, o, now: pane.show(o, now)),
    PaneSpec("audit", AuditPane, "audit", lambda app, pane, o, now: pane.show(o, now), wide=True, rows=2),
    PaneSpec("client-keys", KeysPane, "keys", lambda app, pane, o, now: pane.show(o, now, time.time()), wide=True,
             rows=2),
    PaneSpec("releases", ReleasesPane, "releases",
             lambda app, pane, o, now: pane.show(app.snapshots["releases"], now, app.rollouts.rows(app.cluster())),
             wide=True, rows=4, also=(KUBE_SOURCE,)),
    PaneSpec("gpu-pods", GpuPodsPane, KUBE_SOURCE, lambda app, pane, o, now: pane.show(o, now, time.time()),
             wide=True, rows=2),
    PaneSpec("autoscaling", AutoscalingPane, KUBE_SOURCE, lambda app, pane, o, now: pane.show(o, now, time.time()),
             wide=True, rows=2),
    PaneSpec("queue", QueuePane, "queue", lambda app, pane, o, now: pane.show(o, now, time.time()), wide=True, rows=2),
    PaneSpec("benchmarks", BenchmarksPane, "bench",
             lambda app, pane, o, now: pane.show(o, app.bench.status_line(), now, app.bench.log_tail()), wide=True,
             rows=2),
)
PANE_IDS = tuple(spec.id for spec in PANES)
NARROW_COLUMN = 48


def grid_rows(panes: Sequence[PaneSpec]) -> list[int]:
    """The grid's rows, each as its height share: wide panes take a row each; narrow ones pair up."""
    rows: list[int] = []
    pending: list[PaneSpec] = []  # narrow panes waiting for a partner

    def flush() -> None:
        for pair in range(0, len(pending), 2):
            rows.append(max(spec.rows for spec in pending[pair:pair + 2]))
        pending.clear()

    for spec in panes:
        if spec.wide:
            flush()
            rows.append(spec.rows)
        else:
            pending.append(spec)
    flush()
    return rows


def layout_css(panes: Sequence[PaneSpec]) -> str:
    rows = grid_rows(panes)
    wide = ", ".join(f"#{spec.id}" for spec in panes if spec.wide) or "#none"
    return (f"#panes {{ layout: grid; grid-size: 2 {len(rows)}; grid-columns: 1fr {NARROW_COLUMN}; "
            f"grid-rows: {' '.join(f'{share}fr' for share in rows)}; }}\n{wide} {{ column-span: 2; }}\n")


# ---- bindings from the registry ---------------------------------------------------------------------


def registry_bindings() -> list[BindingType]:
    """One Binding per console action (``id`` = the action id, so ``keys:`` remaps it), then pane jumps."""
    bindings: list[BindingType] = [
        Binding(a.key or "", f"act({a.id!r})", a.footer_label, show=a.show_in_footer, id=a.id,
                tooltip=a.description, priority=a.priority)
        for a in CONSOLE_ACTIONS
    ]
    bindings.append(Binding("shift+tab", "previous_pane", "Previous pane", show=False, priority=True))
    bindings += [Binding(str(n % 10), f"focus_pane({n})", f"Pane {n}", show=False) for n in range(1, len(PANES) + 1)]
    return bindings


class TrendHistory:
    """Requests/s per target, the last ``points`` polls; targets that disappear are forgotten."""

    def __init__(self, points: int = TREND_POINTS) -> None:
        self.points = points
        self._series: dict[str, deque[float]] = {}
        self._last: float | None = None

    def record(self, state: GatewayState, fetched_at: float | None) -> None:
        if fetched_at is not None and fetched_at == self._last:
            return
        self._last = fetched_at
        names = {t.name for t in state.targets}
        for gone in set(self._series) - names:
            del self._series[gone]
        for target in state.targets:
            self._series.setdefault(target.name, deque(maxlen=self.points)).append(target.requests_per_s)

    def trends(self) -> Mapping[str, Sequence[float]]:
        return self._series


class SourceUpdate(Message):
    """A poller's new snapshot; a newer one for the same source replaces it in the queue."""

    def __init__(self, observed: Observed[Any]) -> None:
        super().__init__()
        self.observed = observed

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SourceUpdate) and message.observed.source == self.observed.source


class SwitchboardApp(App[int]):
    TITLE = "Switchboard"
    CSS = layout_css(PANES) + """
    #context-bar { dock: top; height: 1; background: $panel; color: $text; }
    Screen.-narrow #panes, Screen.-short #panes { layout: vertical; }
    Screen.-narrow Pane, Screen.-short Pane { border: none; border-top: round $panel-lighten-2; }
    Screen.-narrow Pane.-active, Screen.-short Pane.-active { height: 1fr; border-top: round $accent; }
    Screen.-narrow Pane.-inactive, Screen.-short Pane.-inactive { height: 1; min-height: 1; }
    Screen.-narrow Pane.-inactive > *, Screen.-short Pane.-inactive > * { display: none; }
    """
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-short"), (30, "-tall")]
    BINDINGS: ClassVar[list[BindingType]] = registry_bindings()
    COMMANDS: ClassVar[set[Any]] = {ActionCommands}
    COMMAND_PALETTE_BINDING = REGISTRY["palette"].key or "ctrl+p"

    def __init__(
        self,
        context: Context,
        gateway: GatewayClient,
        engine: EngineClient | None,
        *,
        readonly: bool = False,
        keys: Mapping[str, str] | None = None,
        operator: str | None = None,
        clock: Callable[[], float] | None = None,
        poll: bool = True,
        intervals: Mapping[str, float] | None = None,
        down_after_s: float | None = None,
        kube: KubeSource | None = None,
        prometheus: PrometheusClient | None = None,
    ) -> None:
        super().__init__()
        self.context = context
        self.gateway = gateway
        self.engine = engine
        self.prometheus = prometheus
        self.providers = ProvidersView()
        self.kube = kube  # the cluster's watches: pushed, not polled (``KUBE_SOURCE`` snapshots)
        self.rollouts = RolloutDesk()  # Argo rollouts: the access review's answers, changes sent and not yet observed
        self.bench = BenchDesk.for_context(context)  # past benchmark runs and the one in progress
        self.readonly = readonly or context.readonly
        self.keys = keymap(dict(keys or {}))
        self.operator = operator
        self.clock = clock or time.monotonic
        self.poll = poll
        interval = context.poll_interval_s
        self.intervals = {source.name: source.interval_factor * interval for source in SOURCES}
        self.intervals.update(intervals or {})
        self.down_after_s = down_after_s or max(10.0, 3 * (interval + context.timeout_s))
        self.fetchers = {source.name: fetch for source in SOURCES if (fetch := source.fetcher(self)) is not None}
        self.paused = False
        self.writing = False
        self.heap = QuietCollector()
        self._header: Text | None = None
        self.staged: StagedWeights | None = None
        self.snapshots: dict[str, Observed[Any]] = {name: Observed(name) for name in self.fetchers}  # shown
        if kube is not None:
            kube.on_update, kube.down_after_s = self.receive, self.down_after_s
            self.snapshots[KUBE_SOURCE] = Observed(KUBE_SOURCE)
        self.received: dict[str, Observed[Any]] = dict(self.snapshots)  # the latest, held while paused
        self.history = TrendHistory()
        self.pollers: dict[str, Poller[Any]] = {}
        self.notices: list[tuple[str, str, str]] = []  # (severity, title, message), for tests and logs
        self.active_pane = PANE_IDS[0]
        self.created_at = time.monotonic()
        self.first_full_frame_s: float | None = None
        self._mounted = False
        self._bindings_key: tuple[Any, ...] | None = None
        self._focusing: str | None = None

    # ---- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="context-bar")
        with Container(id="panes"):
            for number, spec in enumerate(PANES, 1):
                yield spec.widget(str(number % 10), id=spec.id)  # the tenth pane is 0
        yield KeyBar(id="keys")

    def pane(self, pane_id: str) -> Pane:
        return self.query_one(f"#{pane_id}", Pane)

    @property
    def drawable(self) -> bool:
        """Mounted and not shutting down: Textual stops running before it prunes the widgets, and a
        timer or a queued message can still fire between the two."""
        return self._mounted and self.is_running

    def on_load(self) -> None:
        """Polls start before the widgets exist, so the first answers race Textual's start-up, not follow it."""
        if self.poll:
            self._start_pollers()
            if self.kube is not None:
                self.kube.start()

    async def on_mount(self) -> None:
        self.set_keymap(self.keys)
        if self.context.prod:
            bar = self.query_one("#context-bar", Static)
            bar.styles.background = self.context.color
            bar.styles.color = "white" if self.context.color in ("red", "blue", "magenta") else "black"
        for spec in PANES:
            self.pane(spec.id).fresh_s = 2 * self.intervals.get(spec.source, self.context.poll_interval_s)
        self._mounted = True
        self._render_header()
        self._activate(self.active_pane)
        self._render_all()
        self._review_rollout_access()  # a first snapshot may have come before the panes existed
        self._check_first_frame()
        self.set_interval(1.0, self._tick)
        self.call_after_refresh(self.heap.start)

    async def on_unmount(self) -> None:
        self.heap.stop()
        for poller in self.pollers.values():
            await poller.stop()
        if self.kube is not None:
            await self.kube.stop()
        await self.gateway.aclose()
        if self.engine is not None:
            await self.engine.aclose()
        if self.prometheus is not None:
            self.prometheus.close()

    def _start_pollers(self) -> None:
        for source, fetch in self.fetchers.items():
            poller: Poller[Any] = Poller(source, fetch, self.receive, interval_s=self.intervals[source],
                                         timeout_s=self.context.timeout_s, down_after_s=self.down_after_s)
            self.pollers[source] = poller
            poller.start()

    # ---- snapshots in ---------------------------------------------------------------------------

    def receive(self, observed: Observed[Any]) -> None:
        """The pollers' ``on_update``: the one way snapshots enter the app (tests use it too)."""
        if self.drawable:
            self.post_message(SourceUpdate(observed))
        elif not self._mounted:  # before the first frame: kept, and drawn on mount
            self.ingest(observed)
        # else the app is shutting down: a late answer has no screen to go to

    def on_source_update(self, message: SourceUpdate) -> None:
        self.ingest(message.observed)

    def ingest(self, observed: Observed[Any]) -> None:
        """Keep the snapshot; draw it unless paused (then it waits for resume)."""
        self.received[observed.source] = observed
        if not self.paused:
            self.show_snapshot(observed)
        else:
            self._render_header()

    def show_snapshot(self, observed: Observed[Any]) -> None:
        self.snapshots[observed.source] = observed
        if observed.source == "gateway" and observed.health is Health.LIVE and observed.data is not None:
            self.history.record(observed.data, observed.fetched_at)
        if self.drawable:  # before the first frame the snapshot waits for on_mount's draw
            self.redraw(observed.source)
            if observed.source == KUBE_SOURCE:
                self._render_header()  # the context's name and the SIMULATED mark come with the first snapshot
                self._review_rollout_access()
            self._check_first_frame()

    def _review_rollout_access(self) -> None:
        """Asks the cluster which rollout actions this user may take: on its first snapshot and on a context change."""
        snapshot = self.cluster()
        if self.kube is not None and snapshot is not None and self.rollouts.needs_review(snapshot):
            self.run_worker(self.rollouts.review(self.kube, snapshot.context, self._update_bindings),
                            group="rollout-access", exclusive=True, exit_on_error=False)

    def _check_first_frame(self) -> None:
        if self.first_full_frame_s is None and all(o.data is not None for o in self.snapshots.values()):
            self.call_after_refresh(self._mark_first_frame)

    def _mark_first_frame(self) -> None:
        if self.first_full_frame_s is None:
            self.first_full_frame_s = time.monotonic() - self.created_at

    @property
    def state(self) -> GatewayState | None:
        return self.snapshots["gateway"].data

    @property
    def held(self) -> bool:
        """Paused with newer snapshots waiting."""
        return any(self.received[s] is not self.snapshots[s] for s in self.snapshots)

    # ---- rendering ------------------------------------------------------------------------------

    def redraw(self, source: str) -> None:
        """Redraw the panes fed by ``source`` from the snapshot shown; a pane that fails says so in its title."""
        if not self.drawable:
            return
        now = self.clock()
        observed = self.snapshots.get(source)
        for spec in PANES:
            if source != spec.source and source not in spec.also:
                continue
            pane = self.pane(spec.id)
            try:
                spec.show(self, pane, observed, now)
            except Exception as exc:
                log.exception("the %s pane could not show its %s snapshot", spec.id, source)
                pane.show_health(observed, now, note=f"display failed: {type(exc).__name__}: {exc}")
        if source in ("gateway", "releases", "queue", KUBE_SOURCE):
            self._update_bindings()

    def _render_all(self) -> None:
        for source in {spec.source for spec in PANES}:
            self.redraw(source)

    def _tick(self) -> None:
        """Once a second: the ages in the pane titles move even when no poll answers (paused: same data)."""
        self._render_all()
        self.heap.tick()

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown):
            self.heap.input_seen()
        await super().on_event(event)

    def _render_header(self) -> None:
        if not self.drawable:
            return
        c = self.context
        header = Text.assemble((" Switchboard ", "bold"), context_badge(c.name, c.color, c.prod))
        header.append(clean(f" {c.admin_url}"))  # local config, but copied from anywhere: drawn safe all the same
        cluster = self.snapshots.get(KUBE_SOURCE)
        kube_name = c.kube_context or (cluster.data.context if cluster and cluster.data else None)
        if kube_name:
            header.append(clean(f"  kube {kube_name}" + (f"/{c.namespace}" if c.namespace else "")))
        if cluster is not None and cluster.data is not None and cluster.data.simulated:
            header.append("  ")
            header.append(" SIMULATED ", style="bold black on cyan")  # a test double, never mistaken for prod
        if self.operator:
            header.append(clean(f"  as {self.operator}"))
        if self.readonly:
            header.append("  ")
            header.append(" READ-ONLY ", style="bold black on yellow")
        if self.paused:
            header.append("  ")
            header.append(" PAUSED ", style="bold white on blue")
            if self.held:
                header.append(" newer data held", style="italic")
        if header == self._header:
            return  # Static.update lays the whole screen out again: not on every cluster snapshot
        self.query_one("#context-bar", Static).update(header)
        self._header = header

    # ---- panes and selection --------------------------------------------------------------------

    def _activate(self, pane_id: str, focus: bool = True) -> None:
        self.active_pane = pane_id
        with self.batch_update():  # one layout for the class changes, not one each
            for other in PANE_IDS:
                pane, active = self.pane(other), other == pane_id
                if pane.has_class("-active") != active or pane.has_class("-inactive") == active:
                    # Each styled class change restyles the pane's whole subtree: one restyle for the pair.
                    pane.set_class(active, "-active", update=False)
                    pane.set_class(not active, "-inactive", update=False)
                    pane.update_node_styles()
        if focus:
            self._focusing = pane_id
            self.set_focus(self.pane(pane_id).body)  # at once: keys already queued behind this one go there
        self._update_bindings()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        node: Widget | None = event.widget
        while node is not None and not isinstance(node, Pane):
            node = node.parent  # type: ignore[assignment]
        if not isinstance(node, Pane) or not node.id:
            return
        if self._focusing is not None:  # focus we asked for: ignore older focus events still in the queue
            if node.id == self._focusing:
                self._focusing = None
            return
        if node.id != self.active_pane:  # focus moved some other way (mouse, the screen's own Tab)
            self._activate(node.id, focus=False)

    def on_keyed_table_row_highlighted(self) -> None:
        self._update_bindings()

    def _update_bindings(self) -> None:
        """Refresh key bar and key states only when what the preconditions look at changed (cheap polls)."""
        if not self.drawable:
            return  # a highlight or a tick queued before shutdown, arriving after the panes are gone
        key = (self.action_state(), self.writing, self.active_pane, isinstance(self.screen, ModalScreen))
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()
            self._render_keybar()

    def _render_keybar(self) -> None:
        hints = []
        for action in CONSOLE_ACTIONS:
            if not action.show_in_footer:
                continue
            allowed = self.availability(action.id)
            if allowed is not False:
                hints.append(KeyHint(key_display(self.keys[action.id]), action.footer_label, bool(allowed)))
        self.query_one(KeyBar).show(hints)

    def selection(self) -> tuple[str | None, str | None]:
        if self.active_pane == "routing":
            picked = self.query_one(RoutingPane).selected
            return picked if picked else (None, None)
        if self.active_pane == "providers":
            return None, self.query_one(ProvidersPane).selected_target
        return None, None

    def selected_release(self) -> tuple[ReleaseState, int] | None:
        listing: ReleaseList | None = self.snapshots["releases"].data if "releases" in self.snapshots else None
        name = self.query_one(ReleasesPane).selected_release if self.active_pane == "releases" else None
        release = next((r for r in listing.releases if r.spec.name == name), None) if listing and name else None
        return None if release is None or listing is None else (release, listing.version)

    def selected_batch(self) -> tuple[BatchProgress, float] | None:
        queue: QueueSnapshot | None = self.snapshots["queue"].data if "queue" in self.snapshots else None
        batch_id = self.query_one(QueuePane).selected_batch if self.active_pane == "queue" else None
        batch = next((b for b in queue.batches if b.id == batch_id), None) if queue and batch_id else None
        return None if batch is None else (batch, time.time())

    def cluster(self) -> KubeSnapshot | None:
        observed = self.snapshots.get(KUBE_SOURCE)
        return observed.data if observed is not None else None

    def selected_rollout(self) -> tuple[dict[str, Any], KubeSnapshot] | None:
        key = self.query_one(ReleasesPane).selected_release if self.active_pane == "releases" else None
        snapshot = self.cluster()
        rollout = find_rollout(snapshot, key)
        return None if rollout is None or snapshot is None else (rollout, snapshot)

    def action_state(self) -> ActionState:
        state = self.state
        (pool, target), release, rollout, batch = (None, None), None, None, None
        if self.drawable:  # before mount and while shutting down Textual still asks which keys apply; no panes
            pool, target = self.selection()
            release, rollout, batch = self.selected_release(), self.selected_rollout(), self.selected_batch()
        drained = False
        if state is not None and target is not None:
            drained = next((t.drained for t in state.targets if t.name == target), False)
        return ActionState(readonly=self.readonly, selected_pool=pool, selected_target=target,
                           has_staged=self.staged is not None, target_drained=drained,
                           state_loaded=state is not None, release_phase=release[0].phase if release else None,
                           release_aborted=bool(release and release[0].aborted),
                           batch_status=batch[0].status if batch else None,
                           **self.rollouts.state_fields(*(rollout or (None, None))))

    # ---- what may run ---------------------------------------------------------------------------

    def availability(self, action_id: str) -> bool | None:
        """True: may run; None: shown greyed (not now); False: hidden."""
        action = REGISTRY[action_id]
        if action.priority and isinstance(self.screen, ModalScreen):
            return False  # priority bindings must not steal Tab / ctrl+p from a dialog
        if action.hidden_when_readonly and self.readonly:
            return False
        if action.writes and self.writing:
            return None
        return None if action.unavailable(self.action_state()) else True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "act" and parameters:
            return self.availability(str(parameters[0]))
        if action == "previous_pane" and isinstance(self.screen, ModalScreen):
            return False
        return True

    def action_act(self, action_id: str) -> None:
        """Every registry key lands here: the action's own flow does the rest."""
        perform = REGISTRY[action_id].perform
        if perform is not None:
            perform(self)

    def set_readonly(self, readonly: bool) -> None:
        self.readonly = readonly
        if readonly:
            self.staged = None
        self._render_header()
        self.redraw("gateway")
        self._update_bindings()

    def palette_entries(self) -> list[tuple[str, str, str]]:
        return [(a.id, f"{a.description} ({key_display(self.keys[a.id])})", a.footer_label)
                for a in visible_actions(self.readonly) if a.id != "palette"]

    def run_registry_action(self, action_id: str) -> None:
        """The palette's path: the same action its key runs, or a note saying why it cannot run now."""
        action = REGISTRY[action_id]
        reason = action.unavailable(self.action_state())
        if reason:
            self.notify(reason, title=action.description, severity="warning")
            return
        self.call_later(self.run_action, f"act({action_id!r})")

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every notice passes here: server messages in it go through the sanitizer, never as markup."""
        message, title = clean(message), clean(title)
        self.notices.append((str(severity), title, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # ---- the ConsoleHost side: what actions ask of the shell ------------------------------------

    def action_focus_pane(self, number: int) -> None:
        if 1 <= number <= len(PANE_IDS):
            self._activate(PANE_IDS[number - 1])

    def focus_next_pane(self) -> None:
        self._activate(PANE_IDS[(PANE_IDS.index(self.active_pane) + 1) % len(PANE_IDS)])

    def action_previous_pane(self) -> None:
        self._activate(PANE_IDS[(PANE_IDS.index(self.active_pane) - 1) % len(PANE_IDS)])

    def refresh_sources(self) -> None:
        """Poll every source now; while paused, poll once and show the answer (the operator asked for it)."""
        for poller in self.pollers.values():
            if self.paused:
                self.run_worker(self._refresh_shown(poller), group=f"refresh-{poller.source}", exclusive=True)
            else:
                poller.refresh_now()

    async def _refresh_shown(self, poller: Poller[Any]) -> None:
        self.show_snapshot(await poller.poll_once())
        self._render_header()

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        for poller in self.pollers.values():
            poller.paused = self.paused
        if not self.paused:
            for observed in list(self.received.values()):
                if observed is not self.snapshots.get(observed.source):
                    self.show_snapshot(observed)
        self._render_header()
        self.notify("refresh paused (p resumes)" if self.paused else "refresh resumed", title="Polling")

    def show_help(self) -> None:
        state = self.action_state()
        rows = [HelpRow(key_display(self.keys[a.id]), a.description, a.unavailable(state) or "")
                for a in visible_actions(self.readonly)]
        navigation = [HelpRow(str(n % 10), f"Jump to the {spec.title} pane") for n, spec in enumerate(PANES, 1)]
        navigation.append(HelpRow("shift+tab", "Focus the previous pane"))
        navigation.append(HelpRow("↑ ↓", "Select a row (Routing: the target +/- and d/u act on)"))
        navigation.append(HelpRow("shift+↑ ↓", "Releases: scroll the selected release's detail"))
        navigation.append(HelpRow("/", "GPU pods: filter by pod, workload or node (escape clears)"))
        navigation.append(HelpRow("space", "Benchmarks: mark the run to compare (A, then B)"))
        self.push_screen(HelpScreen(rows, navigation, self.readonly))

    def open_benchmark(self) -> None:
        c = self.context
        self.push_screen(BenchFormScreen(self.bench, c.name, c.color, c.prod), self._start_benchmark)

    def _start_benchmark(self, spec: BenchSpec | None) -> None:
        if spec is not None:
            self.run_worker(self.bench.run(spec, self), group="bench", exclusive=True, exit_on_error=False)
            self._activate("benchmarks")

    def open_palette(self) -> None:
        self.action_command_palette()

    def quit(self) -> None:
        self.exit()

    def ask_confirmation(self, title: str, change: str, danger: Danger, confirm_name: str,
                         then: Callable[[str | None], None], warning: str = "") -> None:
        c = self.context
        confirmation = Confirmation(title=title, change=change, danger=danger, context=c.name,
                                    context_color=c.color, prod=c.prod,
                                    type_to_confirm=confirm_name if c.prod else None, warning=warning)
        self.push_screen(ConfirmScreen(confirmation), then)

    def run_write(self, write: Coroutine[Any, Any, None]) -> None:
        self.writing = True
        self._update_bindings()
        self.run_worker(self._finish_write(write), group="write", exclusive=True, exit_on_error=False)

    async def _finish_write(self, write: Coroutine[Any, Any, None]) -> None:
        try:
            await write
        finally:
            self.writing = False
            self.refresh_sources()
            self.redraw("gateway")

    def adopt(self, state: GatewayState) -> None:
        """Show the state a write answered with (or a 409 carried) at once, as the gateway's latest, paused or not."""
        observed = Observed("gateway", state, self.clock(), Health.LIVE, None)
        if "gateway" in self.pollers:
            self.pollers["gateway"].snapshot = observed
        self.received["gateway"] = observed
        self.show_snapshot(observed)


def create_app(
    context: Context,
    *,
    readonly: bool = False,
    keys: Mapping[str, str] | None = None,
    operator: str | None = None,
    clock: Callable[[], float] | None = None,
    poll: bool = True,
    intervals: Mapping[str, float] | None = None,
    down_after_s: float | None = None,
) -> SwitchboardApp:
    """The app with real collectors built from the context (tests point them at a loopback gateway).

    ``readonly`` or the context's ``readonly`` hides every write; ``keys`` remaps by action id (unknown
    ids raise ValueError); ``clock`` is the monotonic clock data ages are measured with; ``poll=False``
    starts no pollers (snapshots then come only through ``app.receive``).
    """
    gateway = GatewayClient(context.admin_url, context.token(), operator, context.timeout_s)
    engine = EngineClient(context.engine_url, context.timeout_s) if context.engine_url else None
    prometheus = PrometheusClient(context.prometheus_url, context.timeout_s) if context.prometheus_url else None
    intervals = {**context.poll_intervals, **(intervals or {})}
    kube = None
    if context.watches_cluster:  # configured by the context (the local one: the stack's kubesim), never implied
        kube = KubeSource(context.kubeconfig, context.kube_context, context.namespace, lambda _: None,
                          interval_s=context.poll_interval_s, timeout_s=max(context.timeout_s, 5.0))
    return SwitchboardApp(context, gateway, engine, readonly=readonly, keys=keys, operator=operator, clock=clock,
                          poll=poll, intervals=intervals, down_after_s=down_after_s, kube=kube,
                          prometheus=prometheus)


def run_console(context: Context, *, readonly: bool = False, keys: Mapping[str, str] | None = None,
                operator: str | None = None) -> int:
    """Run the console in this terminal until the operator quits; the exit status for the CLI."""
    try:
        app = create_app(context, readonly=readonly, keys=keys, operator=operator or default_operator())
    except (ContextError, ValueError) as exc:
        print(f"switchboard console: {exc}", file=sys.stderr)
        return 2
    app.run()
    return app.return_code or 0
