"""Runs the gateway under uvicorn (uvloop, httptools) and drains in-flight requests on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
import uvloop

from services.gateway.app import GatewayApp
from services.gateway.auth import TokenSet
from services.gateway.config import ConfigError, GatewayConfig, is_loopback, load_config
from services.gateway.control import ControlPlane, build_store
from services.gateway.runtime import Gateway


def build_app(config: GatewayConfig, source: str = "<memory>") -> GatewayApp:
    store = build_store(config)
    gateway = Gateway(config, store, source)
    control = ControlPlane(gateway, store)
    tokens = TokenSet.load(config.admin.tokens, source)
    return GatewayApp(gateway, control, tokens, serve_admin=config.admin.port is None)


def uvicorn_config(app: object, config: GatewayConfig, port: int | None = None, *,
                   host: str | None = None, lifespan: str = "on") -> uvicorn.Config:
    server = config.server
    return uvicorn.Config(
        app,
        host=host or server.host,
        port=server.port if port is None else port,
        loop="uvloop",
        http="httptools",
        lifespan=lifespan,
        access_log=server.access_log,
        log_level=server.log_level,
        timeout_graceful_shutdown=server.grace_period_s,
        server_header=False,
        date_header=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting: one middleware less per request
    )


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by :func:`_serve_all` for every listener at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_all(servers: list[_Server]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    await asyncio.gather(*(server.serve() for server in servers))


def serve(config_path: str | Path, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT: stop accepting, let in-flight requests finish within the
    grace period, then exit 0. Returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx2", "openai", "anthropic"):  # one INFO line per upstream request otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        config = load_config(config_path)
        if host is not None:
            config = config.model_copy(update={"server": config.server.model_copy(update={"host": host})})
            if config.auth.mode == "open" and not is_loopback(host):
                raise ConfigError(f"{config_path}: auth.mode: 'open' is allowed only on a loopback listener, "
                                  f"not --host {host}; use mode 'keys'")
        app = build_app(config, str(config_path))
    except ConfigError as exc:
        print(f"switchboard gateway: {exc}", file=sys.stderr)
        return 2
    if config.auth.mode == "open":
        logging.getLogger("switchboard.gateway").warning(
            "auth.mode is 'open': anyone who can reach %s:%s may call /v1/* without a client key, and tier "
            "headers are trusted; use auth.mode 'keys' for anything but a local test",
            config.server.host, port or config.server.port)
    servers = [_Server(uvicorn_config(app, config, port))]
    if not app.serve_admin:
        admin = config.admin
        servers.append(_Server(uvicorn_config(app.admin, config, admin.port, host=admin.host, lifespan="off")))
    uvloop.run(_serve_all(servers))
    return 0 if all(server.started for server in servers) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="gateway YAML file (example: services/gateway/examples/)")
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="listen port (overrides server.port)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard gateway", description="Run the LLM gateway.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return serve(args.config, args.host, args.port)
