"""Small text helpers shared by the panes: numbers, ages, bars, sparklines, health badges.

Everything here is a pure function of its arguments (no clock, no I/O), so snapshots are stable.
Untrusted strings (reasons, operator names, errors) go into ``rich.text.Text`` objects through
``console.text.safe_text``, never into markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.text import Text

from console.sources.poller import Health, Observed
from console.text import safe_text
from console.units import duration

SPARK_CHARS = "▁▂▃▄▅▆▇█"
HEALTH_STYLE = {
    Health.LIVE: "bold green",
    Health.STALE: "bold yellow",
    Health.DOWN: "bold red",
    Health.WAITING: "dim",
}
TARGET_STATUS_STYLE = {
    "healthy": "green",
    "half_open": "yellow",
    "cooling_down": "yellow",
    "open": "bold red",
    "drained": "magenta",
    "disabled": "dim",
}


age = duration  # the data ages in pane titles read like every other duration


def ms(value: float | None) -> str:
    """A latency in at most five cells below 100 s: ``1.5ms``, ``160ms``, ``2.30s``, ``12.4s``."""
    if value is None or math.isnan(value):
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def seconds_as_ms(value: float | None) -> str:
    return ms(None if value is None else value * 1000)


def percent(fraction: float | None, digits: int = 1) -> str:
    if fraction is None or math.isnan(fraction):
        return "-"
    return f"{fraction * 100:.{digits}f}%"


def number(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.{digits}f}"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``width`` cells, eighths for the last cell."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).ljust(width)[:width]


def sparkline(values: Sequence[float], width: int) -> str:
    """The last values squeezed into ``width`` cells (each cell the mean of its group), scaled to the max."""
    values = list(values)
    if not values:
        return " " * width
    if len(values) > width:
        size = len(values) / width
        groups = [values[int(i * size): max(int(i * size) + 1, int((i + 1) * size))] for i in range(width)]
        points = [sum(g) / len(g) for g in groups]
    else:
        points = values
    top = max(points)
    if top <= 0:
        line = SPARK_CHARS[0] * len(points)
    else:
        line = "".join(SPARK_CHARS[min(len(SPARK_CHARS) - 1, int(p / top * (len(SPARK_CHARS) - 1) + 0.5))]
                       for p in points)
    return line.rjust(width)


def utc_time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%H:%M:%S")


def health_badge(observed: Observed[object] | None, now: float, fresh_s: float | None = None) -> Text:
    """``LIVE ≤2s`` / ``LIVE 3s`` / ``STALE 14s · timed out`` / ``DOWN · connection refused``: the pane title's status.

    Data no older than ``fresh_s`` (two poll intervals) reads ``≤2s`` instead of a count that flips every
    second between polls: the title, and so the pane, is redrawn only when something is actually late.
    """
    if observed is None:
        return Text("n/a", style="dim")
    badge = Text(observed.health.value, style=HEALTH_STYLE[observed.health])
    seen = observed.age_s(now)
    if seen is not None:
        live = observed.health is Health.LIVE
        shown = f"≤{age(fresh_s)}" if live and fresh_s is not None and seen <= fresh_s else age(seen)
        badge.append(f" {shown}", style="dim" if live else "")
    if observed.error and observed.health in (Health.STALE, Health.DOWN):
        error = observed.error if len(observed.error) <= 48 else observed.error[:47] + "…"
        badge.append_text(safe_text(f" · {error}"))
    return badge


STATUS_LABELS = {"cooling_down": "cooldown", "half_open": "half-open"}


def status_text(status: str) -> Text:
    return Text(STATUS_LABELS.get(status, status), style=TARGET_STATUS_STYLE.get(status, ""))
