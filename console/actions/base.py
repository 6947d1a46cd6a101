"""What a console action is made of, and what its TUI half may ask of the app.

An ``Action`` is one registry entry: the id users remap keys by, the key, the key bar label, the
description shown in help and the palette, its danger, a precondition that says why it cannot run
now, what it does in the console (``perform``, given the app as a ``ConsoleHost``) and the
``switchboard`` verb that runs the same operation from a shell (``cli``). Nothing here imports
Textual: the CLI loads the registry without it.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from console.sources.gateway import GatewayClient
from console.text import clean
from services.admin_api import BatchProgress, GatewayState, ReleaseState

if TYPE_CHECKING:
    from console.actions.bench import BenchDesk
    from console.actions.rollouts import RolloutDesk
    from console.actions.routing import StagedWeights
    from console.sources.kube import KubeSnapshot, KubeSource


class Danger(enum.IntEnum):
    SAFE = 0  # reads, navigation
    WRITE = 1  # changes routing or keys; confirmed, attributed, audited
    DESTRUCTIVE = 2  # takes capacity or access away (drain, delete); the confirm modal says so


@dataclass(frozen=True)
class ActionState:
    """What preconditions look at: the UI's selection and mode, never widgets."""

    readonly: bool = False
    selected_pool: str | None = None
    selected_target: str | None = None
    has_staged: bool = False
    target_drained: bool = False
    state_loaded: bool = False
    release_phase: str | None = None  # the selected release's (Releases pane), None when none is selected
    release_aborted: bool = False
    rollout_phase: str | None = None  # the selected Argo rollout's (Releases pane), None when none is selected
    rollout_aborted: bool = False
    rollout_pending: bool = False  # a change sent that the controller has not observed yet
    rollout_refusals: tuple[tuple[str, str], ...] = ()  # (action, why not): access review, then Argo's rules
    batch_status: str | None = None  # the selected batch's (Queue pane), None when none is selected


Precondition = Callable[[ActionState], str | None]


def always(_: ActionState) -> str | None:
    return None


class UsageError(ValueError):
    """Bad command-line input: the verb exits 2 and sends nothing."""


def _no_arguments(_: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class ClusterTarget:
    """The context's Kubernetes cluster, for a verb that acts on it (``CliVerb.cluster``)."""

    api: Any  # a kubernetes.client.ApiClient for the context's kubeconfig and kube_context
    context: str  # the kube context's name
    namespace: str | None  # the console context's namespace


@dataclass(frozen=True)
class CliVerb:
    """The ``switchboard`` subcommand of an action: ``name`` is its words ("drain", "keys create").

    ``run`` gets the parsed arguments and a client for the chosen context and returns the exit status.
    The verb machinery (console.verbs) adds ``--config``/``--context``, a required ``--reason`` for
    writes, refuses writes on read-only contexts and turns API errors into exit codes.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace, GatewayClient], Awaitable[int]]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    cluster: bool = False  # acts on the context's cluster: the machinery puts a ClusterTarget in ``args.cluster``


class ConsoleHost(Protocol):
    """What an action's TUI half may ask of the app (the shell): state, selection, dialogs, redraws."""

    gateway: GatewayClient
    readonly: bool
    staged: StagedWeights | None
    kube: KubeSource | None  # the context's cluster (None: none configured)
    rollouts: RolloutDesk  # access answers and pending marks for Argo rollouts
    bench: BenchDesk  # past benchmark runs and the one in progress

    @property
    def state(self) -> GatewayState | None: ...

    def selection(self) -> tuple[str | None, str | None]: ...

    def selected_release(self) -> tuple[ReleaseState, int] | None:
        """The release under the Releases pane's cursor and the state version it was read at."""

    def selected_rollout(self) -> tuple[dict[str, Any], KubeSnapshot] | None:
        """The Argo rollout under the Releases pane's cursor and the cluster snapshot it was read from."""

    def selected_batch(self) -> tuple[BatchProgress, float] | None:
        """The batch under the Queue pane's cursor and the wall time (Unix) its age is measured at."""

    def redraw(self, source: str) -> None: ...

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None: ...

    def ask_confirmation(self, title: str, change: str, danger: Danger, confirm_name: str,
                         then: Callable[[str | None], None], warning: str = "") -> None:
        """Show the confirm dialog (``change`` may hold several lines; ``warning`` says what a destructive
        action takes away); ``then`` gets the reason typed, or None when cancelled."""

    def run_write(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a confirmed write in the background; writes are greyed until it ends, then sources refresh."""

    def adopt(self, state: GatewayState) -> None:
        """Show a state a write answered with (or a 409 carried) at once, as the gateway's latest."""

    def set_readonly(self, readonly: bool) -> None: ...

    def refresh_sources(self) -> None: ...

    def toggle_pause(self) -> None: ...

    def show_help(self) -> None: ...

    def open_palette(self) -> None: ...

    def focus_next_pane(self) -> None: ...

    def open_benchmark(self) -> None:
        """Show the benchmark form; Run starts ``bench.run`` as a worker."""

    def quit(self) -> None: ...


Perform = Callable[[ConsoleHost], None]


@dataclass(frozen=True)
class Action:
    id: str
    description: str  # help and palette
    key: str | None = None  # default key; None: a CLI verb only, not offered in the console
    label: str = ""  # key bar label; default: the description's first word
    danger: Danger = Danger.SAFE
    precondition: Precondition = always
    perform: Perform | None = None  # what its key (and palette entry) does in the console
    show_in_footer: bool = True
    stages: bool = False  # prepares a write (staging weights): pointless, so hidden, in read-only mode
    priority: bool = False  # the app sees the key before the focused widget (Tab, ctrl+p); never over a dialog
    cli: CliVerb | None = None

    def __post_init__(self) -> None:
        if (self.key is None) != (self.perform is None):
            raise ValueError(f"action {self.id}: a key and a perform go together")
        if self.key is None and self.cli is None:
            raise ValueError(f"action {self.id}: neither a key nor a CLI verb")

    @property
    def in_console(self) -> bool:
        return self.key is not None

    @property
    def footer_label(self) -> str:
        return self.label or self.description.split(" ")[0]

    @property
    def writes(self) -> bool:
        return self.danger >= Danger.WRITE

    @property
    def hidden_when_readonly(self) -> bool:
        return self.writes or self.stages

    def unavailable(self, state: ActionState) -> str | None:
        """Why the action cannot run now, or None when it can."""
        if self.hidden_when_readonly and state.readonly:
            return "read-only"
        return self.precondition(state)


def say(text: str = "", *, err: bool = False) -> None:
    """Print CLI output: every line through the console's sanitizer, as server strings are part of it."""
    print("\n".join(clean(line) for line in text.split("\n")), file=sys.stderr if err else sys.stdout)
