"""Client keys (virtual keys): ``switchboard keys create|list|show|disable|enable|delete``.

A key is named by its id (``key_...``). The secret itself exists only in the answer to a create: it is
printed once (or written to ``--key-file`` with mode 0600) and cannot be shown again.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from datetime import datetime
from typing import get_args

from pydantic import ValidationError

from console.actions.base import Action, CliVerb, Danger, UsageError, say
from console.sources.gateway import GatewayClient
from services.admin_api import TIERS, BudgetPeriod, KeyCreate, KeyRecord

DURATION = re.compile(r"(\d+)\s*([smhdw])")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_expiry(text: str, now: float) -> float:
    """``30d``, ``12h``, ``90m`` from now, or an ISO time (local time when it names no zone), as Unix time."""
    duration = DURATION.fullmatch(text.strip())
    if duration:
        seconds = int(duration.group(1)) * UNIT_S[duration.group(2)]
        if seconds <= 0:
            raise UsageError(f"--expires {text}: the duration must be above zero")
        return now + seconds
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--expires {text}: expected a duration like 30d, 12h, 90m or an ISO time like "
                         "2026-12-31T23:59:00Z") from None
    at = (when if when.tzinfo else when.astimezone()).timestamp()
    if at <= now:
        raise UsageError(f"--expires {text}: that time has passed")
    return at


def key_spec(args: argparse.Namespace, now: float) -> KeyCreate:
    """The create request from the command line, checked by the API's own model before anything is sent."""
    try:
        return KeyCreate(
            name=args.name, owner=args.owner, tier=args.tier, routes=args.routes or [], rpm_limit=args.rpm,
            tpm_limit=args.tpm, budget_usd=args.budget_usd, budget_period=args.budget_period,
            expires_at=None if args.expires is None else parse_expiry(args.expires, now), reason=args.reason)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'key'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid key: {problems}") from None


