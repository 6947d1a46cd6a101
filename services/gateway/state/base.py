"""The StateStore contract: one versioned state document plus an append-only audit log.

A write is a compare-and-set on the version, committed together with its audit entry: either both
are durable or neither is. The log also takes entries that change no state: actions taken outside the
gateway (a rollout promoted in Kubernetes), recorded so one timeline shows both. Stores raise
:class:`StaleVersion` when the base version is not the current one and :class:`StoreUnavailable` when
the backing service cannot be reached.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from services.gateway.keys import ClientKey


@dataclass(frozen=True)
class ControlState:
    """What operators changed at run time. ``weights`` holds whole pools (target -> weight) that
    override the configured ones; ``drained`` lists targets taking no new requests; ``keys`` holds the
    client keys by id (hashes only)."""

    version: int = 0
    weights: dict[str, dict[str, int]] = field(default_factory=dict)
    drained: tuple[str, ...] = ()
    updated_at: float | None = None
    updated_by: str | None = None
    keys: dict[str, ClientKey] = field(default_factory=dict)
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> canary.Release.to_dict()

    def to_json(self) -> str:
        data = asdict(self)
        data["keys"] = {key_id: key.to_dict() for key_id, key in self.keys.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ControlState:
        """Raises ValueError for a document that is not a control state (a corrupt row)."""
        try:
            data = json.loads(text)
            return cls(
                version=int(data["version"]),
                weights={pool: {t: int(w) for t, w in targets.items()} for pool, targets in data["weights"].items()},
                drained=tuple(data.get("drained", ())),
                updated_at=data.get("updated_at"),
                updated_by=data.get("updated_by"),
                keys={key_id: ClientKey.from_dict(key) for key_id, key in data.get("keys", {}).items()},
                releases=dict(data.get("releases", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a control state document: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class AuditEntry:
    version: int  # the state version this change produced; for an external action, the version it was taken at
    time: float
    actor: str  # the admin token's name
    operator: str | None  # who at the keyboard (x-switchboard-operator, user@host)
    action: str  # set_weights, drain, undrain, ...; external: rollout.promote, ...
    target: str  # the pool or target acted on; external: the object (prod-eu/ai-prod/rollouts/ai-api)
    reason: str
    before: Any
    after: Any
    kind: str = "gateway"  # or where an external action took effect ("kubernetes"); stored entries without it: gateway

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditEntry:
        return cls(**json.loads(text))


class StaleVersion(Exception):
    def __init__(self, current: ControlState) -> None:
        super().__init__(f"state is at version {current.version}")
        self.current = current


class StoreUnavailable(Exception):
    """The backing store cannot be reached; the gateway keeps its last state and refuses writes."""


class UsageRead(NamedTuple):
    """Which counters of one client key to read back: its minute (and the one before) and budget period."""

    key_id: str
    minute: int
    period: int


class UsageTotals(NamedTuple):
    """All replicas' counts for one key."""

    previous_requests: int
    previous_tokens: int
    requests: int
    tokens: int
    spend: float


#: Usage to add: (key id, minute) -> (requests, tokens), and (key id, period start) -> spend.
CountDeltas = dict[tuple[str, int], tuple[int, int]]
SpendDeltas = dict[tuple[str, int], float]

OnChange = Callable[[ControlState], Awaitable[None] | None]


class StateStore(abc.ABC):
    """Implementations: SQLiteStore (default, one file) and RedisStore (several replicas)."""

    #: Why the store is degraded (unreachable), or None when healthy.
    degraded: str | None = None

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create what is missing. May raise StoreUnavailable."""

    @abc.abstractmethod
    async def load(self) -> ControlState:
        """The current state; ``ControlState()`` (version 0) when nothing was ever written."""

    @abc.abstractmethod
    async def commit(self, base_version: int, state: ControlState, entry: AuditEntry) -> ControlState:
        """Atomically: if the stored version is ``base_version``, store ``state`` (whose version is
        ``base_version + 1``) and append ``entry``; durable before returning. Raises StaleVersion
        (with the current state) or StoreUnavailable; on either nothing is written."""

    @abc.abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None:
        """Append ``entry``, an action that changed no state here (an external one), to the audit log;
        durable before returning. May raise StoreUnavailable (the entry was not acknowledged)."""

    @abc.abstractmethod
    async def audit(self, since: float | None = None, limit: int = 100) -> list[AuditEntry]:
        """Audit entries, committed and appended alike, newest first, those at or after ``since`` (Unix
        time) when given; ``limit`` applies to the merged list."""

    @abc.abstractmethod
    async def watch(self, on_change: OnChange) -> None:
        """Run until cancelled: call ``on_change`` with the new state whenever another writer
        (another replica) changed it, within a second. Also keeps ``degraded`` current and
        recovers by itself when the backing service returns."""

    @abc.abstractmethod
    async def sync_usage(
        self, counts: CountDeltas, spend: SpendDeltas, reads: list[UsageRead]
    ) -> dict[str, UsageTotals]:
        """Add client-key usage counted by this replica and return every replica's totals for ``reads``.
        Per-minute counters expire after a few minutes; spend is kept. May raise StoreUnavailable."""

    @abc.abstractmethod
    async def publish(self, channel: str, member: str, doc: str, ttl_s: float) -> None:
        """Set ``member``'s document in ``channel`` (each replica publishes its own; they expire after
        ``ttl_s`` unless published again). May raise StoreUnavailable."""

    @abc.abstractmethod
    async def gather(self, channel: str) -> dict[str, str]:
        """Every member's live document in ``channel``."""

    @abc.abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl_s``: True when ``holder`` holds it now. A lease whose
        holder stopped renewing lapses after ``ttl_s`` and the next asker gets it."""

    @abc.abstractmethod
    async def close(self) -> None: ...
