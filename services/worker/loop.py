"""One batch worker: reads queued requests from the streams' consumer group, sends each through the gateway and
stores its result, at least once and with idempotent results.

For each entry: the batch must still be running (entries of a cancelled or vanished batch are acknowledged and
dropped, also when the store refuses the attempt because a cancel came in between), the attempt is counted, the
request goes to the gateway with the worker token as the batch's key at batch priority, and the result is stored
(the first result for a custom_id wins), then the entry is acknowledged and deleted (so a stream's length is its
backlog) and the batch finalized when that was its last request.

What a worker holds is safe if it dies: the entry stays pending in the group, and any worker takes it over
(XAUTOCLAIM) once it has been idle past ``visibility_timeout_s``. A live worker keeps its entries from looking
idle with a heartbeat (XCLAIM of its own entries, checked owner-first in one script so it never takes back an
entry another worker has claimed). On SIGTERM a worker stops reading, lets what is in flight finish within the
grace period and hands back the rest: Redis has no "un-deliver", so handing back means leaving the entry pending
with its idle time set past the visibility timeout (XCLAIM ... IDLE), which makes the next XAUTOCLAIM of any
worker take it at once. Its attempt stays counted.

Redis going away is waited out (every call retried with backoff until it answers again or the worker is told to
stop); the gateway being unreachable is waited out too (the request never left, so it is no attempt). Back-pressure
(503 yielding_to_interactive or overloaded, 429 with retry-after) is waited out without counting an attempt; 5xx,
408, timeouts and dropped connections count, and after ``max_attempts`` the request goes to the error file.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import httpx
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.batch.formats import ENDPOINTS
from services.batch.store import GROUP, BatchStore
from services.worker.metrics import WorkerMetrics
from services.worker.outcome import Outcome, from_answer, no_answer, poisoned

log = logging.getLogger("switchboard.worker")

STREAMS = tuple(ENDPOINTS.values())  # "chat", "completions"
PATHS = {short: path for path, short in ENDPOINTS.items()}
RUNNING = "in_progress"
BATCH_KEY_HEADER = "x-switchboard-batch-key"
DEPARTED_AFTER = 10  # visibility timeouts without a read after which an empty consumer is taken to be gone
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)  # BusyLoadingError (AOF replay) is a ConnectionError

# Keys: stream. Args: group, consumer, idle ms to set, entry ids. Re-claims (resetting the idle time to the given
# value) only the entries this consumer still owns; answers how many.
_TOUCH = """
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    n = n + 1
  end
end
return n
"""

T = TypeVar("T")


class QueueSettings(Protocol):
    visibility_timeout_s: float
    max_attempts: int


@dataclass(frozen=True)
class WorkerOptions:
    name: str
    concurrency: int = 4
    grace_s: float = 20.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    block_ms: int = 1000


@dataclass(frozen=True)
class Entry:
    stream: str  # "chat" or "completions"
    id: str
    batch: str
    custom_id: str
    owner: str
    body: str


class _Stopping(Exception):
    """The worker was told to stop while waiting: leave the entry pending for another worker."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(short: str, entry_id: bytes | str, fields: dict) -> Entry:
    f = {_text(k): _text(v) for k, v in fields.items()}
    return Entry(short, _text(entry_id), f.get("batch", ""), f.get("custom_id", ""), f.get("owner", ""),
                 f.get("body", ""))


