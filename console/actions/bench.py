"""Benchmarks from the console: the ``b`` action, and the desk that keeps past runs and runs one benchmark at a time.

``b`` opens the benchmark form (console.bench_form: target, runner, dataset, lengths, concurrency or rate, prompts,
SLOs, the context's named presets); Run hands the spec to ``BenchDesk.run``, which the app runs as a Textual worker:
it drives the chosen runner (services.bench), keeps the latest ``Progress`` for the Benchmarks pane's live line,
saves every result in the ``RunStore`` (a cancelled run too, marked so) and refreshes the pane. While a run goes,
``b`` cancels it (as k9s's benchmark key toggles): the runner stops sending at once and closes its streams.

A benchmark puts load on a live deployment, so it counts as a write: hidden in read-only mode.
Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from console.actions.base import Action, ConsoleHost, Danger
from console.statedir import read_stack_record
from console.views.bench import Run, progress_text
from console.views.bench_form import BenchPreset, BenchTargets, FormError, spec_from_form
from services.bench.result import BenchResult, ResultError
from services.bench.runners import Progress, Runner, get_runner, run_sweep
from services.bench.spec import BenchSpec
from services.bench.store import RunStore

if TYPE_CHECKING:
    from console.contexts import Context

REDRAW_EVERY_S = 0.25  # the live line is redrawn at most this often, however fast progress comes
LOG_LINES = 200  # a runner's output kept while it runs (vllm bench serve's, a Job's pod log)


@dataclass(frozen=True)
class BenchRuns:
    """The Benchmarks pane's snapshot: every readable run, oldest first, and where they are kept."""

    directory: str
    runs: tuple[Run, ...]


@dataclass
class LiveRun:
    label: str
    cancel: asyncio.Event
    progress: Progress | None = None
    cancelling: bool = False
    last_redraw: float = field(default=0.0)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))


def targets_for(context: Context) -> BenchTargets:
    """The gateway's client-side URL (the running stack's, when this context is its admin API; else the admin URL,
    which the gateway serves too when it has no separate admin listener) and the backend's (the engine URL)."""
    record = read_stack_record()
    gateway = record.gateway_url if record is not None and record.admin_url == context.admin_url else context.admin_url
    return BenchTargets(gateway=gateway, backend=context.engine_url)


def check_spec(spec: BenchSpec) -> None:
    """What the form can check before anything is sent: the key's variable is set (its value is never shown)."""
    if spec.api_key_env and not os.environ.get(spec.api_key_env):
        raise FormError("api_key_env", f"${spec.api_key_env} is not set in the console's environment "
                                       "(clear the field to send no key)")


class BenchDesk:
    """Past runs (read from the store, each file once: a saved run never changes) and the one run in progress."""

    def __init__(self, store: RunStore, presets: Mapping[str, BenchPreset], targets: BenchTargets,
                 runner_for: Callable[[str], Runner] = get_runner, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.presets = dict(presets)
        self.targets = targets
        self.runner_for = runner_for
        self.clock = clock
        self.live: LiveRun | None = None
        self.last = ""  # what the last run came to, for the pane's status line
        self._cache: dict[str, BenchResult] = {}

    @classmethod
    def for_context(cls, context: Context) -> BenchDesk:
        return cls(RunStore(), context.bench_presets, targets_for(context))

    # ---- past runs ------------------------------------------------------------------------------

    async def runs(self) -> BenchRuns:
        return await asyncio.to_thread(self.scan)

    def scan(self) -> BenchRuns:
        ids = self.store.ids()
        for gone in set(self._cache) - set(ids):
            del self._cache[gone]
        for run_id in ids:
            if run_id not in self._cache:
                try:
                    self._cache[run_id] = self.store.load(run_id)
                except (KeyError, ResultError):
                    continue  # unreadable or removed meanwhile; tried again next time
        return BenchRuns(str(self.store.directory), tuple((i, self._cache[i]) for i in ids if i in self._cache))

    # ---- the run in progress --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.live is not None

    def status_line(self) -> str:
        """The pane's live line: the run in progress, else what the last one came to, else how to start one."""
        if self.live is not None:
            return progress_text(self.live.progress, self.live.label, self.live.cancelling) + " · b cancels"
        return self.last or "b starts a benchmark"

    def log_tail(self) -> tuple[str, ...]:
        """The output of the runner in progress (vllm and job runners print one), oldest first."""
        return tuple(self.live.log) if self.live is not None and self.live.log else ()

    def spec_from(self, values: Mapping[str, str]) -> BenchSpec:
        """The form's spec, checked; FormError names the field to fix (nothing is sent)."""
        spec = spec_from_form(values)
        check_spec(spec)
        return spec

    def cancel(self) -> bool:
        if self.live is None:
            return False
        self.live.cancelling = True
        self.live.cancel.set()
        return True

    async def run(self, spec: BenchSpec, host: ConsoleHost) -> list[str]:
        """Run ``spec`` (every rate of a sweep), save each result, and return their ids."""
        if self.live is not None:
            return []
        label = spec.label or f"{spec.runner} run"
        live = self.live = LiveRun(label, asyncio.Event())

        def progress(update: Progress) -> None:
            live.progress = update
            if update.line:
                live.log.append(update.line)
            now = self.clock()
            if now - live.last_redraw >= REDRAW_EVERY_S:
                live.last_redraw = now
                host.redraw("bench")

        host.redraw("bench")
        try:
            results = await run_sweep(self.runner_for(spec.runner), spec, progress, live.cancel)
            ids = [await asyncio.to_thread(self.store.save, result) for result in results]
        except Exception as exc:  # a runner's failure ends this run, never the console
            self.last = f"{label} failed: {type(exc).__name__}: {exc}"
            host.notify(self.last, title="Benchmark", severity="error")
            return []
        finally:
            self.live = None
            host.redraw("bench")
        self.last = outcome_line(label, results, ids)
        host.notify(self.last, title="Benchmark", severity="warning" if live.cancelling else "information")
        host.refresh_sources()
        return ids


def outcome_line(label: str, results: Sequence[BenchResult], ids: Sequence[str]) -> str:
    done = sum(int(r.metric("completed") or 0) for r in results)
    cancelled = any(r.cancelled for r in results)
    runs = f"{len(ids)} runs" if len(ids) != 1 else "1 run"
    return f"{label} {'cancelled' if cancelled else 'finished'}: {done} requests, {runs} saved" + (
        f" ({ids[-1]})" if ids else "")


# ---- the console's flow -------------------------------------------------------------------------


def start_or_cancel(host: ConsoleHost) -> None:
    if host.bench.cancel():
        host.redraw("bench")
    else:
        host.open_benchmark()


BENCH = Action("bench", "Benchmark: open the form (presets, target, load), or cancel the run in progress", key="b",
               label="Bench", danger=Danger.WRITE, perform=start_or_cancel,
               show_in_footer=False)  # the key bar is full at 80 columns: help, the palette and the pane say b

ACTIONS: Sequence[Action] = (BENCH,)
