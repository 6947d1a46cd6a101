"""Runs the gateway under uvicorn (uvloop, httptools) and drains in-flight requests on SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import uvicorn

from services.gateway.app import GatewayApp
from services.gateway.config import ConfigError, GatewayConfig, load_config
from services.gateway.runtime import Gateway


def build_app(config: GatewayConfig, source: str = "<memory>") -> GatewayApp:
    return GatewayApp(Gateway(config, source))


def uvicorn_config(app: GatewayApp, config: GatewayConfig, port: int | None = None) -> uvicorn.Config:
    server = config.server
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port if port is None else port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=server.access_log,
        log_level=server.log_level,
        timeout_graceful_shutdown=server.grace_period_s,
        server_header=False,
        date_header=False,
    )


def serve(config_path: str | Path, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT; uvicorn stops accepting, lets in-flight requests finish
    within the grace period, then exits. Returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx2", "openai", "anthropic"):  # one INFO line per upstream request otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"switchboard gateway: {exc}", file=sys.stderr)
        return 2
    if host is not None:
        config = config.model_copy(update={"server": config.server.model_copy(update={"host": host})})
    app = build_app(config, str(config_path))
    server = uvicorn.Server(uvicorn_config(app, config, port))
    # uvicorn re-raises the signal it caught once it has drained; with the default handler that
    # would kill the process by SIGTERM instead of exiting 0 after a clean drain.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    return 0 if server.started else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="gateway YAML file (example: services/gateway/examples/)")
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="listen port (overrides server.port)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard gateway", description="Run the LLM gateway.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return serve(args.config, args.host, args.port)
