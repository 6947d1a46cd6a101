"""The default StateStore: one SQLite file in WAL mode with synchronous=FULL.

State and audit entry are written in one ``BEGIN IMMEDIATE`` transaction, so a process killed at
any point leaves the old state or the new one with its audit entry, never a mix, and a commit
that returned has been fsynced. External actions (which change no state) go to a table of their own,
``external_audit``, in the same way; ``audit`` merges both. Several processes may share the file;
``watch`` polls the version.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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

log = logging.getLogger("switchboard.state")

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    version INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
-- Entries that change no state: several may share a version, so they cannot live in audit (keyed by version).
CREATE TABLE IF NOT EXISTS external_audit (
    id INTEGER PRIMARY KEY,      -- insertion order
    version INTEGER NOT NULL,    -- the state version the action was taken at
    time REAL NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS external_audit_time ON external_audit (time, version);
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT NOT NULL,
    kind TEXT NOT NULL,          -- 'm': a minute's requests and tokens; 'p': a budget period's spend
    bucket INTEGER NOT NULL,     -- the minute index, or the period's start (Unix seconds)
    requests INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    spend REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, kind, bucket)
);
"""

SHARED_SCHEMA = """
CREATE TABLE IF NOT EXISTS shared (
    channel TEXT NOT NULL,
    member TEXT NOT NULL,
    doc TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (channel, member)
);
CREATE TABLE IF NOT EXISTS lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

#: Minute counters older than this many minutes are deleted when usage is synced.
KEEP_MINUTES = 5

# Both audit tables merged, newest first: by time, then version, then insertion (an external entry made at
# version N came after the commit that produced N; external entries by their id). Each side is cut to the
# limit first, through its time index, so a long history is not sorted on every read.
MERGED_AUDIT = """
SELECT entry FROM (
    SELECT * FROM (SELECT time, version, 0 AS external, version AS seq, entry FROM audit
                   WHERE time >= :since ORDER BY time DESC, version DESC LIMIT :limit)
    UNION ALL
    SELECT * FROM (SELECT time, version, 1 AS external, id AS seq, entry FROM external_audit
                   WHERE time >= :since ORDER BY time DESC, version DESC, id DESC LIMIT :limit)
) ORDER BY time DESC, version DESC, external DESC, seq DESC LIMIT :limit
"""


class SQLiteStore(StateStore):
    def __init__(self, path: str | Path, poll_s: float = 0.5) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self.degraded = None
        self._side_conn: sqlite3.Connection | None = None
        self._side_lock = threading.Lock()
        self._schema_ready = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")  # per connection; WAL mode is kept in the file (see _open)
        return conn

    async def _run(self, func, *args):  # type: ignore[no-untyped-def]
        """Run a blocking SQLite operation off the event loop; errors become StoreUnavailable."""
        try:
            result = await asyncio.to_thread(func, *args)
        except sqlite3.Error as exc:
            self.degraded = f"sqlite store {self.path} failed: {exc}"
            raise StoreUnavailable(self.degraded) from exc
        self.degraded = None
        return result

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create_schema()

    def _create_schema(self) -> None:
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA + SHARED_SCHEMA)
        finally:
            conn.close()
        self._schema_ready = True

    def _ensure_schema(self) -> None:
        """Run the schema script if ``open`` could not (the file was unreachable at start-up): a file written by
        an older version lacks the tables added since, and the audit reads and appends need them."""
        if not self._schema_ready:
            self._create_schema()

    async def open(self) -> None:
        try:
            await self._run(self._open)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path.parent}: {exc}") from exc

    @staticmethod
    def _load(conn: sqlite3.Connection) -> ControlState:
        row = conn.execute("SELECT doc FROM state WHERE id = 1").fetchone()
        if not row:
            return ControlState()
        try:
            return ControlState.from_json(row[0])
        except ValueError as exc:  # reported like an unreadable file: the last good state stays in use
            raise sqlite3.DatabaseError(f"corrupt state row: {exc}") from None

    def _load_once(self) -> ControlState:
        conn = self._connect()
        try:
            return self._load(conn)
        finally:
            conn.close()

    async def load(self) -> ControlState:
        return await self._run(self._load_once)

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, on ``conn`` or on a connection of its own: committed when the
        block ends, rolled back when it raises."""
        own = conn is None
        conn = conn or self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            if own:
                conn.close()

    @contextlib.contextmanager
    def _side_connection(self) -> Iterator[sqlite3.Connection]:
        """The connection for the frequent small writes beside the state (usage, shared documents, leases),
        kept open: they run several times a second, and opening a connection costs more than they do.
        synchronous=NORMAL: on power loss they may lose their last second, never more; a process crash loses
        nothing. One user at a time (the lock); after an error the next user gets a fresh connection."""
        with self._side_lock:
            if self._side_conn is None:
                conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA synchronous=NORMAL")
                self._side_conn = conn
            try:
                yield self._side_conn
            except sqlite3.Error:
                self._side_conn.close()
                self._side_conn = None
                raise

    def _commit(self, base_version: int, state: ControlState, entry: AuditEntry) -> ControlState:
        with self._transaction() as conn:
            current = self._load(conn)
            if current.version != base_version:
                raise StaleVersion(current)
            conn.execute(
                "INSERT INTO state (id, version, doc) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version, doc = excluded.doc",
                (state.version, state.to_json()),
            )
            conn.execute("INSERT INTO audit (version, time, entry) VALUES (?, ?, ?)",
                         (entry.version, entry.time, entry.to_json()))
        return state

    async def commit(self, base_version: int, state: ControlState, entry: AuditEntry) -> ControlState:
        return await self._run(self._commit, base_version, state, entry)

    def _append_audit(self, entry: AuditEntry) -> None:
        self._ensure_schema()
        with self._transaction() as conn:
            conn.execute("INSERT INTO external_audit (version, time, entry) VALUES (?, ?, ?)",
                         (entry.version, entry.time, entry.to_json()))

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._run(self._append_audit, entry)

    def _audit(self, since: float | None, limit: int) -> list[AuditEntry]:
        self._ensure_schema()
        conn = self._connect()
        try:
            rows = conn.execute(MERGED_AUDIT, {"since": since if since is not None else float("-inf"),
                                               "limit": limit}).fetchall()
        finally:
            conn.close()
        return [AuditEntry.from_json(row[0]) for row in rows]

    async def audit(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        return await self._run(self._audit, since, limit)

    async def watch(self, on_change: OnChange) -> None:
        """Poll the version; the first read is handed over too (a change may have landed since the
        caller's load). An unreadable or corrupt row is logged once and the last good state kept."""
        seen: int | None = None
        failing: str | None = None
        while True:
            try:
                state = await self.load()
            except StoreUnavailable as exc:
                if str(exc) != failing:
                    log.error("state watch: %s; keeping the last good state", exc)
                failing = str(exc)
            else:
                failing = None
                if state.version != seen:
                    seen = state.version
                    try:
                        result = on_change(state)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception("state watch: applying version %d failed", state.version)
            await asyncio.sleep(self.poll_s)

    def _sync_usage(self, counts: CountDeltas, spend: SpendDeltas, reads: list[UsageRead]) -> dict[str, UsageTotals]:
        with self._side_connection() as conn:
            return self._sync_usage_on(conn, counts, spend, reads)

    def _sync_usage_on(self, conn: sqlite3.Connection, counts: CountDeltas, spend: SpendDeltas,
                       reads: list[UsageRead]) -> dict[str, UsageTotals]:
        with self._transaction(conn):
            conn.executemany(
                "INSERT INTO key_usage (key_id, kind, bucket, requests, tokens) VALUES (?, 'm', ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, tokens = tokens + excluded.tokens",
                [(key_id, minute, requests, tokens) for (key_id, minute), (requests, tokens) in counts.items()])
            conn.executemany(
                "INSERT INTO key_usage (key_id, kind, bucket, spend) VALUES (?, 'p', ?, ?) "
                "ON CONFLICT DO UPDATE SET spend = spend + excluded.spend",
                [(key_id, start, amount) for (key_id, start), amount in spend.items()])
            if reads:
                conn.execute("DELETE FROM key_usage WHERE kind = 'm' AND bucket < ?",
                             (min(r.minute for r in reads) - KEEP_MINUTES,))
            totals = {}
            for read in reads:
                rows = dict(((kind, bucket), (requests, tokens, spent)) for kind, bucket, requests, tokens, spent in
                            conn.execute("SELECT kind, bucket, requests, tokens, spend FROM key_usage WHERE key_id = ? "
                                         "AND ((kind = 'm' AND bucket IN (?, ?)) OR (kind = 'p' AND bucket = ?))",
                                         (read.key_id, read.minute - 1, read.minute, read.period)))
                previous = rows.get(("m", read.minute - 1), (0, 0, 0.0))
                current = rows.get(("m", read.minute), (0, 0, 0.0))
                totals[read.key_id] = UsageTotals(previous[0], previous[1], current[0], current[1],
                                                  rows.get(("p", read.period), (0, 0, 0.0))[2])
        return totals

    async def sync_usage(
        self, counts: CountDeltas, spend: SpendDeltas, reads: list[UsageRead]
    ) -> dict[str, UsageTotals]:
        return await self._run(self._sync_usage, counts, spend, reads)

    def _publish(self, channel: str, member: str, doc: str, ttl_s: float) -> None:
        now = time.time()
        with self._side_connection() as side, self._transaction(side) as conn:
            conn.execute("INSERT INTO shared (channel, member, doc, expires_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT DO UPDATE SET doc = excluded.doc, expires_at = excluded.expires_at",
                         (channel, member, doc, now + ttl_s))
            conn.execute("DELETE FROM shared WHERE expires_at < ?", (now,))

    async def publish(self, channel: str, member: str, doc: str, ttl_s: float) -> None:
        await self._run(self._publish, channel, member, doc, ttl_s)

    def _gather(self, channel: str) -> dict[str, str]:
        with self._side_connection() as conn:
            rows = conn.execute("SELECT member, doc FROM shared WHERE channel = ? AND expires_at >= ?",
                                (channel, time.time()))
            return dict(rows.fetchall())

    async def gather(self, channel: str) -> dict[str, str]:
        return await self._run(self._gather, channel)

    def _acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        with self._side_connection() as side, self._transaction(side) as conn:
            row = conn.execute("SELECT holder, expires_at FROM lease WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] >= now:
                return False
            conn.execute("INSERT INTO lease (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT DO UPDATE "
                         "SET holder = excluded.holder, expires_at = excluded.expires_at", (name, holder, now + ttl_s))
            return True

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        return await self._run(self._acquire_lease, name, holder, ttl_s)

    def _close_side_connection(self) -> None:
        with self._side_lock:
            if self._side_conn is not None:
                self._side_conn.close()
                self._side_conn = None

    async def close(self) -> None:
        await asyncio.to_thread(self._close_side_connection)
