"""Keeps the garbage collector's full passes out of key presses.

A full collection walks every object the process holds. The console holds a great many that live as long as it
does (Textual, Rich, pydantic models, the Kubernetes client's modules) and, on a big cluster, thousands of watched
objects: measured on 1,000 pods, an automatic full pass stopped the loop for 135-160 ms, and a key press that landed
behind one waited for it. So, while the app runs:

* what exists once the first screen is up is frozen (``gc.freeze``): those objects live as long as the process,
  and later walks skip them;
* automatic full passes are off (young generations are still collected as usual, and cost little);
* the app runs a full pass itself when the operator has not touched a key for ``IDLE_S`` and ``EVERY_S`` have passed
  since the last one, or after ``AT_MOST_S`` whatever happens, so cyclic garbage never piles up.

Stopping restores the interpreter's settings (tests run many apps in one process).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

IDLE_S = 2.0
EVERY_S = 30.0
AT_MOST_S = 300.0
NO_AUTOMATIC_FULL_PASS = 1_000_000  # young collections between full ones: in practice never


class QuietCollector:
    def __init__(self, clock: Callable[[], float] = time.monotonic, collect: Callable[[], object] = gc.collect) -> None:
        self._clock, self._collect = clock, collect
        self._saved: tuple[int, int, int] | None = None
        self.last_input = self.last_full = clock()
        self.full_passes = 0

    def start(self) -> None:
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        self._collect()
        gc.freeze()
        gc.set_threshold(self._saved[0], self._saved[1], NO_AUTOMATIC_FULL_PASS)
        self.last_full = self._clock()

    def stop(self) -> None:
        if self._saved is None:
            return
        gc.set_threshold(*self._saved)
        gc.unfreeze()
        self._saved = None

    def input_seen(self) -> None:
        self.last_input = self._clock()

    def tick(self) -> bool:
        """Run a full pass if it is time (see the module's docstring); True when one ran."""
        now = self._clock()
        since_full = now - self.last_full
        if since_full < AT_MOST_S and (now - self.last_input < IDLE_S or since_full < EVERY_S):
            return False
        self._collect()
        self.last_full = now
        self.full_passes += 1
        return True
