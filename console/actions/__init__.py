"""Console actions: the registry (console.actions.registry) and one module per domain holding its entries,
operations, console flows and CLI verbs. What other modules use is re-exported here."""

from console.actions.base import Action, ActionState, CliVerb, ClusterTarget, ConsoleHost, Danger, UsageError
from console.actions.overview import health_exit_code
from console.actions.registry import (
    ACTIONS,
    CLI_ACTIONS,
    CONSOLE_ACTIONS,
    REGISTRY,
    key_display,
    keymap,
    visible_actions,
)
from console.actions.routing import WEIGHT_STEP, StagedWeights, apply_weights, set_drained, shift, stage_shift

__all__ = [
    "ACTIONS",
    "CLI_ACTIONS",
    "CONSOLE_ACTIONS",
    "REGISTRY",
    "WEIGHT_STEP",
    "Action",
    "ActionState",
    "CliVerb",
    "ClusterTarget",
    "ConsoleHost",
    "Danger",
    "StagedWeights",
    "UsageError",
    "apply_weights",
    "health_exit_code",
    "key_display",
    "keymap",
    "set_drained",
    "shift",
    "stage_shift",
    "visible_actions",
]
