"""Waiting on a condition, never on a fixed sleep: returns the moment ``check()`` gives something truthy, fails
naming what it waited for after a deadline generous enough for a loaded 2-core machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

DEADLINE_S = 60.0


def wait_for(what: str, check: Callable[[], Any], within_s: float = DEADLINE_S, every_s: float = 0.02) -> Any:
    """``check()``'s first truthy answer."""
    end = time.monotonic() + within_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            pytest.fail(f"timed out after {within_s:g} s waiting for {what}")
        time.sleep(every_s)


async def until(what: str, check: Callable[[], Any], within_s: float = DEADLINE_S, every_s: float = 0.02) -> Any:
    """The same on an event loop, so what runs on it (the source under test) keeps running meanwhile."""
    end = time.monotonic() + within_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            pytest.fail(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)
