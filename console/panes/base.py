"""What every pane shares: a titled frame showing the pane's number, name, LIVE/STALE/DOWN and data age.

A pane renders the snapshots the app hands it and nothing else: no I/O, no timers, no app state.
Its title (health badge, error message, note) is drawn through ``console.text.safe_text``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.containers import Vertical
from textual.widget import Widget

from console.panes.format import health_badge
from console.sources.poller import Observed
from console.text import safe_text


class Pane(Vertical):
    """A frame around one body widget; ``key`` is the digit that jumps here."""

    DEFAULT_CSS = """
    Pane {
        border: round $panel-lighten-2;
        border-title-color: $text;
        height: 1fr;
        min-height: 3;
    }
    Pane.-active {
        border: round $accent;
    }
    """

    TITLE: ClassVar[str] = "Pane"
    key: str = ""
    fresh_s: float | None = None  # the source's two poll intervals: younger data reads "≤2s"

    def __init__(self, key: str, *, id: str) -> None:
        super().__init__(id=id)
        self.key = key
        self._note = ""
        self._badge: Text = Text("WAITING", style="dim")
        self._shown: tuple[object, ...] | None = None
        self._render_title()

    @property
    def body(self) -> Widget:
        """The widget that takes focus when the pane is jumped to."""
        raise NotImplementedError

    @property
    def title_plain(self) -> str:
        """The title as plain text, e.g. ``2 Routing STALE 7s · timed out``."""
        return self._title.plain

    def changed(self, *shown: object) -> bool:
        """Whether the body must be redrawn: False when it already shows these very objects (the 1 s tick
        and repeated snapshots then only touch the title). Numbers (the wall clock's minute) are compared by value:
        ``int(t // 60)`` is a new object each call."""
        if self._shown is not None and len(shown) == len(self._shown) and all(
                a is b or (type(a) is int and type(b) is int and a == b)
                for a, b in zip(shown, self._shown, strict=True)):
            return False
        self._shown = shown
        return True

    def show_health(self, observed: Observed[object] | None, now: float, note: str = "") -> None:
        badge = health_badge(observed, now, self.fresh_s)
        if badge.plain == self._badge.plain and note == self._note:
            return
        self._badge, self._note = badge, note
        self._render_title()

    def _render_title(self) -> None:
        title = Text.assemble((f"{self.key} ", "bold"), (self.TITLE, "bold"), " ", self._badge)
        if self._note:
            title.append_text(safe_text(f" · {self._note}", style="italic"))
        self._title = safe_text(title)
        self.border_title = self._title
