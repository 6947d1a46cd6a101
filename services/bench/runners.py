"""How a benchmark is run: the ``Runner`` protocol, live ``Progress``, and the runner registry.

``builtin`` is our asyncio load generator (``loadgen``); ``vllm`` runs ``vllm bench serve`` from the backend's
virtualenv (``runner_vllm``); ``job`` runs it in a Kubernetes Job (``runner_job``). Each module is imported only
when its runner is asked for.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.bench.result import BenchResult
from services.bench.spec import BenchSpec


@dataclass(frozen=True)
class Progress:
    """A snapshot while a run goes: counts, elapsed time, and rolling figures over the last few seconds.

    ``line`` carries a runner's log line (vllm, job) when there is one; rolling figures are None until known.
    """

    done: int
    failed: int
    total: int
    elapsed_s: float
    output_tok_s: float | None = None
    ttft_median_ms: float | None = None
    itl_median_ms: float | None = None
    phase: str = "run"  # "warmup" | "run" | "done"
    rate: float | None = None  # the request rate of this run (sweeps report each)
    line: str | None = None


ProgressCallback = Callable[[Progress], None]


class Runner(Protocol):
    name: str

    async def run(self, spec: BenchSpec, progress: ProgressCallback | None = None,
                  cancel: asyncio.Event | None = None) -> BenchResult:
        """One run of ``spec`` (no sweep: ``run_sweep`` does one run per rate). A set ``cancel`` stops sending at
        once and returns what was measured so far, with ``cancelled`` True."""
        ...


class BuiltinRunner:
    name = "builtin"

    async def run(self, spec: BenchSpec, progress: ProgressCallback | None = None,
                  cancel: asyncio.Event | None = None) -> BenchResult:
        from services.bench import loadgen

        return await loadgen.run(spec, progress, cancel)


_RUNNER_MODULES = {"vllm": ("services.bench.runner_vllm", "VllmRunner"),
                   "job": ("services.bench.runner_job", "JobRunner")}


def get_runner(name: str) -> Runner:
    """The runner called ``name`` (ValueError for an unknown one)."""
    if name == "builtin":
        return BuiltinRunner()
    if name not in _RUNNER_MODULES:
        raise ValueError(f"unknown runner {name!r}: builtin, vllm or job")
    module, attribute = _RUNNER_MODULES[name]
    runner: Runner = getattr(importlib.import_module(module), attribute)()
    return runner


async def run_sweep(runner: Runner, spec: BenchSpec, progress: ProgressCallback | None = None,
                    cancel: asyncio.Event | None = None) -> list[BenchResult]:
    """Every run of ``spec`` (one per sweep rate, or one), sharing a ``sweep_id`` when there are several.

    A cancelled run ends the sweep; its partial result is the last one returned.
    """
    runs = spec.runs()
    sweep_id = uuid.uuid4().hex[:12] if len(runs) > 1 else None
    results: list[BenchResult] = []
    for one in runs:
        result = await runner.run(one, progress, cancel)
        if sweep_id is not None:
            result = result.model_copy(update={"sweep_id": sweep_id})
        results.append(result)
        if result.cancelled or (cancel is not None and cancel.is_set()):
            break
    return results