class Worker:
    def __init__(self, store: BatchStore, settings: QueueSettings, http: httpx.AsyncClient, gateway_url: str,
                 token: str, options: WorkerOptions, metrics: WorkerMetrics | None = None) -> None:
        self.store = store
        self.redis = store.redis
        self.settings = settings
        self.http = http
        self.gateway_url = gateway_url.rstrip("/")
        self.token = token
        self.options = options
        self.name = options.name
        self.metrics = metrics or WorkerMetrics()
        self.stop = asyncio.Event()
        self._touch = self.redis.register_script(_TOUCH)
        self._tasks: dict[asyncio.Task[bool], Entry] = {}
        self._buffer: deque[Entry] = deque()
        self._claim_cursor = dict.fromkeys(STREAMS, "0-0")
        self._redis_down_since: float | None = None

    @property
    def visibility_ms(self) -> int:
        return max(1, int(self.settings.visibility_timeout_s * 1000))

    # ---- the main loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until ``self.stop`` is set, then drain: finish within the grace period, hand back the rest."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._call(self._ensure_groups)
            next_claim = 0.0
            while not self.stop.is_set():
                self._start_buffered()
                free = self.options.concurrency - len(self._tasks)
                if free <= 0 or self._buffer:
                    await self._wait_for_room()
                    continue
                entries: list[Entry] = []
                if time.monotonic() >= next_claim:
                    entries = await self._call(partial(self._autoclaim, free))
                    await self._call(self._forget_departed)
                    next_claim = time.monotonic() + self.settings.visibility_timeout_s / 4
                if not entries:
                    entries = await self._call(partial(self._read, free))
                self._buffer.extend(entries)
        except _Stopping:
            pass
        finally:
            heartbeat.cancel()
            await self._drain()

    def _start_buffered(self) -> None:
        while self._buffer and len(self._tasks) < self.options.concurrency and not self.stop.is_set():
            entry = self._buffer.popleft()
            task = asyncio.create_task(self._process(entry))
            self._tasks[task] = entry
            task.add_done_callback(self._finished)
        self.metrics.in_flight.set(len(self._tasks) + len(self._buffer))

    def _finished(self, task: asyncio.Task[bool]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("worker task failed: %r", task.exception())
        if task.cancelled() or task.exception() is not None or task.result():
            self._tasks.pop(task, None)  # handed-back entries stay listed until _drain hands them back
        self.metrics.in_flight.set(len(self._tasks) + len(self._buffer))

    async def _wait_for_room(self) -> None:
        running = [task for task in self._tasks if not task.done()]
        stopping = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait([*running, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _drain(self) -> None:
        """Stop: hand back what was read but not started, give the running requests ``grace_s``, hand back
        what they did not finish, and leave the group when nothing is held any more."""
        self.stop.set()
        held = list(self._buffer)
        self._buffer.clear()
        owned = dict(self._tasks)
        running = [task for task in owned if not task.done()]
        if running:
            log.info("draining: %d requests in flight, up to %.0f s", len(running), self.options.grace_s)
            _, late = await asyncio.wait(running, timeout=self.options.grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        held += [entry for task, entry in owned.items()
                 if task.cancelled() or task.exception() is not None or not task.result()]
        self._tasks.clear()
        self.metrics.in_flight.set(0)
        try:
            if held:
                handed = await self._hand_back(held)
                log.info("handed back %d unfinished requests for other workers", handed)
            await self._leave_group()
        except REDIS_DOWN as exc:
            log.warning("could not hand back %d requests (redis: %s); they are claimed after the visibility "
                        "timeout", len(held), type(exc).__name__)

    # ---- redis ----------------------------------------------------------------------------------------

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried with backoff while Redis is unreachable or still loading; _Stopping when told to
        stop meanwhile."""
        delay = 0.1
        while True:
            try:
                result = await call()
            except REDIS_DOWN as exc:
                self.metrics.redis_errors.inc()
                if self._redis_down_since is None:
                    self._redis_down_since = time.monotonic()
                    log.warning("redis unavailable (%s: %s); retrying", type(exc).__name__, exc)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("a consumer group is gone (redis lost its data?); creating it again")
                await self._recreate_groups()
                continue
            else:
                if self._redis_down_since is not None:
                    log.info("redis is back after %.1f s", time.monotonic() - self._redis_down_since)
                    self._redis_down_since = None
                return result
            if not await self._pause(delay):
                raise _Stopping
            delay = min(delay * 2, 5.0)

    async def _ensure_groups(self) -> None:
        for short in STREAMS:
            await self.store.ensure_group(short)

    async def _recreate_groups(self) -> None:
        """The store creates each group once per process; after Redis lost one, the worker makes it again."""
        for short in STREAMS:
            try:
                await self.redis.xgroup_create(self.store.stream_key(short), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _read(self, count: int) -> list[Entry]:
        streams = {self.store.stream_key(short): ">" for short in STREAMS}
        reply = await self.redis.xreadgroup(GROUP, self.name, streams, count=count, block=self.options.block_ms)
        return self._entries(reply)

    def _entries(self, reply: Any) -> list[Entry]:
        by_key = {self.store.stream_key(short): short for short in STREAMS}
        pairs = reply.items() if isinstance(reply, dict) else (reply or [])
        entries = []
        for key, items in pairs:
            short = by_key[_text(key)]
            if isinstance(items, list) and len(items) == 1 and isinstance(items[0], list):
                items = items[0]  # RESP3 nests the entries once more
            entries += [_entry(short, entry_id, fields) for entry_id, fields in items if fields is not None]
        return entries

    async def _autoclaim(self, count: int) -> list[Entry]:
        """Entries of workers that died or stalled (idle past the visibility timeout), up to ``count``."""
        claimed: list[Entry] = []
        for short in STREAMS:
            if len(claimed) >= count:
                break
            reply = await self.redis.xautoclaim(self.store.stream_key(short), GROUP, self.name, self.visibility_ms,
                                                start_id=self._claim_cursor[short], count=count - len(claimed))
            self._claim_cursor[short] = _text(reply[0])
            found = [_entry(short, entry_id, fields) for entry_id, fields in reply[1] if fields]
            if found:
                self.metrics.claimed.labels(short).inc(len(found))
                log.info("claimed %d %s requests from stopped workers", len(found), short)
            claimed += found
        return claimed

    async def _forget_departed(self) -> None:
        """Remove consumers that hold nothing and have not read for ``DEPARTED_AFTER`` visibility timeouts (workers
        killed outright never leave the group themselves): the group's consumers then list the live workers. One
        that was only quiet comes back with its next read; one holding entries is never removed."""
        cutoff_ms = DEPARTED_AFTER * self.visibility_ms
        for short in STREAMS:
            key = self.store.stream_key(short)
            for consumer in await self.redis.xinfo_consumers(key, GROUP):
                name = _text(consumer["name"])
                if name != self.name and int(consumer["pending"]) == 0 and int(consumer["idle"]) > cutoff_ms:
                    await self.redis.xgroup_delconsumer(key, GROUP, name)

    async def _touch_entries(self, entries: list[Entry], idle_ms: int) -> int:
        touched = 0
        for short in STREAMS:
            ids = [entry.id for entry in entries if entry.stream == short]
            if ids:
                touched += int(await self._touch(keys=[self.store.stream_key(short)],
                                                 args=[GROUP, self.name, idle_ms, *ids]))
        return touched

    async def _heartbeat(self) -> None:
        """Keep the entries this worker holds from looking abandoned."""
        while True:
            await asyncio.sleep(self.settings.visibility_timeout_s / 3)
            held = [*self._tasks.values(), *self._buffer]
            if held:
                try:
                    await self._touch_entries(held, 0)
                except REDIS_DOWN:
                    self.metrics.redis_errors.inc()

    async def _hand_back(self, entries: list[Entry]) -> int:
        return await self._touch_entries(entries, self.visibility_ms + 1)

    async def _leave_group(self) -> None:
        """Remove this consumer from the groups where it holds nothing (never where it does: that would drop
        its pending entries)."""
        for short in STREAMS:
            key = self.store.stream_key(short)
            try:
                consumers = await self.redis.xinfo_consumers(key, GROUP)
            except ResponseError:
                continue
            mine = next((c for c in consumers if _text(c["name"]) == self.name), None)
            if mine is not None and int(mine["pending"]) == 0:
                await self.redis.xgroup_delconsumer(key, GROUP, self.name)

    async def _ack(self, entry: Entry) -> None:
        key = self.store.stream_key(entry.stream)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(key, GROUP, entry.id)
            pipe.xdel(key, entry.id)
            await pipe.execute()

    # ---- one request -----------------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False (at once) when the worker is told to stop meanwhile."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    def _backoff(self, attempt: int) -> float:
        base = min(self.options.backoff_base_s * 2 ** max(attempt - 1, 0), self.options.backoff_max_s)
        return base * random.uniform(0.5, 1.0)

    async def _process(self, entry: Entry) -> bool:
        """Handle one entry; True once it is acknowledged, False when it was left pending (the worker stops)."""
        try:
            return await self._handle(entry)
        except _Stopping:
            return False

    async def _handle(self, entry: Entry) -> bool:
        store = self.store
        if not await self._runnable(entry):
            return True
        attempts = await self._call(lambda: store.attempt(entry.batch, entry.custom_id))
        if attempts == 0:  # cancelled since the status check: the store counted nothing
            await self._drop(entry)
            return True
        last: Outcome | None = None
        waits = 0
        while True:
            if attempts > self.settings.max_attempts:
                ok, line, word = False, poisoned(entry.custom_id, attempts - 1, last), "poisoned"
                break
            outcome = await self._send(entry)
            if outcome.kind == "done":
                assert outcome.line is not None
                ok, line, word = outcome.ok, outcome.line, outcome.reason
                break
            if outcome.kind == "wait":
                self.metrics.retries.labels(entry.stream, outcome.reason).inc()
                waits += 1
                delay = outcome.wait_s * random.uniform(1.0, 1.5) if outcome.wait_s else self._backoff(min(waits, 6))
                if not await self._pause(delay):
                    return False
            else:
                last = outcome
                if not await self._pause(self._backoff(attempts)):
                    return False
                attempts = await self._call(lambda: store.attempt(entry.batch, entry.custom_id))
                if attempts == 0:
                    await self._drop(entry)
                    return True
                if attempts <= self.settings.max_attempts:
                    self.metrics.retries.labels(entry.stream, outcome.reason).inc()
            if not await self._runnable(entry):
                return True
        stored = await self._call(lambda: store.record_result(entry.batch, entry.custom_id, line, ok))
        self.metrics.processed.labels(entry.stream, word if stored else "duplicate").inc()
        await self._call(lambda: self._ack(entry))
        await self._call(lambda: store.maybe_finalize(entry.batch))
        return True

    async def _runnable(self, entry: Entry) -> bool:
        """Whether the entry's batch still runs; if not (cancelled, final, expired), the entry is dropped and the
        batch finalized if this was the last of it in flight."""
        status = await self._call(lambda: self.store.batch_status(entry.batch))
        if status == RUNNING:
            return True
        await self._drop(entry)
        return False

    async def _drop(self, entry: Entry) -> None:
        """Leave an entry of a batch that no longer runs unsent: acknowledge and delete it, drop its in-flight mark
        (so a cancelling batch need not wait for the mark to go stale) and finalize the batch if it was the last."""
        self.metrics.processed.labels(entry.stream, "skipped").inc()
        await self._call(lambda: self._ack(entry))
        await self._call(lambda: self.store.abandon(entry.batch, entry.custom_id))
        await self._call(lambda: self.store.maybe_finalize(entry.batch))

    async def _send(self, entry: Entry) -> Outcome:
        headers = {"authorization": f"Bearer {self.token}", "content-type": "application/json",
                   "x-switchboard-priority": "batch"}
        if entry.owner:
            headers[BATCH_KEY_HEADER] = entry.owner
        try:
            answer = await self.http.post(self.gateway_url + PATHS[entry.stream], content=entry.body.encode(),
                                          headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the gateway: not an attempt
            log.warning("gateway unreachable (%s); waiting", type(exc).__name__)
            return Outcome("wait", "unreachable")
        except httpx.TimeoutException as exc:
            return no_answer(entry.custom_id, "timeout", f"no answer from the gateway in time ({type(exc).__name__})")
        except httpx.TransportError as exc:
            return no_answer(entry.custom_id, "connection", f"the connection to the gateway failed "
                                                            f"({type(exc).__name__})")
        return from_answer(entry.custom_id, answer.status_code, answer.headers, answer.content)
