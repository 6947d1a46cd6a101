"""Pilot helpers: a Context for a loopback gateway, waiting on a condition, typing text."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from console.contexts import Context
from tests.gateway_harness import RunningGateway


def console_context(gw: RunningGateway, engine_url: str | None = None, **overrides: Any) -> Context:
    values: dict[str, Any] = {"name": "test", "admin_url": gw.url, "token_env": "SWITCHBOARD_TEST_OPERATOR_TOKEN",
                              "engine_url": engine_url, "poll_interval_s": 0.5, "timeout_s": 0.5}
    values.update(overrides)
    return Context(**values)


async def wait_for(pilot: Pilot[Any], condition: Callable[[], object], within_s: float = 5.0,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await pilot.pause(0.02)


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*["space" if ch == " " else ch for ch in text])
