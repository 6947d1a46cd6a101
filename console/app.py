"""The on-call console: a Textual app that polls the gateway, its audit log and the engine, and writes
through the action registry.

Data flow: one ``Poller`` per source (console.sources) hands each new ``Observed`` snapshot to
``SwitchboardApp.receive``; the app keeps the latest snapshot per source and a small per-target trend
history, and hands them to the panes, which only render. Keys, footer, help and command palette all
come from ``console.actions``; writes go through its shared operations after a confirm dialog.

Entry points: ``create_app(context, ...)`` (tests, benchmarks) and ``run_console(context, ...)`` (CLI).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static

from console.actions import (
    ACTIONS,
    REGISTRY,
    WEIGHT_STEP,
    Action,
    ActionState,
    Danger,
    StagedWeights,
    apply_weights,
    keymap,
    set_drained,
    stage_shift,
    visible_actions,
)
from console.contexts import Context, ContextError, default_operator
from console.panes import AuditPane, EnginePane, Pane, ProvidersPane, RoutingPane
from console.panes.keybar import KeyBar, KeyHint
from console.screens import ActionCommands, Confirmation, ConfirmScreen, HelpRow, HelpScreen, context_badge
from console.sources.engine import EngineClient
from console.sources.gateway import AdminError, Conflict, GatewayClient, SourceDown
from console.sources.poller import Health, Observed, Poller
from services.admin_api import AuditPage, GatewayState
from services.backend.metrics import EngineMetrics

AUDIT_LIMIT = 50
TREND_POINTS = 180  # per target: 3 minutes at the default 1 s interval
PANE_IDS = ("providers", "routing", "engine", "audit")  # digit keys 1.. in this order

# Footer labels (the registry's descriptions are for help and the palette).
FOOTER_LABELS = {
    "shift_up": f"+{WEIGHT_STEP}",
    "shift_down": f"-{WEIGHT_STEP}",
    "apply_weights": "Apply",
    "discard_weights": "Discard",
    "drain": "Drain",
    "undrain": "Undrain",
    "refresh": "Refresh",
    "pause": "Pause",
    "help": "Help",
    "palette": "Palette",
    "next_pane": "Next pane",
    "quit": "Quit",
}
# Registry ids whose Textual action has another name.
BINDING_ACTIONS = {"palette": "command_palette"}
KEY_NAMES = {"plus": "+", "minus": "-", "question_mark": "?"}


def footer_label(action: Action) -> str:
    return FOOTER_LABELS.get(action.id, action.description.split(" ")[0])


def registry_bindings() -> list[BindingType]:
    """One Binding per registry action (``id`` = the action id, so ``keys:`` remaps it), then pane jumps."""
    bindings: list[BindingType] = [
        Binding(a.key, BINDING_ACTIONS.get(a.id, a.id), footer_label(a), show=a.show_in_footer, id=a.id,
                tooltip=a.description, priority=a.id in ("next_pane", "palette"))
        for a in ACTIONS
    ]
    bindings.append(Binding("shift+tab", "previous_pane", "Previous pane", show=False, priority=True))
    bindings += [Binding(str(n), f"focus_pane({n})", f"Pane {n}", show=False) for n in range(1, len(PANE_IDS) + 1)]
    return bindings


def key_display(key: str) -> str:
    return ", ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))


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
    CSS = """
    #context-bar { dock: top; height: 1; background: $panel; color: $text; }
    #panes { layout: grid; grid-size: 2 3; grid-columns: 1fr 48; grid-rows: 1fr 1fr 1fr; }
    #providers, #audit { column-span: 2; }
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
    COMMAND_PALETTE_BINDING = REGISTRY["palette"].key

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
    ) -> None:
        super().__init__()
        self.context = context
        self.gateway = gateway
        self.engine = engine
        self.readonly = readonly or context.readonly
        self.keys = keymap(dict(keys or {}))
        self.operator = operator
        self.clock = clock or time.monotonic
        self.poll = poll
        interval = context.poll_interval_s
        self.intervals = {"gateway": interval, "engine": 2 * interval, "audit": 2 * interval}
        self.intervals.update(intervals or {})
        self.down_after_s = down_after_s or max(10.0, 3 * (interval + context.timeout_s))
        self.paused = False
        self.writing = False
        self.staged: StagedWeights | None = None
        self.snapshots: dict[str, Observed[Any]] = {
            "gateway": Observed("gateway"), "audit": Observed("audit")}
        if engine is not None:
            self.snapshots["engine"] = Observed("engine")
        self.history = TrendHistory()
        self.pollers: dict[str, Poller[Any]] = {}
        self.notices: list[tuple[str, str, str]] = []  # (severity, title, message), for tests and logs
        self.active_pane = PANE_IDS[0]
        self.created_at = time.monotonic()
        self.first_full_frame_s: float | None = None
        self._mounted = False
        self._bindings_key: tuple[Any, ...] | None = None
        self._focusing: str | None = None

    # ---- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="context-bar")
        with Container(id="panes"):
            yield ProvidersPane("1", id="providers")
            yield RoutingPane("2", id="routing")
            yield EnginePane("3", id="engine")
            yield AuditPane("4", id="audit")
        yield KeyBar(id="keys")

    def pane(self, pane_id: str) -> Pane:
        return self.query_one(f"#{pane_id}", Pane)

    def on_load(self) -> None:
        """Polls start before the widgets exist, so the first answers race Textual's start-up, not follow it."""
        if self.poll:
            self._start_pollers()

    async def on_mount(self) -> None:
        self.set_keymap(self.keys)
        if self.context.prod:
            bar = self.query_one("#context-bar", Static)
            bar.styles.background = self.context.color
            bar.styles.color = "white" if self.context.color in ("red", "blue", "magenta") else "black"
        for pane_id, source in (("providers", "gateway"), ("routing", "gateway"), ("audit", "audit"),
                                ("engine", "engine")):
            self.pane(pane_id).fresh_s = 2 * self.intervals[source]
        self._mounted = True
        self._render_header()
        self._activate(self.active_pane)
        self._render_all()
        self._check_first_frame()
        self.set_interval(1.0, self._tick)

    async def on_unmount(self) -> None:
        for poller in self.pollers.values():
            await poller.stop()
        await self.gateway.aclose()
        if self.engine is not None:
            await self.engine.aclose()

    def _start_pollers(self) -> None:
        fetchers: dict[str, Callable[[], Awaitable[Any]]] = {
            "gateway": self.gateway.state,
            "audit": lambda: self.gateway.audit(limit=AUDIT_LIMIT),
        }
        if self.engine is not None:
            fetchers["engine"] = self.engine.metrics
        for source, fetch in fetchers.items():
            poller: Poller[Any] = Poller(source, fetch, self.receive, interval_s=self.intervals[source],
                                         timeout_s=self.context.timeout_s, down_after_s=self.down_after_s)
            self.pollers[source] = poller
            poller.start()

    # ---- snapshots in ---------------------------------------------------------------------------

    def receive(self, observed: Observed[Any]) -> None:
        """The pollers' ``on_update``: the one way snapshots enter the app (tests use it too)."""
        if self._mounted and self.is_running:
            self.post_message(SourceUpdate(observed))
        else:
            self.ingest(observed)

    def on_source_update(self, message: SourceUpdate) -> None:
        self.ingest(message.observed)

    def ingest(self, observed: Observed[Any]) -> None:
        self.snapshots[observed.source] = observed
        if observed.source == "gateway" and observed.health is Health.LIVE and observed.data is not None:
            self.history.record(observed.data, observed.fetched_at)
        if self._mounted:
            self._render_source(observed.source)
            self._check_first_frame()

    def _check_first_frame(self) -> None:
        if self.first_full_frame_s is None and all(o.data is not None for o in self.snapshots.values()):
            self.call_after_refresh(self._mark_first_frame)

    def _mark_first_frame(self) -> None:
        if self.first_full_frame_s is None:
            self.first_full_frame_s = time.monotonic() - self.created_at

    @property
    def state(self) -> GatewayState | None:
        return self.snapshots["gateway"].data

    # ---- rendering ------------------------------------------------------------------------------

    def _render_source(self, source: str) -> None:
        try:
            self._render_panes(source)
        except NoMatches:  # the app is shutting down and its panes are gone; a late snapshot has no place
            pass

    def _render_panes(self, source: str) -> None:
        now = self.clock()
        if source == "gateway":
            gateway: Observed[GatewayState] = self.snapshots["gateway"]
            self.query_one(ProvidersPane).show(gateway, self.history.trends(), now)
            self.query_one(RoutingPane).show(gateway, self.staged, now)
            self._update_bindings()
        elif source == "audit":
            audit: Observed[AuditPage] = self.snapshots["audit"]
            self.query_one(AuditPane).show(audit, now)
        elif source == "engine":
            engine: Observed[EngineMetrics] | None = self.snapshots.get("engine")
            self.query_one(EnginePane).show(engine, now)

    def _render_all(self) -> None:
        for source in ("gateway", "audit", "engine"):
            self._render_source(source)

    def _tick(self) -> None:
        """Once a second: the ages in the pane titles move even when no poll answers."""
        self._render_all()

    def _render_header(self) -> None:
        c = self.context
        header = Text.assemble((" Switchboard ", "bold"), context_badge(c.name, c.color, c.prod))
        header.append(f" {c.admin_url}")
        if c.kube_context:
            header.append(f"  kube {c.kube_context}" + (f"/{c.namespace}" if c.namespace else ""))
        if self.operator:
            header.append(f"  as {self.operator}")
        if self.readonly:
            header.append("  ")
            header.append(" READ-ONLY ", style="bold black on yellow")
        if self.paused:
            header.append("  ")
            header.append(" PAUSED ", style="bold white on blue")
        self.query_one("#context-bar", Static).update(header)

    # ---- panes and selection --------------------------------------------------------------------

    def _activate(self, pane_id: str, focus: bool = True) -> None:
        self.active_pane = pane_id
        for other in PANE_IDS:
            pane = self.pane(other)
            pane.set_class(other == pane_id, "-active")
            pane.set_class(other != pane_id, "-inactive")
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
        """Refresh footer and key states only when what the preconditions look at changed (cheap polls)."""
        key = (self.action_state(), self.writing, self.active_pane, isinstance(self.screen, ModalScreen))
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()
            self._render_keybar()

    def _render_keybar(self) -> None:
        hints = []
        for action in ACTIONS:
            if not action.show_in_footer:
                continue
            allowed = self.check_action(BINDING_ACTIONS.get(action.id, action.id), ())
            if allowed is not False:
                hints.append(KeyHint(key_display(self.keys[action.id]), footer_label(action), bool(allowed)))
        self.query_one(KeyBar).show(hints)

    def selection(self) -> tuple[str | None, str | None]:
        if self.active_pane == "routing":
            picked = self.query_one(RoutingPane).selected
            return picked if picked else (None, None)
        if self.active_pane == "providers":
            return None, self.query_one(ProvidersPane).selected_target
        return None, None

    def action_state(self) -> ActionState:
        state = self.state
        pool, target = self.selection() if self._mounted else (None, None)
        drained = False
        if state is not None and target is not None:
            drained = next((t.drained for t in state.targets if t.name == target), False)
        return ActionState(readonly=self.readonly, selected_pool=pool, selected_target=target,
                           has_staged=self.staged is not None, target_drained=drained,
                           state_loaded=state is not None)

    # ---- what may run ---------------------------------------------------------------------------

    def _registry_action(self, textual_action: str) -> Action | None:
        for action_id, name in BINDING_ACTIONS.items():
            if name == textual_action:
                return REGISTRY[action_id]
        return REGISTRY.get(textual_action)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("next_pane", "previous_pane", "command_palette") and isinstance(self.screen, ModalScreen):
            return False  # priority bindings must not steal Tab / ctrl+p from a dialog
        registered = self._registry_action(action)
        if registered is None:
            return True
        if registered.hidden_when_readonly and self.readonly:
            return False  # hidden, not greyed
        if registered.writes and self.writing:
            return None
        return None if registered.unavailable(self.action_state()) else True

    def set_readonly(self, readonly: bool) -> None:
        self.readonly = readonly
        if readonly:
            self.staged = None
        self._render_header()
        self._render_source("gateway")
        self._update_bindings()

    def palette_entries(self) -> list[tuple[str, str, str]]:
        return [(a.id, f"{a.description} ({key_display(self.keys[a.id])})", footer_label(a))
                for a in visible_actions(self.readonly) if a.id != "palette"]

    def run_registry_action(self, action_id: str) -> None:
        """The palette's path: the same action its key runs, or a note saying why it cannot run now."""
        action = REGISTRY[action_id]
        reason = action.unavailable(self.action_state())
        if reason:
            self.notify(reason, title=action.description, severity="warning")
            return
        self.call_later(self.run_action, BINDING_ACTIONS.get(action_id, action_id))

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        self.notices.append((str(severity), title, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # ---- navigation and refresh actions ---------------------------------------------------------

    def action_focus_pane(self, number: int) -> None:
        if 1 <= number <= len(PANE_IDS):
            self._activate(PANE_IDS[number - 1])

    def action_next_pane(self) -> None:
        self._activate(PANE_IDS[(PANE_IDS.index(self.active_pane) + 1) % len(PANE_IDS)])

    def action_previous_pane(self) -> None:
        self._activate(PANE_IDS[(PANE_IDS.index(self.active_pane) - 1) % len(PANE_IDS)])

    def action_refresh(self) -> None:
        for poller in self.pollers.values():
            if poller.paused:
                self.run_worker(poller.poll_once(), group=f"refresh-{poller.source}", exclusive=True)
            else:
                poller.refresh_now()

    def action_pause(self) -> None:
        self.paused = not self.paused
        for poller in self.pollers.values():
            poller.paused = self.paused
        self._render_header()
        self.notify("refresh paused (p resumes)" if self.paused else "refresh resumed", title="Polling")

    def action_help(self) -> None:
        state = self.action_state()
        rows = [HelpRow(key_display(self.keys[a.id]), a.description, a.unavailable(state) or "")
                for a in visible_actions(self.readonly)]
        navigation = [HelpRow(str(n), f"Jump to the {pane_id.capitalize()} pane")
                      for n, pane_id in enumerate(PANE_IDS, 1)]
        navigation.append(HelpRow("shift+tab", "Focus the previous pane"))
        navigation.append(HelpRow("↑ ↓", "Select a row (Routing: the target +/- and d/u act on)"))
        self.push_screen(HelpScreen(rows, navigation, self.readonly))

    # ---- staging --------------------------------------------------------------------------------

    def _shift(self, delta: int) -> None:
        pool, target = self.selection()
        if self.state is None or pool is None or target is None:
            return
        self.staged = stage_shift(self.state, self.staged, pool, target, delta)
        if not self.staged.changed:
            self.staged = None
        self._render_source("gateway")

    def action_shift_up(self) -> None:
        self._shift(WEIGHT_STEP)

    def action_shift_down(self) -> None:
        self._shift(-WEIGHT_STEP)

    def action_discard_weights(self) -> None:
        self.staged = None
        self._render_source("gateway")
        self.notify("staged weights discarded", title="Routing")

    # ---- writes ---------------------------------------------------------------------------------

    def _confirmation(self, title: str, change: str, danger: Danger, name: str) -> Confirmation:
        c = self.context
        return Confirmation(title=title, change=change, danger=danger, context=c.name, context_color=c.color,
                            prod=c.prod, type_to_confirm=name if c.prod else None)

    def action_apply_weights(self) -> None:
        staged = self.staged
        if staged is None:
            return
        change = f"{staged.describe()}  (based on version {staged.base_version})"
        confirmation = self._confirmation("Apply weights", change, REGISTRY["apply_weights"].danger, staged.pool)
        self._confirm_then(confirmation, lambda reason: apply_weights(self.gateway, staged, reason),
                           f"weights applied: {staged.describe()}", clears_staged=True)

    def _drain(self, drained: bool) -> None:
        _, target = self.selection()
        state = self.state
        if target is None or state is None:
            return
        action = REGISTRY["drain" if drained else "undrain"]
        verb = "drain" if drained else "undrain"
        confirmation = self._confirmation(action.description, f"{verb} target {target}  (version {state.version})",
                                          action.danger, target)
        version = state.version
        self._confirm_then(confirmation, lambda reason: set_drained(self.gateway, target, drained, reason, version),
                           f"{verb}ed target {target}", clears_staged=False)

    def action_drain(self) -> None:
        self._drain(True)

    def action_undrain(self) -> None:
        self._drain(False)

    def _confirm_then(self, confirmation: Confirmation, operation: Callable[[str], Awaitable[GatewayState]],
                      done: str, clears_staged: bool) -> None:
        def confirmed(reason: str | None) -> None:
            if reason is None:
                self.notify("cancelled: nothing changed", title=confirmation.title)
                return
            self.writing = True
            self._update_bindings()
            self.run_worker(self._write(operation, reason, done, clears_staged), group="write", exclusive=True,
                            exit_on_error=False)

        self.push_screen(ConfirmScreen(confirmation), confirmed)

    async def _write(self, operation: Callable[[str], Awaitable[GatewayState]], reason: str, done: str,
                     clears_staged: bool) -> None:
        try:
            state = await operation(reason)
        except Conflict as exc:
            self.staged = None
            self._adopt(exc.current)
            self.notify(exc.message, title="Conflict: nothing changed", severity="error", timeout=20)
        except AdminError as exc:
            if exc.status == 403 and exc.code == "read_only":
                self.notify(f"{exc.message}; switched to read-only", title="Read-only token", severity="error",
                            timeout=20)
                self.set_readonly(True)
            else:
                self.notify(exc.message, title=f"Refused ({exc.status}): nothing changed", severity="error",
                            timeout=20)
        except SourceDown as exc:
            self.notify(f"{exc}; the change may or may not have been applied: check the Audit pane",
                        title="No answer from the gateway", severity="error", timeout=20)
        else:
            if clears_staged:
                self.staged = None
            self._adopt(state)
            self.notify(done, title="Applied")
        finally:
            self.writing = False
            self.action_refresh()
            self._render_source("gateway")

    def _adopt(self, state: GatewayState) -> None:
        """Show the state a write answered with (or a 409 carried) at once, as the gateway's latest."""
        observed = Observed("gateway", state, self.clock(), Health.LIVE, None)
        if "gateway" in self.pollers:
            self.pollers["gateway"].snapshot = observed
        self.ingest(observed)


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
    intervals = {**context.poll_intervals, **(intervals or {})}
    return SwitchboardApp(context, gateway, engine, readonly=readonly, keys=keys, operator=operator, clock=clock,
                          poll=poll, intervals=intervals, down_after_s=down_after_s)


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
