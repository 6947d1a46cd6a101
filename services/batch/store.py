"""The batch store: batches, their queued requests and their results in Redis (layout in BATCH.md).

Keys (``P`` = ``settings.prefix``):

- ``P:stream:chat`` / ``P:stream:completions``: the queue, consumer group ``workers``; an entry holds
  ``batch``, ``custom_id``, ``owner`` and ``body``. Finished entries are acknowledged and deleted by the
  worker, so a stream's length is its backlog.
- ``P:batch:{id}``: the batch (a hash of strings, see :func:`services.batch.formats.batch_object`), plus
  ``owner``, ``owner_name``, ``seq`` and, while one caller writes the output, ``finalize_claim``.
- ``P:batch:{id}:output`` / ``:errors``: custom_id -> result line; ``:attempts``: custom_id -> count;
  ``:started``: custom_id -> when its latest attempt started (dropped when its result is written; what is
  left and younger than ``visibility_timeout_s`` is in flight); ``:entries``: the stream entry ids.
- ``P:batches`` and ``P:owner:{owner}:batches``: sorted sets of batch ids by creation order (paging);
  ``P:owner:{owner}:unfinished``: the owner's batches not yet final (``max_queued_per_key``).
- ``P:stats:{stream}:done:{minute}`` (results per minute, for throughput) and ``P:stats:{stream}:retries``.

The completion window is recorded (``expires_at``) but not enforced: a batch runs until it is done or
cancelled.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from services.admin_api import BatchProgress, QueueSnapshot, QueueStream, QueueWorker
from services.batch.files import FileStore
from services.batch.formats import ENDPOINTS, FINAL_STATUSES, batch_object
from services.batch.ids import batch_id as new_batch_id

GROUP = "workers"
QUEUE_CHUNK = 1000  # stream entries per script call when queueing (and per XDEL when cancelling)
SCAN_COUNT = 1000
FINALIZE_RECLAIM_S = 300  # a finalizer that has not finished after this long is taken to have died
RECENT_S = 3600  # finished batches the queue snapshot still lists
SNAPSHOT_BATCHES = 500  # most recent batches the queue snapshot looks at


class StoreSettings(Protocol):
    prefix: str
    file_dir: str | None
    inline_max_bytes: int
    file_ttl_s: int
    max_queued_per_key: int
    visibility_timeout_s: float


class QueueFull(Exception):
    """The key already has ``max_queued_per_key`` unfinished requests queued."""


@dataclass(frozen=True)
class QueuedRequest:
    custom_id: str
    body: str  # the request's JSON body, as a string


# Keys: batch, output, errors, started, done-per-minute counter.
# Args: custom_id, line, "1" (output) or "0" (errors), ttl, counter ttl.
_RECORD = """
local s = redis.call('HMGET', KEYS[1], 'status', 'finalize_claim')
if (s[1] ~= 'in_progress' and s[1] ~= 'cancelling') or s[2] then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 0 end
local target = KEYS[3]
local counter = 'failed'
if ARGV[3] == '1' then target = KEYS[2]; counter = 'completed' end
redis.call('HSET', target, ARGV[1], ARGV[2])
redis.call('EXPIRE', target, ARGV[4])
redis.call('HINCRBY', KEYS[1], counter, 1)
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[5])
return 1
"""

# Keys: attempts, started, retries counter, batch. Args: custom_id, now, ttl.
# Answers 0, counting nothing, when the batch no longer runs (cancelled since the worker checked its status).
_ATTEMPT = """
if redis.call('HGET', KEYS[4], 'status') ~= 'in_progress' then return 0 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if n > 1 then redis.call('INCR', KEYS[3]) end
return n
"""

# Keys: batch, started. Args: now, in-flight cutoff (started after it = in flight), reclaim cutoff.
# Answers the final status the caller must write ('completed' or 'cancelled'), or false.
_CLAIM = """
local s = redis.call('HMGET', KEYS[1], 'status', 'total', 'completed', 'failed', 'finalize_claim')
local status = s[1]
if s[5] and tonumber(s[5]) > tonumber(ARGV[3]) then return false end
if status == 'in_progress' or status == 'finalizing' then
  if tonumber(s[3]) + tonumber(s[4]) < tonumber(s[2]) then return false end
  if status == 'in_progress' then redis.call('HSET', KEYS[1], 'status', 'finalizing', 'finalizing_at', ARGV[1]) end
  redis.call('HSET', KEYS[1], 'finalize_claim', ARGV[1])
  return 'completed'
