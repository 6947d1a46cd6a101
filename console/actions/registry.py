"""The one registry of actions: console keys, key bar, help, command palette and CLI verbs all come from here.

Each domain module (routing, keys, ...) declares its entries next to the flows and operations they run;
this module puts them in order (the key bar's order) and answers what the console and the CLI offer.
A new action is one ``Action`` in its domain's ``ACTIONS``.
"""

from __future__ import annotations

from console.actions import batches, bench, keys, navigation, overview, releases, rollouts, routing
from console.actions.base import Action

ACTIONS: tuple[Action, ...] = (*routing.ACTIONS, *releases.ACTIONS, *rollouts.ACTIONS, *batches.ACTIONS,
                              *bench.ACTIONS, *navigation.ACTIONS, *overview.ACTIONS, *keys.ACTIONS)
REGISTRY: dict[str, Action] = {action.id: action for action in ACTIONS}
CONSOLE_ACTIONS: tuple[Action, ...] = tuple(action for action in ACTIONS if action.in_console)
CLI_ACTIONS: tuple[Action, ...] = tuple(action for action in ACTIONS if action.cli is not None)

KEY_NAMES = {"plus": "+", "minus": "-", "question_mark": "?"}  # Textual key names shown as typed


def _check_unique() -> None:
    for what, values in (("id", [a.id for a in ACTIONS]), ("CLI verb", [a.cli.name for a in CLI_ACTIONS if a.cli])):
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"action registry: duplicate {what} {', '.join(duplicates)}")


_check_unique()


def keymap(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Action id -> key, with the user's remappings (unknown ids are an error, not ignored)."""
    overrides = overrides or {}
    known = [action.id for action in CONSOLE_ACTIONS]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"keys: unknown action id(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return {action.id: overrides.get(action.id, action.key or "") for action in CONSOLE_ACTIONS}


def visible_actions(readonly: bool) -> list[Action]:
    """What the key bar, help and palette offer: in read-only mode writes (and staging) are hidden, not greyed."""
    return [action for action in CONSOLE_ACTIONS if not (readonly and action.hidden_when_readonly)]


def key_display(key: str) -> str:
    """A binding's keys as the operator types them: ``plus,k`` -> ``+, k``."""
    return ", ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))
