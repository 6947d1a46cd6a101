"""Shared fixtures: stand-in upstreams, gateways and a redis-server on loopback, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import gateway_harness
from tests.gateway_harness import RunningGateway
from tests.redis_server import RedisServer
from tests.standins import Standin


@pytest.fixture
def standin() -> Iterator[Callable[..., Standin]]:
    started: list[Standin] = []

    def make(kind: str = "openai", name: str = "up", **kwargs: Any) -> Standin:
        server = Standin(kind=kind, name=name, reply=kwargs.pop("reply", f"Hello from {name}"), **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of the test's own (modules that share one across their tests define a module-scoped one)."""
    with RedisServer() as running:
        yield running


@pytest.fixture
def gateway() -> Iterator[Callable[[dict[str, Any]], RunningGateway]]:
    started: list[RunningGateway] = []

    def make(config: dict[str, Any]) -> RunningGateway:
        running = RunningGateway(config).start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture(params=["direct", "sdk"])
def client_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test twice: openai targets sending directly, then through the SDK's own client."""
    monkeypatch.setattr(gateway_harness, "CLIENT_MODE", request.param)
    return request.param