elseif status == 'cancelling' then
  local started = redis.call('HVALS', KEYS[2])
  for _, t in ipairs(started) do
    if tonumber(t) > tonumber(ARGV[2]) then return false end
  end
  redis.call('HSET', KEYS[1], 'finalize_claim', ARGV[1])
  return 'cancelled'
end
return false
"""

# Keys: stream, the batch's entry list. Args: batch id, owner, then custom_id and body of each request.
# One call queues a whole chunk (a pipeline of single XADDs costs several times more on the client); the group
# is made first if it is missing (a Redis that lost it), so no entry is ever queued where the group would skip it.
_QUEUE = """
redis.pcall('XGROUP', 'CREATE', KEYS[1], 'workers', '0', 'MKSTREAM')  -- BUSYGROUP (it exists) is the usual answer
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'batch', ARGV[1], 'custom_id', ARGV[i], 'owner', ARGV[2],
                             'body', ARGV[i + 1])
end
redis.call('RPUSH', KEYS[2], unpack(ids))
return #ids
"""

# Keys: batch. Args: now. Answers 1 when the batch moved to cancelling.
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'validating' or status == 'in_progress' then
  redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', ARGV[1])
  return 1
end
return 0
"""


def safe_url(url: str) -> str:
    """The Redis URL without its password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<redis url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: dict) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}  # type: ignore[misc]


class BatchStore:
    def __init__(self, redis: aioredis.Redis, settings: StoreSettings, clock=time.time,
                 redis_url: str | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.prefix = settings.prefix
        self.files = FileStore(redis, settings, clock)
        self.redis_url = safe_url(redis_url) if redis_url else "redis"
        self._record = redis.register_script(_RECORD)
        self._attempt = redis.register_script(_ATTEMPT)
        self._claim = redis.register_script(_CLAIM)
        self._cancel = redis.register_script(_CANCEL)
        self._queue_chunk = redis.register_script(_QUEUE)
        self._streams: dict[str, str] = {}  # batch id -> its stream's short name ("chat"); endpoints never change
        self._groups_ready: set[str] = set()

    @classmethod
    def from_url(cls, url: str, settings: StoreSettings, clock=time.time) -> BatchStore:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30)
        return cls(client, settings, clock, redis_url=url)

    async def aclose(self) -> None:
        await self.redis.aclose()

    # ---- keys ---------------------------------------------------------------------------------------

    def stream_key(self, short: str) -> str:
        return f"{self.prefix}:stream:{short}"

    def batch_key(self, batch_id: str, part: str | None = None) -> str:
        return f"{self.prefix}:batch:{batch_id}" + (f":{part}" if part else "")

    def _owner_key(self, owner: str, part: str) -> str:
        return f"{self.prefix}:owner:{owner}:{part}"

    def _done_key(self, short: str, minute: int) -> str:
        return f"{self.prefix}:stats:{short}:done:{minute}"

    def _retries_key(self, short: str) -> str:
        return f"{self.prefix}:stats:{short}:retries"

    async def ensure_group(self, short: str) -> None:
        """Create the stream's consumer group (and the stream) unless it exists.

        From id 0, not ``$``: should the group ever be missing while entries are in the stream (a Redis
        restored from an old snapshot, say), those entries are unfinished requests and must be delivered."""
        if short in self._groups_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream_key(short), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_ready.add(short)

    async def _stream_of(self, batch_id: str) -> str:
        short = self._streams.get(batch_id)
        if short is None:
            endpoint = _text(await self.redis.hget(self.batch_key(batch_id), "endpoint"))
            short = ENDPOINTS.get(endpoint or "", "chat")
            if len(self._streams) > 10_000:
                self._streams.clear()
            self._streams[batch_id] = short
        return short

    # ---- creating and reading batches ----------------------------------------------------------------

    async def queued_for(self, owner: str) -> int:
        """Requests of ``owner``'s unfinished batches that have no result yet."""
        ids = [_text(i) for i in await self.redis.smembers(self._owner_key(owner, "unfinished"))]
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hmget(self.batch_key(bid), "total", "completed", "failed", "status")
            rows = await pipe.execute()
        queued = 0
        for row in rows:
            if row[0] is None or _text(row[3]) in FINAL_STATUSES:
                continue
            queued += int(row[0]) - int(row[1] or 0) - int(row[2] or 0)
        return queued

    async def enqueue(self, *, owner: str, owner_name: str | None, input_file_id: str, endpoint: str,
                      requests: list[QueuedRequest], completion_window: str = "24h",
                      metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Create a batch of validated requests and queue them; answers the Batch object (``in_progress``).

        Raises QueueFull past ``max_queued_per_key``."""
        short = ENDPOINTS[endpoint]
        limit = self.settings.max_queued_per_key
        queued = await self.queued_for(owner)
        if queued + len(requests) > limit:
            raise QueueFull(f"this key has {queued} requests queued; {len(requests)} more would pass its limit "
                            f"of {limit} (batch.max_queued_per_key)")
        bid = new_batch_id()
        now = self.clock()
        ttl = self.settings.file_ttl_s
        seq = await self.redis.incr(f"{self.prefix}:seq")
        fields = {"id": bid, "endpoint": endpoint, "input_file_id": input_file_id,
                  "completion_window": completion_window, "status": "in_progress", "created_at": str(int(now)),
                  "in_progress_at": str(int(now)), "expires_at": str(int(now + 86400)),
                  "total": str(len(requests)), "completed": "0", "failed": "0",
                  "metadata": json.dumps(metadata) if metadata else "", "owner": owner,
                  "owner_name": owner_name or "", "seq": str(seq)}
        # The batch is in_progress before its first entry is visible: a worker reading an entry at once
        # must find a batch it may run.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.batch_key(bid), mapping=fields)
            pipe.expire(self.batch_key(bid), ttl)
            pipe.zadd(f"{self.prefix}:batches", {bid: seq})
            pipe.zadd(self._owner_key(owner, "batches"), {bid: seq})
            pipe.sadd(self._owner_key(owner, "unfinished"), bid)
            await pipe.execute()
        self._streams[bid] = short
        try:
            await self._queue(bid, owner, short, requests)
        except RedisError:
            await self._fail(bid, "queueing_failed", "the queue could not take the batch's requests; none will run")
            raise
        return batch_object(fields)

    async def _queue(self, bid: str, owner: str, short: str, requests: list[QueuedRequest]) -> None:
        keys = [self.stream_key(short), self.batch_key(bid, "entries")]
        for start in range(0, len(requests), QUEUE_CHUNK):
            args = [bid, owner]
            for request in requests[start:start + QUEUE_CHUNK]:
                args += (request.custom_id, request.body)
            await self._queue_chunk(keys=keys, args=args)
        await self.redis.expire(keys[1], self.settings.file_ttl_s)

    async def _fail(self, bid: str, code: str, message: str) -> None:
        """Best effort: mark a batch failed and take its entries out of the queue."""
        try:
            short = await self._stream_of(bid)
            await self._remove_entries(bid, short)
            errors = {"object": "list", "data": [{"code": code, "message": message, "param": None, "line": None}]}
            now = str(int(self.clock()))
            await self.redis.hset(self.batch_key(bid), mapping={"status": "failed", "failed_at": now,
                                                                 "errors": json.dumps(errors)})
        except RedisError:
            pass

    async def _fields(self, batch_id: str) -> dict[str, str] | None:
        if not batch_id.startswith("batch_"):
            return None
        fields = await self.redis.hgetall(self.batch_key(batch_id))
        return _decode(fields) if fields else None

    async def get_batch(self, batch_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """The Batch object; None when there is none, or (with ``owner``) when it is another owner's.

        A cancelling batch is finalized here when nothing of it is in flight any more: its entries left the
        stream when it was cancelled, so no worker may come along to do it (one that died mid-request, say)."""
        fields = await self._fields(batch_id)
        if fields is None or (owner is not None and fields.get("owner", "") != owner):
            return None
        if fields["status"] == "cancelling" and "finalize_claim" not in fields:
            await self.maybe_finalize(batch_id)
            fields = await self._fields(batch_id) or fields
        return batch_object(fields)

    async def batch_owner(self, batch_id: str) -> tuple[str, str | None] | None:
        """(owner key id, owner key name) of a batch, or None when there is no such batch."""
        row = await self.redis.hmget(self.batch_key(batch_id), "owner", "owner_name")
        if row[0] is None:
            return None
        return _text(row[0]) or "", _text(row[1]) or None

    async def batch_status(self, batch_id: str) -> str | None:
        return _text(await self.redis.hget(self.batch_key(batch_id), "status"))

    async def list_batches(self, owner: str | None, *, after: str | None = None,
                           limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, ``limit`` batches after the one named ``after``; and whether more follow.
        ``owner`` None lists every owner's batches (the admin API)."""
        zkey = f"{self.prefix}:batches" if owner is None else self._owner_key(owner, "batches")
        start = 0
        if after:
            rank = await self.redis.zrevrank(zkey, after)
            if rank is None:
                return [], False
            start = rank + 1
        ids = [_text(i) for i in await self.redis.zrevrange(zkey, start, start + limit)]
        batches: list[dict[str, Any]] = []
        gone: list[str] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hgetall(self.batch_key(bid))
            rows = await pipe.execute()
        for bid, row in zip(ids, rows, strict=True):
            if row:
                batches.append(batch_object(_decode(row)) | ({"owner_name": _text(row.get(b"owner_name")) or None}
                                                            if owner is None else {}))
            else:
                gone.append(bid)  # type: ignore[arg-type]
        if gone:
            await self.redis.zrem(zkey, *gone)
        return batches[:limit], len(ids) > limit

    # ---- the worker's calls --------------------------------------------------------------------------

    async def attempt(self, batch_id: str, custom_id: str) -> int:
        """Count an attempt at a request and mark it in flight; answers the new count, or 0 when the batch is
        no longer in progress (cancelled or gone): then the request must not be sent."""
        short = await self._stream_of(batch_id)
        keys = [self.batch_key(batch_id, "attempts"), self.batch_key(batch_id, "started"), self._retries_key(short),
                self.batch_key(batch_id)]
        return int(await self._attempt(keys=keys, args=[custom_id, repr(self.clock()), self.settings.file_ttl_s]))

    async def abandon(self, batch_id: str, custom_id: str) -> None:
        """Drop a request's in-flight mark without a result: its worker attempted it, then found the batch
        cancelled (between retries) and dropped the entry. Without this the cancel waits for the mark to be
        older than ``visibility_timeout_s``. Harmless for a request that holds no mark."""
        await self.redis.hdel(self.batch_key(batch_id, "started"), custom_id)

    async def record_result(self, batch_id: str, custom_id: str, line: dict, ok: bool) -> bool:
        """Store a request's result line (output when ``ok``, else errors). The first result for a custom_id
        wins; answers False when one was already there or the batch no longer takes results."""
        short = await self._stream_of(batch_id)
        minute = int(self.clock() // 60)
        keys = [self.batch_key(batch_id), self.batch_key(batch_id, "output"), self.batch_key(batch_id, "errors"),
                self.batch_key(batch_id, "started"), self._done_key(short, minute)]
        args = [custom_id, json.dumps(line, separators=(",", ":")), "1" if ok else "0", self.settings.file_ttl_s, 180]
        return bool(await self._record(keys=keys, args=args))

    async def maybe_finalize(self, batch_id: str) -> None:
        """When every request has a result (or the batch is cancelling and none is in flight), write the
        output and error files and move the batch to completed (or cancelled). One caller wins the claim;
        the others return at once."""
        now = self.clock()
        in_flight_after = now - self.settings.visibility_timeout_s
        final = await self._claim(keys=[self.batch_key(batch_id), self.batch_key(batch_id, "started")],
                                  args=[repr(now), repr(in_flight_after), repr(now - FINALIZE_RECLAIM_S)])
        if final:
            await self._finalize(batch_id, _text(final))  # type: ignore[arg-type]

    async def _finalize(self, batch_id: str, final: str) -> None:
        row = await self.redis.hmget(self.batch_key(batch_id), "owner")
        owner = _text(row[0]) or ""
        output = await self._lines(self.batch_key(batch_id, "output"))
        errors = await self._lines(self.batch_key(batch_id, "errors"))
        output_file = await self.files.create(output, filename=f"{batch_id}_output.jsonl", purpose="batch_output",
                                              owner=owner)
        fields = {"status": final, f"{final}_at": str(int(self.clock())), "output_file_id": output_file["id"]}
        if errors:
            error_file = await self.files.create(errors, filename=f"{batch_id}_error.jsonl", purpose="batch_output",
                                                 owner=owner)
            fields["error_file_id"] = error_file["id"]
        short = await self._stream_of(batch_id)
        if final == "cancelled":
            await self._remove_entries(batch_id, short)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.batch_key(batch_id), mapping=fields)
            pipe.hdel(self.batch_key(batch_id), "finalize_claim")
            pipe.expire(self.batch_key(batch_id), self.settings.file_ttl_s)
            pipe.srem(self._owner_key(owner, "unfinished"), batch_id)
            pipe.unlink(*(self.batch_key(batch_id, part) for part in ("output", "errors", "started", "attempts",
                                                                        "entries")))
            await pipe.execute()

    async def _lines(self, key: str) -> bytes:
        """A results hash as JSONL (one result per line, in no particular order, as OpenAI's files are)."""
        lines: list[bytes] = []
        async for _, value in self.redis.hscan_iter(key, count=SCAN_COUNT):
            lines.append(value)
        return b"".join(line + b"\n" for line in lines)

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        """Stop a batch: ``cancelling`` at once, its queued entries leave the stream, and ``cancelled`` (with
        what finished kept in the output) once nothing of it is in flight. A final batch is left as it is.
        Answers the Batch object as it stands after the call (KeyError when there is no such batch)."""
        moved = await self._cancel(keys=[self.batch_key(batch_id)], args=[str(int(self.clock()))])
        if moved:
            await self._remove_entries(batch_id, await self._stream_of(batch_id))
            await self.maybe_finalize(batch_id)
        batch = await self.get_batch(batch_id)
        if batch is None:
            raise KeyError(batch_id)
        return batch

    async def _remove_entries(self, batch_id: str, short: str) -> None:
        """Delete the batch's entries from its stream (a worker holding one still acknowledges it harmlessly)."""
        entries = self.batch_key(batch_id, "entries")
        stream = self.stream_key(short)
        start = 0
        while True:
            ids = await self.redis.lrange(entries, start, start + QUEUE_CHUNK - 1)
            if not ids:
                return
            await self.redis.xdel(stream, *ids)
            start += QUEUE_CHUNK

    # ---- the queue as the admin API shows it ---------------------------------------------------------

    async def queue_snapshot(self) -> QueueSnapshot:
        """Every stream and the recent batches; when Redis cannot be read, ``reason`` says so (no exception)."""
        try:
            streams = [await self._stream_snapshot(short) for short in ENDPOINTS.values()]
            batches = await self._recent_batches()
        except (RedisError, OSError) as exc:
            return QueueSnapshot(enabled=True, reason=f"redis unreachable at {self.redis_url}: "
                                                      f"{type(exc).__name__}")
        return QueueSnapshot(enabled=True, streams=streams, batches=batches)

    async def stream_gauges(self) -> dict[str, tuple[int, int, float | None]]:
        """Per stream: (length, pending, oldest entry's age in seconds), for the /metrics gauges."""
        gauges = {}
        for short in ENDPOINTS.values():
            length, pending, oldest = await self._stream_depth(short)
            gauges[short] = (length, pending, oldest)
        return gauges

    async def _stream_depth(self, short: str) -> tuple[int, int, float | None]:
        stream = self.stream_key(short)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xrange(stream, "-", "+", count=1)
            pipe.xpending(stream, GROUP)
            length, first, pending = await pipe.execute(raise_on_error=False)
        if isinstance(length, Exception):
            raise length
        oldest = None
        if first and not isinstance(first, Exception):
            entry_ms = int(_text(first[0][0]).split("-")[0])  # type: ignore[union-attr]
            oldest = max(0.0, self.clock() - entry_ms / 1000)
        pending_count = 0 if isinstance(pending, Exception) else int(pending["pending"])
        return int(length), pending_count, oldest

    async def _stream_snapshot(self, short: str) -> QueueStream:
        length, pending, oldest = await self._stream_depth(short)
        try:
            consumers = await self.redis.xinfo_consumers(self.stream_key(short), GROUP)
        except ResponseError:  # no stream or group yet
            consumers = []
        workers = [QueueWorker(name=_text(c["name"]) or "", pending=int(c["pending"]), idle_s=int(c["idle"]) / 1000)
                   for c in consumers]
        now = self.clock()
        minute = int(now // 60)
        done_now, done_before, retries = await self.redis.mget(
            self._done_key(short, minute), self._done_key(short, minute - 1), self._retries_key(short))
        # A sliding minute: all of this minute's count plus the part of the last one still inside the window.
        share = 1 - (now % 60) / 60
        rate = (int(done_now or 0) + int(done_before or 0) * share) / 60
        return QueueStream(endpoint=short, stream=self.stream_key(short), length=length, pending=pending,
                           oldest_age_s=oldest, workers=workers, completed_per_s=rate, retries_total=int(retries or 0))

    async def _recent_batches(self) -> list[BatchProgress]:
        ids = [_text(i) for i in await self.redis.zrevrange(f"{self.prefix}:batches", 0, SNAPSHOT_BATCHES - 1)]
        names = ("id", "endpoint", "status", "total", "completed", "failed", "created_at", "owner_name", "metadata",
                 "completed_at", "cancelled_at", "failed_at", "expired_at")
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hmget(self.batch_key(bid), *names)
            rows = await pipe.execute()
        cutoff = self.clock() - RECENT_S
        out = []
        for row in rows:
            fields = dict(zip(names, (_text(v) for v in row), strict=True))
            if fields["id"] is None:
                continue
            ended = max((float(fields[n] or 0) for n in names[-4:]), default=0.0)
            if fields["status"] in FINAL_STATUSES and ended < cutoff:
                continue
            metadata = json.loads(fields["metadata"]) if fields["metadata"] else {}
            out.append(BatchProgress(
                id=fields["id"], endpoint=fields["endpoint"] or "", status=fields["status"],  # type: ignore[arg-type]
                total=int(fields["total"] or 0), completed=int(fields["completed"] or 0),
                failed=int(fields["failed"] or 0), created_at=float(fields["created_at"] or 0),
                owner=fields["owner_name"] or None, description=metadata.get("description")))
        return out