def _open_key_file(path: str) -> int:
    """Created before the key is, so a bad path fails with nothing changed; never overwrites a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"--key-file {path}: already exists (not overwritten)") from None
    except OSError as exc:
        raise UsageError(f"--key-file {path}: {exc.strerror}") from None
    os.fchmod(fd, 0o600)
    return fd


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")


def key_state(key: KeyRecord, now: float) -> str:
    if key.disabled:
        return "disabled"
    return "expired" if key.expires_at is not None and key.expires_at <= now else "active"


def _used(used: int | None, limit: int | None) -> str:
    return f"{'-' if used is None else used}/{'-' if limit is None else limit}"


def _spend(key: KeyRecord) -> str:
    spent = "-" if key.usage is None else f"${key.usage.spend_usd:.2f}"
    return spent if key.budget_usd is None else f"{spent}/${key.budget_usd:.2f} {key.budget_period}"


def keys_table(keys: list[KeyRecord], now: float) -> str:
    lines = [f"{'ID':22} {'NAME':20} {'OWNER':20} {'TIER':10} {'STATE':8} {'RPM':>11} {'TPM':>15} "
             f"{'SPEND':>22} {'EXPIRES':16}"]
    for k in keys:
        usage = k.usage
        rpm = _used(usage.requests_this_minute if usage else None, k.rpm_limit)
        tpm = _used(usage.tokens_this_minute if usage else None, k.tpm_limit)
        lines.append(f"{k.id:22} {k.name:20} {k.owner:20} {k.tier:10} {key_state(k, now):8} {rpm:>11} {tpm:>15} "
                     f"{_spend(k):>22} {_when(k.expires_at):16}")
    return "\n".join(lines)


def key_details(k: KeyRecord, now: float) -> str:
    usage = k.usage
    rows = [
        ("id", k.id), ("prefix", f"{k.prefix}…"), ("name", k.name), ("owner", k.owner), ("tier", k.tier),
        ("state", key_state(k, now)), ("routes", ", ".join(k.routes) or "every route"),
        ("requests/min", _used(usage.requests_this_minute if usage else None, k.rpm_limit)),
        ("tokens/min", _used(usage.tokens_this_minute if usage else None, k.tpm_limit)),
        ("spend", _spend(k) + (f" since {_when(usage.period_started_at)}" if usage and usage.period_started_at
                               else "")),
        ("expires", "never" if k.expires_at is None else _when(k.expires_at)),
        ("created", f"{_when(k.created_at)} by {k.created_by}"),
    ]
    return "\n".join(f"{name:13} {value}" for name, value in rows)


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="what the key is for")
    parser.add_argument("--owner", required=True, help="who answers for it (team, person)")
    parser.add_argument("--tier", choices=TIERS, default="free", help="the routing tier its requests get")
    parser.add_argument("--route", action="append", dest="routes", metavar="ROUTE",
                        help="a route the key may use (repeat for more; none: every route)")
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--budget-usd", type=float, help="spend allowed per budget period")
    parser.add_argument("--budget-period", choices=get_args(BudgetPeriod), default="month")
    parser.add_argument("--expires", help="a duration from now (30d, 12h) or an ISO time")
    parser.add_argument("--key-file", help="write the key to this new file (mode 0600) instead of printing it")


async def cli_create(args: argparse.Namespace, client: GatewayClient) -> int:
    spec = key_spec(args, time.time())
    fd = None if args.key_file is None else _open_key_file(args.key_file)
    try:
        created = await client.create_key(spec)
    except BaseException:
        if fd is not None:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(args.key_file)
        raise
    k = created.record
    say(f"created {k.id} '{k.name}' for {k.owner}: tier {k.tier} (now state v{created.version})")
    if fd is not None:
        with os.fdopen(fd, "w") as out:
            out.write(created.key + "\n")
        say(f"key written to {args.key_file} (mode 0600); it will not be shown again")
    else:
        say(created.key)
        say("This is the only time the key is shown: store it now, it cannot be shown again.")
    return 0


async def cli_list(_: argparse.Namespace, client: GatewayClient) -> int:
    listing = await client.keys()
    say(f"state v{listing.version}, {len(listing.keys)} key(s)")
    if listing.keys:
        say(keys_table(listing.keys, time.time()))
    return 0


def _key_id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key_id", metavar="KEY_ID", help="the key's id (key_...), as `keys list` shows it")


async def cli_show(args: argparse.Namespace, client: GatewayClient) -> int:
    say(key_details(await client.key(args.key_id), time.time()))
    return 0


async def _set_disabled(args: argparse.Namespace, client: GatewayClient, disabled: bool) -> int:
    k = await client.set_key_disabled(args.key_id, disabled, args.reason)
    say(f"{'disabled' if disabled else 'enabled'} {k.id} '{k.name}' ({k.owner})")
    return 0


async def cli_disable(args: argparse.Namespace, client: GatewayClient) -> int:
    return await _set_disabled(args, client, True)


async def cli_enable(args: argparse.Namespace, client: GatewayClient) -> int:
    return await _set_disabled(args, client, False)


async def cli_delete(args: argparse.Namespace, client: GatewayClient) -> int:
    k = await client.delete_key(args.key_id, args.reason)
    say(f"deleted {k.id} '{k.name}' ({k.owner}); requests with it now get 401")
    return 0


ACTIONS = (
    Action("keys_create", "Create a client key", danger=Danger.WRITE,
           cli=CliVerb("keys create", "create a client key; the key is shown once", cli_create, _create_arguments)),
    Action("keys_list", "Client keys with their use against limits",
           cli=CliVerb("keys list", "client keys, their limits and use this minute", cli_list)),
    Action("keys_show", "One client key",
           cli=CliVerb("keys show", "one client key in full", cli_show, _key_id_argument)),
    Action("keys_disable", "Disable a client key", danger=Danger.DESTRUCTIVE,
           cli=CliVerb("keys disable", "disable a client key (its requests get 401)", cli_disable,
                       _key_id_argument)),
    Action("keys_enable", "Enable a disabled client key", danger=Danger.WRITE,
           cli=CliVerb("keys enable", "enable a disabled client key", cli_enable, _key_id_argument)),
    Action("keys_delete", "Delete a client key", danger=Danger.DESTRUCTIVE,
           cli=CliVerb("keys delete", "delete a client key for good", cli_delete, _key_id_argument)),
)
