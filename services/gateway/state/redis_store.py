"""RedisStore: the control state shared by several gateway replicas through one Redis.

Layout (``prefix`` defaults to ``switchboard``):

- ``{prefix}:state``: the :class:`ControlState` JSON string;
- ``{prefix}:audit``: a stream, one entry per change and per external action (which changes no state), one
  field ``entry`` holding the AuditEntry JSON; stream order is the order they were written;
- ``{prefix}:changes``: a pub/sub channel; each message is the new version;
- ``{prefix}:usage:{key id}:{minute}``: a hash (``r`` requests, ``t`` tokens) of one client key's minute, kept
  a few minutes; ``{prefix}:spend:{key id}:{period start}``: the key's spend in a budget period (a float).

A commit is one Lua script (compare-and-set on the version, SET, XADD, PUBLISH), so the state and its
audit entry are written together or not at all; an external action is one XADD to the same stream, by a
script of its own (untrimmed, like the commits' entries). Durability is the server's: with ``appendonly yes``
and ``appendfsync always`` Redis fsyncs the AOF before it replies, so a commit or append that returned is on
disk. ``open()`` warns when the server is configured otherwise.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import re
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.gateway.state.base import (
    AuditEntry,
    ControlState,
    CountDeltas,
    OnChange,
    SpendDeltas,
    StaleVersion,
    StateStore,
    StoreUnavailable,
    UsageRead,
    UsageTotals,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
OPERATION_TIMEOUT_S = 2.0
#: The watcher's reconnect backoff: starts small, capped so recovery follows Redis's return within ~1 s.
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 1.0
#: Stream ids carry the Redis server's clock, entry times the writer's; ``audit(since=...)`` widens its id
#: range by this much so a replica whose clock runs ahead of Redis's does not lose entries.
AUDIT_CLOCK_SKEW_S = 60.0

USAGE_TTL_S = 300
SPEND_TTL_S = 40 * 86400  # longer than the longest budget period that expires (a month)

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)  # builtin TimeoutError is an OSError

def _honour_swallowed_cancel() -> None:
    """redis-py's timed pub/sub read can swallow a cancellation that lands as its timeout expires: the
    task stays "cancelling" but runs on, and whoever awaits it (the gateway's stop) hangs. Raise it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# KEYS: state, audit. ARGV: base version, new state JSON, audit entry JSON, channel, new version.
# Returns {1, new state} when written, {0, current state or ""} when the base version is stale.
_COMMIT_LUA = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  version = tonumber(cjson.decode(current)['version'])
end
if version ~= tonumber(ARGV[1]) then
  return {0, current or ''}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'entry', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {1, ARGV[2]}
"""

# KEYS: audit. ARGV: audit entry JSON. Appends unless the stream's last entry is this one: the client's one
# retry after a broken connection would otherwise add it twice (its time, to the microsecond, tells it apart).
_APPEND_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] and last[1][2][2] == ARGV[1] then
  return 0
end
redis.call('XADD', KEYS[1], '*', 'entry', ARGV[1])
return 1
"""

# KEYS: the lease. ARGV: holder, ttl in ms. Takes a free or lapsed lease, renews one the holder has.
_LEASE_LUA = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_PASSWORD = re.compile(r"(?P<head>://[^:/@]*:)[^@/]*@")


def redact(text: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host`` (also inside error messages)."""
    return _PASSWORD.sub(r"\g<head>***@", text)


def _is_unwritable(exc: ResponseError) -> bool:
    """Replies meaning "this server cannot take the write now" rather than "the request is wrong":
    a read-only replica after a failover, or an AOF that cannot be written (so nothing is durable)."""
    message = str(exc)
    return any(code in message for code in ("READONLY", "MISCONF", "LOADING"))


class RedisStore(StateStore):
    """The shared store for several replicas. ``degraded`` says why Redis cannot be reached, else None."""

    def __init__(self, url: str, prefix: str = "switchboard", poll_s: float = 0.5) -> None:
        self.url = url
        self.safe_url = redact(url)
        self.prefix = prefix
        self.poll_s = poll_s
        self.state_key = f"{prefix}:state"
        self.audit_key = f"{prefix}:audit"
        self.channel = f"{prefix}:changes"
        self.degraded: str | None = None
        # The newest version handed to this store's user (by load, commit, StaleVersion or watch), and a
        # counter bumped on every update: the watcher uses it to drop a read that raced with a commit,
        # which would otherwise report an older state after a newer one.
        self._seen: int | None = None
        self._seen_gen = 0
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=OPERATION_TIMEOUT_S,
            # One immediate retry on connection errors only: it replaces a pooled socket that died with a
            # restarted Redis; timeouts are not retried so a hung Redis costs one timeout, not several.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._commit_script = self._client.register_script(_COMMIT_LUA)
        self._lease_script = self._client.register_script(_LEASE_LUA)
        self._append_script = self._client.register_script(_APPEND_LUA)

    # -- helpers -----------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = redact(f"redis unreachable at {self.safe_url}: {str(exc) or type(exc).__name__}")
        if self.degraded != reason:
            log.warning("state store degraded: %s", reason)
        self.degraded = reason
        return StoreUnavailable(reason)

    def _healthy(self) -> None:
        if self.degraded is not None:
            log.info("state store recovered: redis at %s is reachable again", self.safe_url)
        self.degraded = None

    def _saw(self, version: int) -> None:
        self._seen = version
        self._seen_gen += 1

    async def _call(self, coro: Any) -> Any:
        """Await one Redis operation, mapping "cannot reach Redis" to StoreUnavailable."""
        try:
            result = await coro
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        except ResponseError as exc:
            if _is_unwritable(exc):
                raise self._unavailable(exc) from exc
            raise
        self._healthy()
        return result

    async def _read_state(self) -> ControlState:
        raw = await self._call(self._client.get(self.state_key))
        return ControlState() if raw is None else ControlState.from_json(raw)

    # -- StateStore --------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._call(self._client.ping())
        try:
            config = await self._call(self._client.config_get("append*"))
        except ResponseError as exc:  # CONFIG renamed or denied by ACL (managed Redis): cannot check
            log.warning("cannot check redis durability settings at %s (%s); commits need "
                        "appendonly yes and appendfsync always to be durable", self.safe_url, exc)
            return
        settings = {_text(k): _text(v) for k, v in (config or {}).items()}
        appendonly, appendfsync = settings.get("appendonly"), settings.get("appendfsync")
        if appendonly != "yes" or appendfsync != "always":
            log.warning(
                "redis at %s has appendonly=%s appendfsync=%s: acknowledged changes may be lost on a crash; "
                "set appendonly yes and appendfsync always", self.safe_url, appendonly, appendfsync,
            )

    async def load(self) -> ControlState:
        state = await self._read_state()
        self._saw(state.version)
        return state

    async def commit(self, base_version: int, state: ControlState, entry: AuditEntry) -> ControlState:
        if state.version != base_version + 1:
            raise ValueError(f"state version {state.version} must be base version {base_version} + 1")
        written, raw = await self._call(self._commit_script(
            keys=[self.state_key, self.audit_key],
            args=[base_version, state.to_json(), entry.to_json(), self.channel, state.version],
        ))
        if not int(written):
            current = ControlState.from_json(raw) if raw else ControlState()
            if current == state:
                # Our own write: the connection broke after Redis ran the script, and the client's one
                # retry ran it again. (A timeout is not retried: it raises StoreUnavailable although the
                # write may have landed; a later commit on the old base then gets StaleVersion with it.)
                self._saw(state.version)
                return state
            self._saw(current.version)
            raise StaleVersion(current)
        self._saw(state.version)
        return state

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._call(self._append_script(keys=[self.audit_key], args=[entry.to_json()]))

    async def audit(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        if limit <= 0:
            return []
        # Stream ids are the server's millisecond clock: start the scan a little early (clock skew),
        # filter on the entry's own time, and page until ``limit`` entries pass the filter.
        min_id = "-" if since is None else f"{max(0, int((since - AUDIT_CLOCK_SKEW_S) * 1000))}-0"
        max_id = "+"
        entries: list[AuditEntry] = []
        while len(entries) < limit:
            batch = await self._call(self._client.xrevrange(self.audit_key, max_id, min_id, count=limit))
            for stream_id, fields in batch:
                raw = fields.get(b"entry")
                if raw is None:
                    log.warning("audit stream %s: entry %s has no 'entry' field", self.audit_key, _text(stream_id))
                    continue
                item = AuditEntry.from_json(raw)
                if since is None or item.time >= since:
                    entries.append(item)
                    if len(entries) == limit:
                        break
            if len(batch) < limit:
                break
            max_id = f"({_text(batch[-1][0])}"
        return entries

    async def watch(self, on_change: OnChange) -> None:
        """Subscribe to the channel and, as a safety net for messages lost while disconnected, poll the
        state every ``poll_s``. If Redis is unreachable when the watch starts, the first state read after
        it returns is reported (the user could not have loaded it)."""
        if self._seen is None:
            try:
                await self.load()
            except StoreUnavailable:
                pass  # reported as a change once Redis is back
            except Exception:
                log.exception("state watch: first read from %s failed", self.safe_url)
        backoff = BACKOFF_MIN_S
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await self._call(pubsub.subscribe(self.channel))
                # Read after subscribing: whatever was written while we were away is seen here.
                await self._check(on_change)
                backoff = BACKOFF_MIN_S
                next_poll = loop.time() + self.poll_s
                while True:
                    timeout = max(0.0, next_poll - loop.time())
                    message = await self._call(pubsub.get_message(timeout=timeout))
                    _honour_swallowed_cancel()
                    if message is not None or loop.time() >= next_poll:
                        await self._check(on_change)
                        next_poll = loop.time() + self.poll_s
            except StoreUnavailable:
                pass  # degraded is set; retry below
            except Exception:
                log.exception("state watch on %s failed; retrying", self.safe_url)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is already broken; nothing to release cleanly
                    log.debug("closing the pub/sub connection failed", exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _check(self, on_change: OnChange) -> None:
        generation = self._seen_gen
        state = await self._read_state()
        if self._seen_gen != generation:
            return  # a load/commit meanwhile handed out a state that may be newer; the next poll decides
        if state.version == self._seen:
            return
        self._saw(state.version)
        try:
            result = on_change(state)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("state watch: on_change failed for version %d", state.version)

    async def sync_usage(
        self, counts: CountDeltas, spend: SpendDeltas, reads: list[UsageRead]
    ) -> dict[str, UsageTotals]:
        """One round trip: add this replica's counts, then read every replica's totals."""
        pipe = self._client.pipeline(transaction=False)
        for (key_id, minute), (requests, tokens) in counts.items():
            name = f"{self.prefix}:usage:{key_id}:{minute}"
            if requests:
                pipe.hincrby(name, "r", requests)
            if tokens:
                pipe.hincrby(name, "t", tokens)
            pipe.expire(name, USAGE_TTL_S)
        for (key_id, start), amount in spend.items():
            name = f"{self.prefix}:spend:{key_id}:{start}"
            pipe.incrbyfloat(name, amount)
            if start:  # the 'total' period (start 0) never expires
                pipe.expire(name, SPEND_TTL_S)
        first_read = len(pipe)
        for read in reads:
            pipe.hmget(f"{self.prefix}:usage:{read.key_id}:{read.minute - 1}", "r", "t")
            pipe.hmget(f"{self.prefix}:usage:{read.key_id}:{read.minute}", "r", "t")
            pipe.get(f"{self.prefix}:spend:{read.key_id}:{read.period}")
        results = (await self._call(pipe.execute()))[first_read:]
        totals = {}
        for i, read in enumerate(reads):
            previous, current, spent = results[3 * i: 3 * i + 3]
            totals[read.key_id] = UsageTotals(int(previous[0] or 0), int(previous[1] or 0), int(current[0] or 0),
                                              int(current[1] or 0), float(spent or 0.0))
        return totals

    async def publish(self, channel: str, member: str, doc: str, ttl_s: float) -> None:
        """A hash per channel; each member's field carries its own expiry time, so a replica that stopped
        publishing drops out even while the others keep the hash alive."""
        name = f"{self.prefix}:shared:{channel}"
        envelope = json.dumps({"until": time.time() + ttl_s, "doc": doc})
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(name, member, envelope)
        pipe.expire(name, max(1, math.ceil(ttl_s)))
        await self._call(pipe.execute())

    async def gather(self, channel: str) -> dict[str, str]:
        raw = await self._call(self._client.hgetall(f"{self.prefix}:shared:{channel}"))
        now, live = time.time(), {}
        for member, envelope in raw.items():
            data = json.loads(envelope)
            if data["until"] >= now:
                live[_text(member)] = data["doc"]
        return live

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        taken = await self._call(self._lease_script(keys=[f"{self.prefix}:lease:{name}"],
                                                    args=[holder, max(1, int(ttl_s * 1000))]))
        return bool(int(taken))

    async def close(self) -> None:
        await self._client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
