"""CLI verbs for runbooks and scripts: ``status``, ``weights show|set``, ``drain|undrain``, ``audit``.

They send exactly what the console's actions send (console.actions), through the same context
(URL, token, operator) the console would use.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from console.actions import StagedWeights, apply_weights, health_exit_code, set_drained
from console.contexts import Context, ContextError, default_operator, load_console_config, pick_context
from console.sources.gateway import AdminError, Conflict, GatewayClient, SourceDown
from services.admin_api import GatewayState

T = TypeVar("T")


def add_context_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="console config (default $XDG_CONFIG_HOME/switchboard/console.yaml)")
    parser.add_argument("--context", help="context name from the console config")


def _context(args: argparse.Namespace) -> tuple[Context, str]:
    config = load_console_config(args.config)
    return pick_context(config, args.context), config.operator or default_operator()


def _run(args: argparse.Namespace, work: Callable[[GatewayClient, Context], Awaitable[int]]) -> int:
    try:
        context, operator = _context(args)
        token = context.token()
    except ContextError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        client = GatewayClient(context.admin_url, token, operator, context.timeout_s)
        try:
            return await work(client, context)
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except SourceDown as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except Conflict as exc:
        print(f"switchboard: {exc.message}", file=sys.stderr)
        return 1
    except AdminError as exc:
        print(f"switchboard: refused ({exc.status}): {exc.message}", file=sys.stderr)
        return 1


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def status_table(state: GatewayState) -> str:
    lines = [f"gateway {'ready' if state.ready else 'NOT READY'} ({state.ready_reason}); state v{state.version} "
             f"on {state.store}" + (f"; DEGRADED: {state.degraded}" if state.degraded else "")]
    header = f"{'TARGET':28} {'STATUS':13} {'BREAKER':9} {'RPS':>6} {'ERR%':>6} {'P50':>8} {'P99':>8} {'EMA':>8}"
    lines.append(header)
    for t in state.targets:
        lines.append(f"{t.name:28} {t.status:13} {t.breaker:9} {t.requests_per_s:6.1f} {t.error_rate * 100:6.1f} "
                     f"{_fmt(t.p50_ms, 'ms'):>8} {_fmt(t.p99_ms, 'ms'):>8} {_fmt(t.ema_latency_ms, 'ms'):>8}")
    return "\n".join(lines)


def weights_table(state: GatewayState) -> str:
    drained = {t.name for t in state.targets if t.drained}
    lines = [f"state v{state.version}"]
    for pool in state.pools:
        lines.append(f"{pool.name}{'' if pool.available else '  (no available target)'}")
        for target, weight in pool.weights.items():
            lines.append(f"  {target:28} {weight:3d}{'  DRAINED' if target in drained else ''}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, _: Context) -> int:
        try:
            state = await client.state()
        except SourceDown as exc:
            print(f"gateway unreachable: {exc}")
            return health_exit_code(None)
        print(status_table(state))
        return health_exit_code(state)

    return _run(args, work)


def cmd_weights_show(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, _: Context) -> int:
        print(weights_table(await client.state()))
        return 0

    return _run(args, work)


def parse_assignments(pairs: list[str]) -> dict[str, int]:
    weights: dict[str, int] = {}
    for pair in pairs:
        target, sep, value = pair.rpartition("=")
        if not sep or not target or not value.isdigit():
            raise ValueError(f"expected TARGET=WEIGHT (an integer 0-100), got '{pair}'")
        weights[target] = int(value)
    return weights


def cmd_weights_set(args: argparse.Namespace) -> int:
    try:
        weights = parse_assignments(args.assignments)
    except ValueError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2

    async def work(client: GatewayClient, context: Context) -> int:
        if context.readonly:
            print(f"switchboard: context '{context.name}' is read-only", file=sys.stderr)
            return 1
        state = await client.state()
        pool = next((p for p in state.pools if p.name == args.pool), None)
        if pool is None:
            print(f"switchboard: unknown pool '{args.pool}'", file=sys.stderr)
            return 1
        staged = StagedWeights(args.pool, state.version, dict(pool.weights), {**pool.weights, **weights})
        new = await apply_weights(client, staged, args.reason)
        print(f"{staged.describe()} (now state v{new.version})")
        return 0

    return _run(args, work)


def cmd_drain(args: argparse.Namespace, drained: bool) -> int:
    async def work(client: GatewayClient, context: Context) -> int:
        if context.readonly:
            print(f"switchboard: context '{context.name}' is read-only", file=sys.stderr)
            return 1
        new = await set_drained(client, args.target, drained, args.reason, None)
        print(f"{'drained' if drained else 'undrained'} {args.target} (now state v{new.version})")
        return 0

    return _run(args, work)


def cmd_audit(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, _: Context) -> int:
        page = await client.audit(limit=args.limit)
        for e in page.entries:
            when = datetime.fromtimestamp(e.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            print(f"v{e.version:<4} {when}  {e.operator or '-'} ({e.actor})  {e.action} {e.target}: "
                  f"{e.before} -> {e.after}  reason: {e.reason}")
        return 0

    return _run(args, work)


def add_verbs(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser("status", help="one-shot health table; exit 0 healthy, 1 degraded, 2 unreachable")
    add_context_options(status)
    status.set_defaults(run=cmd_status)

    weights = commands.add_parser("weights", help="show or set routing weights")
    verbs = weights.add_subparsers(dest="weights_command", required=True, metavar="show|set")
    show = verbs.add_parser("show", help="pools, targets and weights")
    add_context_options(show)
    show.set_defaults(run=cmd_weights_show)
    set_ = verbs.add_parser("set", help="set weights: POOL target=70 target=30 --reason ...")
    add_context_options(set_)
    set_.add_argument("pool")
    set_.add_argument("assignments", nargs="+", metavar="TARGET=WEIGHT")
    set_.add_argument("--reason", required=True)
    set_.set_defaults(run=cmd_weights_set)

    for name, drained in (("drain", True), ("undrain", False)):
        parser = commands.add_parser(name, help=f"{name} a target (--reason required)")
        add_context_options(parser)
        parser.add_argument("target")
        parser.add_argument("--reason", required=True)
        parser.set_defaults(run=lambda args, drained=drained: cmd_drain(args, drained))

    audit = commands.add_parser("audit", help="the gateway's audit log, newest first")
    add_context_options(audit)
    audit.add_argument("--limit", type=int, default=20)
    audit.set_defaults(run=cmd_audit)
