"""Console test fixtures: a private tmux, an engine ``/metrics`` stand-in and a gateway with a two-target pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.console.harness import NO_UPSTREAM, EngineStandin, Tmux, TmuxMissing
from tests.gateway_harness import RunningGateway, fast_settings, openai_target


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A private tmux server for the test, killed after it."""
    try:
        session = Tmux()
    except TmuxMissing as exc:
        pytest.fail(str(exc))
    yield session
    session.kill()


@pytest.fixture
def engine_standin() -> Iterator[EngineStandin]:
    server = EngineStandin().start()
    yield server
    server.stop()


@pytest.fixture
def split_gateway(gateway: Callable[[dict[str, Any]], RunningGateway]) -> RunningGateway:
    """Targets a and b at 50/50 in pool ``split``, plus pool ``solo`` with a alone."""
    return gateway({
        **fast_settings(),
        "targets": {"a": openai_target(NO_UPSTREAM, "model-a"), "b": openai_target(NO_UPSTREAM, "model-b")},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}, "solo": {"targets": {"a": 100}}},
        "routes": {"r": {"pool": "split"}},
    })
