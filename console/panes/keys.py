"""Keys: one row per client key with its tier, status, use this minute against its limits and spend
against its budget. Managing keys (create, disable, delete) is the CLI's and the actions' business; this
pane only shows them.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from console.panes.base import Pane
from console.panes.table import KeyedTable, Row
from console.sources.poller import Observed
from console.text import safe_text
from services.admin_api import KeyList, KeyRecord

COLUMNS = (
    ("Name", "name", 16),
    ("Owner", "owner", 14),
    ("Tier", "tier", 10),
    ("Status", "status", 8),
    ("Req/min", "rpm", 11),
    ("Tokens/min", "tpm", 11),
    ("Spend", "spend", 21),
    ("Prefix", "prefix", 10),
)
NARROW_DROPS = ("prefix", "owner", "tier")
TIER_STYLE = {"free": "dim", "paid": "", "enterprise": "bold cyan"}
STATUS_STYLE = {"active": "green", "disabled": "magenta", "expired": "yellow"}
PERIOD = {"day": "/day", "week": "/wk", "month": "/mo", "total": " total"}
WARN_AT = 0.8  # a use at or above this fraction of its limit shows yellow, at or above 1 red


class KeysPane(Pane):
    TITLE = "Keys"

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="keys-table", optional=NARROW_DROPS)

    @property
    def body(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    @property
    def selected_key(self) -> str | None:
        """The id of the key under the cursor."""
        return self.body.cursor_key

    def show(self, observed: Observed[KeyList], now: float, wall_time: float) -> None:
        """``now`` is the monotonic clock data ages are measured with; ``wall_time`` (Unix) decides expiry."""
        keys = observed.data
        note = ""
        if keys is not None:
            note = f"v{keys.version} · {len(keys.keys)} key{'' if len(keys.keys) == 1 else 's'}"
        self.show_health(observed, now, note)
        if not self.changed(keys, observed.error):
            return
        if keys is None:
            self.body.show_empty("waiting for the gateway" if observed.error is None else observed.error)
        elif not keys.keys:
            self.body.show_empty("no client keys yet (switchboard keys create)")
        else:
            self.body.sync([row(record, wall_time) for record in keys.keys])


def status(record: KeyRecord, wall_time: float) -> str:
    if record.disabled:
        return "disabled"
    if record.expires_at is not None and record.expires_at <= wall_time:
        return "expired"
    return "active"


def count(value: float) -> str:
    """``950``, ``12.5k``, ``3.2M``: a count in at most five cells."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            scaled = value / size
            return f"{scaled:.1f}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}"


def money(value: float) -> str:
    return f"${value:,.2f}" if value < 10_000 else f"${value:,.0f}"


def against(used: float, limit: float | None, shown: str, limit_shown: str) -> Text:
    """``used/limit``, yellow from 80 % of the limit, red at or over it; ``used/∞`` without a limit."""
    if limit is None:
        return Text.assemble(shown, ("/∞", "dim"))
    style = "bold red" if used >= limit else "yellow" if used >= WARN_AT * limit else ""
    return Text.assemble((shown, style), ("/" + limit_shown, "dim"))


def row(record: KeyRecord, wall_time: float) -> Row:
    state = status(record, wall_time)
    usage = record.usage
    if usage is None:
        rpm, tpm, spend = Text("-", style="dim"), Text("-", style="dim"), Text("-", style="dim")
    else:
        rpm = against(usage.requests_this_minute, record.rpm_limit, count(usage.requests_this_minute),
                      count(record.rpm_limit or 0))
        tpm = against(usage.tokens_this_minute, record.tpm_limit, count(usage.tokens_this_minute),
                      count(record.tpm_limit or 0))
        if record.budget_usd is None:
            spend = Text.assemble(money(usage.spend_usd), (" no budget", "dim"))
        else:
            spend = against(usage.spend_usd, record.budget_usd, money(usage.spend_usd), money(record.budget_usd))
            spend.append(PERIOD[record.budget_period], style="dim")
    cells = (
        safe_text(record.name, style="bold" if state == "active" else "dim"),
        safe_text(record.owner),
        Text(record.tier, style=TIER_STYLE[record.tier]),
        Text(state, style=STATUS_STYLE[state]),
        rpm,
        tpm,
        spend,
        safe_text(record.prefix, style="dim"),
    )
    return record.id, cells
