"""Runs every controller once per tick on the server's event loop (so each pass is atomic against API writes);
the clock that drives their delays is injectable, and ``tick()`` can be called directly to step them by hand."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.kubesim.controllers.base import Context, Kinds, Settings
from services.kubesim.controllers.collector import Collector
from services.kubesim.controllers.jobs import Jobs
from services.kubesim.controllers.kubelet import Kubelet
from services.kubesim.controllers.scheduler import Scheduler
from services.kubesim.controllers.workloads import Deployments, ReplicaSets, StatefulSets
from services.kubesim.discovery import Registry
from services.kubesim.store import Store

LOG = logging.getLogger(__name__)


class Controller(Protocol):
    def tick(self) -> None: ...


class Controllers:
    def __init__(self, store: Store, registry: Registry, settings: Settings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or Settings()
        context = Context(store, Kinds.of(registry), self.settings, clock)
        # The collector first, then owners, so the pods they create are scheduled and started in the same pass.
        self.controllers: list[Controller] = [Collector(context), Deployments(context), ReplicaSets(context),
                                              StatefulSets(context), Jobs(context), Scheduler(context),
                                              Kubelet(context)]
        self._task: asyncio.Task[None] | None = None

    def tick(self) -> None:
        for controller in self.controllers:
            try:
                controller.tick()
            except Exception:  # one controller's bad object must not stop the others or later ticks
                LOG.exception("kubesim controller %s failed", type(controller).__name__)

    def start(self) -> None:
        """Starts ticking on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(self.settings.tick)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
