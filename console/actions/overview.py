"""Read-only overviews for runbooks: ``switchboard status`` (health table, exit code) and ``switchboard audit``."""

from __future__ import annotations

import argparse
from datetime import datetime

from console.actions.base import Action, CliVerb, say
from console.sources.gateway import GatewayClient, SourceDown
from console.views.audit import describe
from services.admin_api import GatewayState


def health_exit_code(state: GatewayState | None) -> int:
    """`switchboard status`: 0 healthy, 1 degraded, 2 unreachable."""
    if state is None:
        return 2
    troubled = [t for t in state.targets if t.enabled and t.status not in ("healthy", "drained")]
    return 1 if (not state.ready or state.degraded or troubled) else 0


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def status_table(state: GatewayState) -> str:
    lines = [f"gateway {'ready' if state.ready else 'NOT READY'} ({state.ready_reason}); state v{state.version} "
             f"on {state.store}" + (f"; DEGRADED: {state.degraded}" if state.degraded else "")]
    header = (f"{'TARGET':28} {'STATUS':13} {'BREAKER':9} {'RPS':>6} {'ERR%':>6} "
              f"{'TTFT-P50':>9} {'TTFT-P99':>9} {'TOTAL-P50':>9} {'TOTAL-P99':>9}")
    lines.append(header)
    for t in state.targets:
        lines.append(f"{t.name:28} {t.status:13} {t.breaker:9} {t.requests_per_s:6.1f} {t.error_rate * 100:6.1f} "
                     f"{_fmt(t.ttft_p50_ms, 'ms'):>9} {_fmt(t.ttft_p99_ms, 'ms'):>9} "
                     f"{_fmt(t.total_p50_ms, 'ms'):>9} {_fmt(t.total_p99_ms, 'ms'):>9}")
    return "\n".join(lines)


async def cli_status(_: argparse.Namespace, client: GatewayClient) -> int:
    try:
        state = await client.state()
    except SourceDown as exc:
        say(f"gateway unreachable: {exc}")
        return health_exit_code(None)
    say(status_table(state))
    return health_exit_code(state)


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20)


async def cli_audit(args: argparse.Namespace, client: GatewayClient) -> int:
    page = await client.audit(limit=args.limit)
    for e in page.entries:
        when = datetime.fromtimestamp(e.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        say(f"v{e.version:<4} {when}  {e.operator or '-'} ({e.actor})  {e.action} {e.target}: "
            f"{describe(e)}  reason: {e.reason}")
    return 0


ACTIONS = (
    Action("status", "One-shot health table",
           cli=CliVerb("status", "one-shot health table; exit 0 healthy, 1 degraded, 2 unreachable", cli_status)),
    Action("audit", "The gateway's audit log, newest first",
           cli=CliVerb("audit", "the gateway's audit log, newest first", cli_audit, _audit_arguments)),
)
