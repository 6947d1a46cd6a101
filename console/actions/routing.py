"""Routing actions: stage a weight shift, apply or discard it, drain and undrain a target.

The operations (``apply_weights``, ``set_drained``) are what both the console and the CLI verbs send;
the ``perform`` functions are the console's flows (staging, confirm, write) and the ``cli_*`` functions
the verbs'. Every write sends the state version it was built on, so a concurrent change is a 409.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from console.actions.base import Action, ActionState, CliVerb, ConsoleHost, Danger, UsageError, say
from console.actions.writes import WriteRequest, confirm_then_write
from console.sources.gateway import GatewayClient
from services.admin_api import GatewayState

WEIGHT_STEP = 5


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


# ---- operations shared by the console and the CLI ------------------------------------------------


async def apply_weights(client: GatewayClient, staged: StagedWeights, reason: str) -> GatewayState:
    """Send the staged change based on the version it was staged from (a concurrent change -> Conflict)."""
    return await client.set_weights(staged.pool, staged.changed or staged.after, staged.base_version, reason)


async def set_drained(client: GatewayClient, target: str, drained: bool, reason: str,
                      base_version: int | None) -> GatewayState:
    return await client.set_drained(target, drained, reason, base_version)


# ---- preconditions ------------------------------------------------------------------------------


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


# ---- the console's flows ------------------------------------------------------------------------


def _shift(host: ConsoleHost, delta: int) -> None:
    pool, target = host.selection()
    state = host.state
    if state is None or pool is None or target is None:
        return
    staged = stage_shift(state, host.staged, pool, target, delta)
    host.staged = staged if staged.changed else None
    host.redraw("gateway")


def shift_up(host: ConsoleHost) -> None:
    _shift(host, WEIGHT_STEP)


def shift_down(host: ConsoleHost) -> None:
    _shift(host, -WEIGHT_STEP)


def discard_weights(host: ConsoleHost) -> None:
    host.staged = None
    host.redraw("gateway")
    host.notify("staged weights discarded", title="Routing")


def _drop_staged(host: ConsoleHost) -> None:
    """A 409 means the staged change was built on a state that is gone: it is dropped, not re-based."""
    host.staged = None


def _adopt(host: ConsoleHost, state: GatewayState) -> None:
    host.adopt(state)


def _adopt_and_clear(host: ConsoleHost, state: GatewayState) -> None:
    host.staged = None
    host.adopt(state)


def apply_staged(host: ConsoleHost) -> None:
    staged = host.staged
    if staged is None:
        return
    gateway = host.gateway
    confirm_then_write(host, WriteRequest(
        title="Apply weights",
        change=f"{staged.describe()}  (based on version {staged.base_version})",
        danger=APPLY.danger,
        confirm_name=staged.pool,
        operation=lambda reason: apply_weights(gateway, staged, reason),
        done=f"weights applied: {staged.describe()}",
        on_success=_adopt_and_clear,
        on_conflict=_drop_staged,
    ))


def _drain(host: ConsoleHost, drained: bool) -> None:
    _, target = host.selection()
    state = host.state
    if target is None or state is None:
        return
    action, verb, version, gateway = (DRAIN if drained else UNDRAIN), ("drain" if drained else "undrain"), \
        state.version, host.gateway
    confirm_then_write(host, WriteRequest(
        title=action.description,
        change=f"{verb} target {target}  (version {version})",
        danger=action.danger,
        confirm_name=target,
        operation=lambda reason: set_drained(gateway, target, drained, reason, version),
        done=f"{verb}ed target {target}",
        on_success=_adopt,
        on_conflict=_drop_staged,
        warning="This takes capacity away: the target gets no new requests." if drained else "",
    ))


def drain(host: ConsoleHost) -> None:
    _drain(host, True)


def undrain(host: ConsoleHost) -> None:
    _drain(host, False)


# ---- the CLI verbs ------------------------------------------------------------------------------


def weights_table(state: GatewayState) -> str:
    drained = {t.name for t in state.targets if t.drained}
    lines = [f"state v{state.version}"]
    for pool in state.pools:
        lines.append(f"{pool.name}{'' if pool.available else '  (no available target)'}")
        for target, weight in pool.weights.items():
            lines.append(f"  {target:28} {weight:3d}{'  DRAINED' if target in drained else ''}")
    return "\n".join(lines)


async def cli_weights_show(_: argparse.Namespace, client: GatewayClient) -> int:
    say(weights_table(await client.state()))
    return 0


def parse_assignments(pairs: list[str]) -> dict[str, int]:
    weights: dict[str, int] = {}
    for pair in pairs:
        target, sep, value = pair.rpartition("=")
        if not sep or not target or not value.isdigit():
            raise UsageError(f"expected TARGET=WEIGHT (an integer 0-100), got '{pair}'")
        weights[target] = int(value)
    return weights


def _weights_set_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pool")
    parser.add_argument("assignments", nargs="+", metavar="TARGET=WEIGHT")


async def cli_weights_set(args: argparse.Namespace, client: GatewayClient) -> int:
    weights = parse_assignments(args.assignments)
    state = await client.state()
    pool = next((p for p in state.pools if p.name == args.pool), None)
    if pool is None:
        say(f"switchboard: unknown pool '{args.pool}'", err=True)
        return 1
    staged = StagedWeights(args.pool, state.version, dict(pool.weights), {**pool.weights, **weights})
    new = await apply_weights(client, staged, args.reason)
    say(f"{staged.describe()} (now state v{new.version})")
    return 0


def _target_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target")


async def _cli_drain(args: argparse.Namespace, client: GatewayClient, drained: bool) -> int:
    """Like the console: read the state, then send the version read (a change in between is a 409)."""
    state = await client.state()
    new = await set_drained(client, args.target, drained, args.reason, state.version)
    say(f"{'drained' if drained else 'undrained'} {args.target} (now state v{new.version})")
    return 0


async def cli_drain(args: argparse.Namespace, client: GatewayClient) -> int:
    return await _cli_drain(args, client, True)


async def cli_undrain(args: argparse.Namespace, client: GatewayClient) -> int:
    return await _cli_drain(args, client, False)


# ---- the entries --------------------------------------------------------------------------------

SHIFT_UP = Action("shift_up", f"Move {WEIGHT_STEP} weight points to the selected target", key="plus",
                  label=f"+{WEIGHT_STEP}", precondition=_needs_pool_target, perform=shift_up, stages=True)
SHIFT_DOWN = Action("shift_down", f"Move {WEIGHT_STEP} weight points away from the selected target", key="minus",
                    label=f"-{WEIGHT_STEP}", precondition=_needs_pool_target, perform=shift_down, stages=True)
APPLY = Action("apply_weights", "Apply the staged weights (asks for a reason)", key="a", label="Apply",
               danger=Danger.WRITE, precondition=_needs_staged, perform=apply_staged,
               cli=CliVerb("weights set", "set weights: POOL target=70 target=30 --reason ...", cli_weights_set,
                           _weights_set_arguments))
DISCARD = Action("discard_weights", "Discard the staged weights", key="x", precondition=_needs_staged,
                 perform=discard_weights, stages=True)
DRAIN = Action("drain", "Drain the selected target (no new requests)", key="d", danger=Danger.DESTRUCTIVE,
               precondition=_needs_undrained, perform=drain,
               cli=CliVerb("drain", "drain a target (--reason required)", cli_drain, _target_argument))
UNDRAIN = Action("undrain", "Undrain the selected target", key="u", danger=Danger.WRITE,
                 precondition=_needs_drained, perform=undrain,
                 cli=CliVerb("undrain", "undrain a target (--reason required)", cli_undrain, _target_argument))
WEIGHTS_SHOW = Action("weights_show", "Pools, targets and weights",
                      cli=CliVerb("weights show", "pools, targets and weights", cli_weights_show))

ACTIONS = (SHIFT_UP, SHIFT_DOWN, APPLY, DISCARD, DRAIN, UNDRAIN, WEIGHTS_SHOW)
