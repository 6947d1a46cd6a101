"""The bottom line of keys: the registry's footer actions that may run now (greyed when not yet)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget


@dataclass(frozen=True)
class KeyHint:
    key: str  # as shown: "+", "a", "ctrl+s"
    label: str
    enabled: bool = True


class KeyBar(Widget):
    """Cheaper than Textual's Footer (no widget per key, no recompose): one line, redrawn on change.

    When the line is too narrow, greyed hints go first, so what can run now stays visible at 80 columns.
    """

    DEFAULT_CSS = "KeyBar { dock: bottom; height: 1; background: $panel; color: $text; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.hints: tuple[KeyHint, ...] = ()

    def show(self, hints: Sequence[KeyHint]) -> None:
        hints = tuple(hints)
        if hints != self.hints:
            self.hints = hints
            self.refresh()

    @property
    def plain(self) -> str:
        return " ".join(f"{h.key} {h.label}" for h in self.hints)

    def render(self) -> Text:
        hints = list(self.hints)
        while _width(hints) > self.size.width and any(not h.enabled for h in hints):
            hints.remove(next(h for h in reversed(hints) if not h.enabled))
        line = Text(" ", no_wrap=True, overflow="ellipsis", end="")
        for hint in hints:
            line.append(hint.key, style="bold underline" if hint.enabled else "dim")
            line.append(f" {hint.label}  ", style="" if hint.enabled else "dim")
        return line


def _width(hints: Sequence[KeyHint]) -> int:
    return 1 + sum(len(h.key) + len(h.label) + 3 for h in hints)
