"""Runs every controller once per tick on the server's event loop (so each pass is atomic against API writes);
the clock that drives their delays is injectable, and ``tick()`` can be called directly to step them by hand."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.kubesim.controllers.analysis import AnalysisRuns
from services.kubesim.controllers.base import Context, Kinds, Settings
from services.kubesim.controllers.collector import Collector
from services.kubesim.controllers.hpa import Hpas
from services.kubesim.controllers.jobs import Jobs
from services.kubesim.controllers.keda import ScaledObjects
from services.kubesim.controllers.kubelet import Kubelet
from services.kubesim.controllers.rollouts import Rollouts
from services.kubesim.controllers.scheduler import Scheduler
from services.kubesim.controllers.workloads import Deployments, ReplicaSets, StatefulSets
from services.kubesim.discovery import Registry
from services.kubesim.metrics import MetricBoard
from services.kubesim.store import Store

LOG = logging.getLogger(__name__)


SOURCE_RETRY_S = 1.0


class Controller(Protocol):
    def tick(self) -> None: ...


ExtraController = Callable[[Context], Controller]  # builds a controller beside the built-in ones (a timeline)


class Source(Protocol):
    """Writes a signal onto the board until cancelled (services/kubesim/sources)."""

    name: str

    async def run(self, board: MetricBoard, clock: Callable[[], float]) -> None: ...


class Controllers:
    def __init__(self, store: Store, registry: Registry, settings: Settings | None = None,
                 clock: Callable[[], float] = time.monotonic, sources: tuple[Source, ...] = (),
                 extra: tuple[ExtraController, ...] = ()) -> None:
        self.settings = settings or Settings()
        self.sources = sources
        self.context = context = Context(store, Kinds.of(registry), self.settings, clock)
        # The collector first, then owners, so the pods they create are scheduled and started in the same pass.
        self.controllers: list[Controller] = [Collector(context), ScaledObjects(context), Deployments(context),
                                              Rollouts(context), AnalysisRuns(context), ReplicaSets(context),
                                              StatefulSets(context), Jobs(context),
                                              Hpas(context), Scheduler(context), Kubelet(context)]
        self.controllers.extend(make(context) for make in extra)
        self._task: asyncio.Task[None] | None = None

    def tick(self) -> None:
        for controller in self.controllers:
            try:
                controller.tick()
            except Exception:  # one controller's bad object must not stop the others or later ticks
                LOG.exception("kubesim controller %s failed", type(controller).__name__)

    @property
    def board(self) -> MetricBoard:
        return self.context.board

    def start(self) -> None:
        """Starts ticking, and every source, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        for source in self.sources:
            self.context.spawn(self._supervise(source), f"source {source.name}")

    async def _supervise(self, source: Source) -> None:
        """A source that fails is logged and started again: a metric outage must not end the simulation."""
        while True:
            try:
                await source.run(self.context.board, self.context.clock)
            except Exception:
                LOG.exception("kubesim metric source %s failed; restarting it", source.name)
            await asyncio.sleep(SOURCE_RETRY_S)

    async def _run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.settings.tick)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for task in list(self.context.tasks):
            task.cancel()
