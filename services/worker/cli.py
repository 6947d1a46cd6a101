"""``switchboard worker``: one batch worker process (its options are declared in console/cli.py), configured
from the gateway's own config: its ``batch:`` section is the one source of truth for Redis, the prefix, the
visibility timeout and max_attempts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

import httpx

from services.batch.store import BatchStore, safe_url
from services.gateway.config import BatchSettings, ConfigError, load_config
from services.worker.loop import Worker, WorkerOptions
from services.worker.metrics import WorkerMetrics

log = logging.getLogger("switchboard.worker")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"switchboard worker: {exc}", file=sys.stderr)
        return 2
    if not config.batch.redis_url:
        print(f"switchboard worker: {args.config}: batch.redis_url is not set; the batch queue is off",
              file=sys.stderr)
        return 2
    token = os.environ.get(args.token_env, "")
    if not token:
        print(f"switchboard worker: ${args.token_env} is unset or empty: it must hold a worker token",
              file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("switchboard worker: --concurrency must be at least 1", file=sys.stderr)
        return 2
    options = WorkerOptions(name=args.name or f"{socket.gethostname()}-{os.getpid()}", concurrency=args.concurrency,
                            grace_s=args.grace_s, backoff_base_s=args.backoff_s)
    metrics = WorkerMetrics()
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, args.metrics_host)
    asyncio.run(serve(config.batch, args.gateway_url, token, options, metrics, args.request_timeout_s))
    return 0


async def serve(settings: BatchSettings, gateway_url: str, token: str, options: WorkerOptions,
                metrics: WorkerMetrics, request_timeout_s: float) -> None:
    assert settings.redis_url is not None
    store = BatchStore.from_url(settings.redis_url, settings)
    timeout = httpx.Timeout(request_timeout_s, connect=5.0)
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        worker = Worker(store, settings, http, gateway_url, token, options, metrics)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop.set)
        log.info("worker %s: redis %s, prefix %s, gateway %s, concurrency %d", options.name,
                 safe_url(settings.redis_url), settings.prefix, gateway_url, options.concurrency)
        try:
            await worker.run()
        finally:
            await store.aclose()
    log.info("worker %s stopped", options.name)
