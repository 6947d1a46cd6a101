"""Modal screens: the confirm dialog for writes, the help screen, and the command palette's provider.

They render what they are given; the app decides what a confirmed change does. Everything they draw
that may hold a server's words (target and pool names in a change, a context's name, notes) goes through
``console.text.safe_text``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.actions import Danger
from console.text import clean, safe_text

TEXT_ON = {"red": "white", "blue": "white", "magenta": "white"}  # else black


def context_badge(name: str, color: str, prod: bool) -> Text:
    label = f" {name}{' (PROD)' if prod else ''} "
    return safe_text(label, style=f"bold {TEXT_ON.get(color, 'black')} on {color}")


@dataclass(frozen=True)
class Confirmation:
    """What the confirm dialog shows: the exact change, where, and what must be typed to allow it."""

    title: str
    change: str
    danger: Danger
    context: str
    context_color: str
    prod: bool = False
    type_to_confirm: str | None = None  # prod contexts: the pool or target name
    warning: str = ""  # what the change takes away, in the action's own words (destructive actions)


class ConfirmScreen(ModalScreen[str | None]):
    """Dismisses with the reason when confirmed, ``None`` when cancelled. Focus starts on Cancel."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > #dialog {
        width: 72; max-width: 100%; height: auto; max-height: 100%;
        border: thick $warning; background: $surface; padding: 0 1;
    }
    ConfirmScreen.-destructive > #dialog { border: thick $error; }
    ConfirmScreen #change { margin: 1 0 0 0; text-style: bold; }
    ConfirmScreen Label { margin-top: 1; color: $text-muted; }
    ConfirmScreen #buttons { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmScreen Button { margin-left: 2; min-width: 12; }
    """

    BINDINGS = [("escape", "cancel", "Cancel")]
    AUTO_FOCUS = "#cancel"

    def __init__(self, confirmation: Confirmation) -> None:
        super().__init__(classes="-destructive" if confirmation.danger >= Danger.DESTRUCTIVE else "")
        self.confirmation = confirmation

    def compose(self) -> ComposeResult:
        c = self.confirmation
        with Vertical(id="dialog") as dialog:
            dialog.border_title = safe_text(c.title)
            yield Static(Text.assemble("context ", context_badge(c.context, c.context_color, c.prod)), id="where")
            yield Static(Text("\n").join(safe_text(line) for line in c.change.splitlines()), id="change")
            if c.warning:
                yield Static(safe_text(c.warning, "bold red" if c.danger >= Danger.DESTRUCTIVE else "bold"))
            yield Label("Reason (recorded in the audit log)")
            yield Input(placeholder="why this change?", id="reason", max_length=500)
            if c.type_to_confirm:
                yield Label(Text.assemble("Type ", safe_text(c.type_to_confirm, "bold"), " to confirm (prod context)"))
                yield Input(placeholder=clean(c.type_to_confirm), id="type-to-confirm")
            yield Static(Text("Tab: next field · Enter: next / confirm · Esc: cancel", style="dim"))
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Confirm", id="ok", variant="error", compact=True, disabled=True)

    @property
    def reason(self) -> str:
        return self.query_one("#reason", Input).value.strip()

    def ready(self) -> bool:
        if not self.reason:
            return False
        if self.confirmation.type_to_confirm:
            return self.query_one("#type-to-confirm", Input).value.strip() == self.confirmation.type_to_confirm
        return True

    @on(Input.Changed)
    def _changed(self) -> None:
        self.query_one("#ok", Button).disabled = not self.ready()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.ready():
            self.query_one("#ok", Button).focus()
        else:
            self.focus_next()

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        if self.ready():
            self.dismiss(self.reason)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True)
class HelpRow:
    key: str
    description: str
    note: str = ""  # why it cannot run now


class HelpScreen(ModalScreen[None]):
    """Keys and actions, generated from the action registry (what is hidden in read-only is absent)."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    """
    BINDINGS = [("escape", "close", "Close"), ("question_mark", "close", "Close"), ("q", "close", "Close")]

    def __init__(self, actions: Sequence[HelpRow], navigation: Sequence[HelpRow], readonly: bool) -> None:
        super().__init__()
        self.actions, self.navigation, self.readonly = actions, navigation, readonly

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "Keys" + (" (READ-ONLY: writes hidden)" if self.readonly else "")
            box.border_subtitle = "Esc closes"
            yield Static(_table("Actions", self.actions), id="help-actions")
            yield Static(_table("Panes", self.navigation), id="help-navigation")

    def action_close(self) -> None:
        self.dismiss(None)


def _table(title: str, rows: Iterable[HelpRow]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, expand=True, padding=(0, 1))
    table.add_column("Key", style="bold cyan", no_wrap=True, width=10)
    table.add_column("Action", ratio=3)
    table.add_column("Now", style="dim", ratio=2)
    for row in rows:
        table.add_row(safe_text(row.key), safe_text(row.description), safe_text(row.note))
    return table


class PaletteHost(Protocol):
    def palette_entries(self) -> list[tuple[str, str, str]]:
        """(action id, name, help) of every visible action."""

    def run_registry_action(self, action_id: str) -> None: ...


class ActionCommands(Provider):
    """The command palette lists the registry's visible actions; picking one runs the same path as its key."""

    def _entries(self) -> list[tuple[str, str, Callable[[], None]]]:
        host: PaletteHost = self.app  # type: ignore[assignment]
        return [(name, help_text, partial(host.run_registry_action, action_id))
                for action_id, name, help_text in host.palette_entries()]

    async def discover(self) -> Hits:
        for name, help_text, run in self._entries():
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, run in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), run, text=name, help=help_text)


__all__ = ["ActionCommands", "ConfirmScreen", "Confirmation", "HelpRow", "HelpScreen", "context_badge"]
