"""The console's own actions: refresh, pause, help, the palette, pane focus, quit. The app carries them out."""

from __future__ import annotations

from console.actions.base import Action, ConsoleHost


def _refresh(host: ConsoleHost) -> None:
    host.refresh_sources()


def _pause(host: ConsoleHost) -> None:
    host.toggle_pause()


def _help(host: ConsoleHost) -> None:
    host.show_help()


def _palette(host: ConsoleHost) -> None:
    host.open_palette()


def _next_pane(host: ConsoleHost) -> None:
    host.focus_next_pane()


def _quit(host: ConsoleHost) -> None:
    host.quit()


ACTIONS = (
    Action("refresh", "Refresh every source now", key="r", label="Refresh", perform=_refresh),
    Action("pause", "Pause or resume refreshing", key="p", label="Pause", perform=_pause),
    Action("help", "Show keys and actions", key="question_mark", label="Help", perform=_help),
    Action("palette", "Command palette", key="ctrl+p", label="Palette", perform=_palette, show_in_footer=False,
           priority=True),
    Action("next_pane", "Focus the next pane", key="tab", label="Next pane", perform=_next_pane,
           show_in_footer=False, priority=True),
    Action("quit", "Quit", key="q", label="Quit", perform=_quit),
)
