"""Lengths read from a real Redis with redis.asyncio: what KEDA's ``redis`` (LLEN of a list) and ``redis-streams``
(XLEN of a stream, or a consumer group's pending count from XPENDING) scalers read, and a Source that keeps any
board series at a key's length. Every read opens its own short-lived connection on kubesim's loop, so an outage
is a failed read (LengthFailed) and never a stuck client.

Credentials (``passwordFromEnv``, a TriggerAuthentication's ``password``) are out of scope: the simulated triggers
reach an unauthenticated Redis on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.kubesim.metrics import MetricBoard, Series

LOG = logging.getLogger(__name__)
TIMEOUT_S = 5.0


class LengthFailed(Exception):
    """Redis could not be reached, or the key holds something whose length cannot be read."""


async def _read(url: str, what: str, command: Callable[[aioredis.Redis], object], timeout_s: float) -> int:
    try:
        async with aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s) as client:
            return int(await command(client))  # type: ignore[misc]
    except (RedisError, OSError, TimeoutError) as exc:
        raise LengthFailed(f"cannot read {what} from Redis at {_where(url)}: {exc.__class__.__name__}") from exc


def _where(url: str) -> str:
    """host:port of a redis URL, without any credentials it carries."""
    return url.split("@")[-1].split("://")[-1].split("/")[0]


async def list_length(url: str, key: str, timeout_s: float = TIMEOUT_S) -> int:
    """LLEN (0 for a missing key), as KEDA's ``redis`` trigger reads its ``listName``."""
    return await _read(url, f"the length of list {key!r}", lambda client: client.llen(key), timeout_s)


async def stream_length(url: str, stream: str, timeout_s: float = TIMEOUT_S) -> int:
    """XLEN (0 for a missing key): KEDA's ``redis-streams`` trigger without a ``consumerGroup``."""
    return await _read(url, f"the length of stream {stream!r}", lambda client: client.xlen(stream), timeout_s)


async def pending_count(url: str, stream: str, group: str, timeout_s: float = TIMEOUT_S) -> int:
    """The consumer group's pending-entries count (XPENDING): ``redis-streams`` with a ``consumerGroup``."""

    async def pending(client: aioredis.Redis) -> int:
        return int((await client.xpending(stream, group))["pending"])

    return await _read(url, f"the pending entries of group {group!r} on stream {stream!r}", pending, timeout_s)


async def key_length(url: str, key: str, timeout_s: float = TIMEOUT_S) -> int:
    """The length of whatever ``key`` holds (list, stream, set, sorted set, hash); 0 when it does not exist."""
    lengths = {"list": "LLEN", "stream": "XLEN", "set": "SCARD", "zset": "ZCARD", "hash": "HLEN"}

    async def length(client: aioredis.Redis) -> int:
        kind = await client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind == "none":
            return 0
        if kind not in lengths:
            raise LengthFailed(f"Redis key {key!r} holds a {kind}, which has no length")
        return int(await client.execute_command(lengths[kind], key))

    return await _read(url, f"the length of key {key!r}", length, timeout_s)


class RedisLengthSource:
    """Keeps ``series`` at the length of a real Redis key, read every ``interval_s``; an unreachable Redis (or a
    key without a length) clears the series, so whoever reads it sees the metric as unavailable."""

    def __init__(self, url: str, key: str, series: Series, interval_s: float = 5.0) -> None:
        self.url, self.key, self.series, self.interval_s = url, key, series, interval_s
        self.name = f"redis {_where(url)} {key}"

    async def run(self, board: MetricBoard, clock: Callable[[], float]) -> None:
        while True:
            try:
                board.set(self.series, await key_length(self.url, self.key), clock(), "redis")
            except LengthFailed as exc:
                LOG.warning("kubesim source %s: %s", self.name, exc)
                board.clear(self.series)
            await asyncio.sleep(self.interval_s)
