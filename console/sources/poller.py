"""One collector per source: fetch, wait the interval, fetch again. Polls never overlap.

Each fetch has a timeout; a hung or dead source marks its snapshot STALE (the last data is shown,
aging) and then DOWN, without touching any other source or the UI. Neither a failing fetch nor a
failing ``on_update`` ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Health(enum.StrEnum):
    WAITING = "WAITING"  # no answer yet
    LIVE = "LIVE"
    STALE = "STALE"  # the last poll failed; the data shown is older than one interval
    DOWN = "DOWN"  # failing for longer than ``down_after_s``, or never answered


@dataclass(frozen=True)
class Observed(Generic[T]):
    """An immutable snapshot of what a source last said."""

    source: str
    data: T | None = None
    fetched_at: float | None = None  # time.monotonic() of the last success
    health: Health = Health.WAITING
    error: str | None = None

    def age_s(self, now: float | None = None) -> float | None:
        if self.fetched_at is None:
            return None
        return (time.monotonic() if now is None else now) - self.fetched_at


class Poller(Generic[T]):
    def __init__(
        self,
        source: str,
        fetch: Callable[[], Awaitable[T]],
        on_update: Callable[[Observed[T]], None],
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        down_after_s: float = 10.0,
    ) -> None:
        self.source = source
        self.fetch = fetch
        self.on_update = on_update
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.down_after_s = down_after_s
        self.paused = False
        self.snapshot: Observed[T] = Observed(source)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._first_failure: float | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"poll-{self.source}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def refresh_now(self) -> None:
        """Poll at once instead of waiting for the interval (still never overlapping)."""
        self._wake.set()

    async def poll_once(self) -> Observed[T]:
        now = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await self.fetch()
        except Exception as exc:
            message = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
            self._first_failure = self._first_failure or now
            failing_for = now - self._first_failure
            down = self.snapshot.fetched_at is None or failing_for >= self.down_after_s
            self.snapshot = replace(self.snapshot, health=Health.DOWN if down else Health.STALE, error=message)
        else:
            self._first_failure = None
            self.snapshot = Observed(self.source, data, time.monotonic(), Health.LIVE, None)
        self._deliver()
        return self.snapshot

    def _deliver(self) -> None:
        """Hand the snapshot on. A callback that raises must not end the polling: the snapshot then says
        what failed (STALE: what is on screen is older than what was fetched) and is handed on once more."""
        try:
            self.on_update(self.snapshot)
        except Exception as exc:
            log.exception("%s: showing a snapshot failed", self.source)
            self.snapshot = replace(self.snapshot, health=Health.STALE if self.snapshot.fetched_at else Health.DOWN,
                                    error=f"could not show the update: {describe(exc)}")
            try:
                self.on_update(self.snapshot)
            except Exception:
                log.exception("%s: showing the failure failed too", self.source)

    async def _run(self) -> None:
        while True:
            if not self.paused:
                await self.poll_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
