"""Plain-text figures shared by the panes and the CLI verbs (no Textual here: the CLI stays light)."""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    """``45s``, ``4m05s``, ``2h00m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
