"""The one registry of console actions: keys, footer, help, command palette and CLI verbs come from here.

An action has an id (what users remap keys by, in the console config's ``keys``), a default key, a
description, a danger level, and a precondition that says why it cannot run now. Writes are never
offered in read-only mode. The write operations themselves live here too, so the TUI and the CLI
verbs send exactly the same requests.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from console.sources.gateway import GatewayClient
from services.admin_api import GatewayState

WEIGHT_STEP = 5


class Danger(enum.IntEnum):
    SAFE = 0  # reads, navigation
    WRITE = 1  # changes routing; confirmed, attributed, audited
    DESTRUCTIVE = 2  # takes capacity away (drain); the confirm modal says so


@dataclass(frozen=True)
class ActionState:
    """What preconditions look at: the UI's selection and mode, never widgets."""

    readonly: bool = False
    selected_pool: str | None = None
    selected_target: str | None = None
    has_staged: bool = False
    target_drained: bool = False
    state_loaded: bool = False


Precondition = Callable[[ActionState], str | None]


def _always(_: ActionState) -> str | None:
    return None


def _needs_target(s: ActionState) -> str | None:
    if not s.state_loaded:
        return "no gateway state yet"
    return None if s.selected_target else "select a target in the Routing pane"


def _needs_staged(s: ActionState) -> str | None:
    return None if s.has_staged else "no staged weight change"


def _needs_pool_target(s: ActionState) -> str | None:
    return _needs_target(s) or (None if s.selected_pool else "select a target inside a pool")


def _needs_undrained(s: ActionState) -> str | None:
    return _needs_target(s) or ("target is already drained" if s.target_drained else None)


def _needs_drained(s: ActionState) -> str | None:
    return _needs_target(s) or (None if s.target_drained else "target is not drained")


@dataclass(frozen=True)
class Action:
    id: str
    key: str
    description: str
    danger: Danger = Danger.SAFE
    precondition: Precondition = _always
    show_in_footer: bool = True
    cli_verb: str | None = None  # the `switchboard` subcommand that runs the same operation
    stages: bool = False  # prepares a write (staging weights): pointless, so hidden, in read-only mode

    @property
    def writes(self) -> bool:
        return self.danger >= Danger.WRITE

    @property
    def hidden_when_readonly(self) -> bool:
        return self.writes or self.stages

    def unavailable(self, state: ActionState) -> str | None:
        """Why the action cannot run now, or None when it can."""
        if self.hidden_when_readonly and state.readonly:
            return "read-only"
        return self.precondition(state)


ACTIONS: tuple[Action, ...] = (
    Action("shift_up", "plus", f"Move {WEIGHT_STEP} weight points to the selected target", Danger.SAFE,
           _needs_pool_target, stages=True),
    Action("shift_down", "minus", f"Move {WEIGHT_STEP} weight points away from the selected target", Danger.SAFE,
           _needs_pool_target, stages=True),
    Action("apply_weights", "a", "Apply the staged weights (asks for a reason)", Danger.WRITE, _needs_staged,
           cli_verb="weights set"),
    Action("discard_weights", "x", "Discard the staged weights", Danger.SAFE, _needs_staged, stages=True),
    Action("drain", "d", "Drain the selected target (no new requests)", Danger.DESTRUCTIVE, _needs_undrained,
           cli_verb="drain"),
    Action("undrain", "u", "Undrain the selected target", Danger.WRITE, _needs_drained, cli_verb="undrain"),
    Action("refresh", "r", "Refresh every source now", cli_verb="status"),
    Action("pause", "p", "Pause or resume refreshing"),
    Action("help", "question_mark", "Show keys and actions"),
    Action("palette", "ctrl+p", "Command palette", show_in_footer=False),
    Action("next_pane", "tab", "Focus the next pane", show_in_footer=False),
    Action("quit", "q", "Quit"),
)
REGISTRY: dict[str, Action] = {action.id: action for action in ACTIONS}


def keymap(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Action id -> key, with the user's remappings (unknown ids are an error, not ignored)."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(REGISTRY))
    if unknown:
        raise ValueError(f"keys: unknown action id(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return {action.id: overrides.get(action.id, action.key) for action in ACTIONS}


def visible_actions(readonly: bool) -> list[Action]:
    """What the footer, help and palette offer: in read-only mode writes (and staging) are hidden, not greyed."""
    return [action for action in ACTIONS if not (readonly and action.hidden_when_readonly)]


# ---- staged weights -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedWeights:
    """A weight change shown as old -> new until it is applied or discarded."""

    pool: str
    base_version: int
    before: dict[str, int]
    after: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> dict[str, int]:
        return {t: w for t, w in self.after.items() if self.before.get(t) != w}

    def describe(self) -> str:
        parts = [f"{t} {self.before[t]} -> {w}" for t, w in self.after.items() if self.before.get(t) != w]
        return f"pool {self.pool}: " + (", ".join(parts) if parts else "no change")


def shift(weights: dict[str, int], target: str, delta: int) -> dict[str, int]:
    """Move ``delta`` points to ``target`` (negative: away from it) from or to the pool's other
    targets, one point at a time from the heaviest (or to the lightest) other target, so the
    pool's total and every weight's 0-100 range are kept."""
    if target not in weights:
        raise KeyError(target)
    result = dict(weights)
    others = sorted(t for t in weights if t != target)
    if not others:
        return result
    for _ in range(abs(delta)):
        if delta > 0:
            donors = [t for t in others if result[t] > 0]
            if not donors or result[target] >= 100:
                break
            donor = max(donors, key=lambda t: (result[t], t))
            result[donor] -= 1
            result[target] += 1
        else:
            takers = [t for t in others if result[t] < 100]
            if not takers or result[target] <= 0:
                break
            taker = min(takers, key=lambda t: (result[t], t))
            result[taker] += 1
            result[target] -= 1
    return result


def stage_shift(state: GatewayState, staged: StagedWeights | None, pool: str, target: str,
                delta: int) -> StagedWeights:
    """Stage (or extend a staged) shift; staging in another pool starts over from its live weights."""
    if staged is None or staged.pool != pool:
        current = next(p.weights for p in state.pools if p.name == pool)
        staged = StagedWeights(pool, state.version, dict(current), dict(current))
    return StagedWeights(staged.pool, staged.base_version, staged.before, shift(staged.after, target, delta))


# ---- operations shared by the TUI and the CLI -------------------------------------------------------


async def apply_weights(client: GatewayClient, staged: StagedWeights, reason: str) -> GatewayState:
    """Send the staged change based on the version it was staged from (a concurrent change -> Conflict)."""
    return await client.set_weights(staged.pool, staged.changed or staged.after, staged.base_version, reason)


async def set_drained(client: GatewayClient, target: str, drained: bool, reason: str,
                      base_version: int | None) -> GatewayState:
    return await client.set_drained(target, drained, reason, base_version)


def health_exit_code(state: GatewayState | None) -> int:
    """`switchboard status`: 0 healthy, 1 degraded, 2 unreachable."""
    if state is None:
        return 2
    troubled = [t for t in state.targets if t.enabled and t.status not in ("healthy", "drained")]
    return 1 if (not state.ready or state.degraded or troubled) else 0
