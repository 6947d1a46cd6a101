"""The control plane: validated, versioned, audited changes to routing weights and drains.

Every change is a compare-and-set on the state version through the StateStore, committed with
its audit entry before it is applied here or acknowledged. Changes made by other replicas arrive
through the store's ``watch`` and are applied the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from services.gateway.config import GatewayConfig
from services.gateway.runtime import Gateway
from services.gateway.state.base import AuditEntry, ControlState, StaleVersion, StateStore, StoreUnavailable

log = logging.getLogger("switchboard.control")


class UnknownName(LookupError):
    """A pool or target the configuration does not have (404)."""


class InvalidChange(ValueError):
    """A change that fails validation (422); ``field`` names the offending part of the body."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def default_state_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "switchboard" / "gateway-state.db"


def build_store(config: GatewayConfig) -> StateStore:
    settings = config.state
    if settings.backend == "redis":
        from services.gateway.state.redis_store import RedisStore

        return RedisStore(settings.redis_url or "", prefix=settings.redis_prefix)
    from services.gateway.state.sqlite_store import SQLiteStore

    return SQLiteStore(settings.path or default_state_path())


class ControlPlane:
    def __init__(self, gw: Gateway, store: StateStore) -> None:
        self.gw = gw
        self.store = store
        self.state = ControlState()
        self._watcher: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    @property
    def degraded(self) -> str | None:
        return self.store.degraded

    async def start(self) -> None:
        """Load the stored state (keep the configured one if the store is down) and follow changes."""
        try:
            await self.store.open()
            self.apply(await self.store.load())
        except StoreUnavailable as exc:
            log.error("state store unavailable at start-up, serving the configured weights: %s", exc)
        self._watcher = asyncio.create_task(self.store.watch(self._on_change))

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.store.close()

    def _on_change(self, state: ControlState) -> None:
        if state.version != self.state.version:
            log.info("state changed elsewhere: now version %d", state.version)
            self.apply(state)

    def apply(self, state: ControlState) -> None:
        """Make ``state`` the live routing state: configured weights overlaid by stored pools."""
        config, router = self.gw.config, self.gw.router
        weights = {name: dict(pool.targets) for name, pool in config.pools.items()}
        for pool, targets in state.weights.items():
            if pool not in weights:
                log.warning("stored weights for pool %r ignored: not in the configuration", pool)
                continue
            weights[pool].update({t: w for t, w in targets.items() if t in weights[pool]})
        router.weights = weights
        router.drained = {t for t in state.drained if t in config.targets}
        self.gw.metrics.set_weights(weights)
        self.state = state

    # ---- writes ------------------------------------------------------------------------------

    def _pool(self, pool: str) -> dict[str, int]:
        if pool not in self.gw.router.weights:
            raise UnknownName(f"unknown pool '{pool}'")
        return self.gw.router.weights[pool]

    async def _commit(self, base_version: int, state: ControlState, entry: AuditEntry) -> ControlState:
        async with self._write_lock:
            try:
                committed = await self.store.commit(base_version, state, entry)
            except StaleVersion as stale:
                self._on_change(stale.current)
                raise
            self.apply(committed)
            return committed

    async def set_weights(
        self, pool: str, weights: dict[str, int], base_version: int, reason: str, actor: str, operator: str | None
    ) -> ControlState:
        current = self._pool(pool)
        unknown = sorted(set(weights) - set(current))
        if unknown:
            raise UnknownName(f"pool '{pool}' has no target {', '.join(repr(t) for t in unknown)}")
        after = {**current, **weights}
        if not any(after.values()):
            raise InvalidChange("at least one target weight must be above 0", "weights")
        now = time.time()
        version = base_version + 1
        state = replace(self.state, version=version, weights={**self.state.weights, pool: after},
                        updated_at=now, updated_by=operator or actor)
        entry = AuditEntry(version=version, time=now, actor=actor, operator=operator, action="set_weights",
                           target=pool, reason=reason, before=dict(current), after=after)
        return await self._commit(base_version, state, entry)

    async def set_drained(
        self, target: str, drained: bool, base_version: int | None, reason: str, actor: str, operator: str | None
    ) -> ControlState:
        if target not in self.gw.config.targets:
            raise UnknownName(f"unknown target '{target}'")
        base = self.state.version if base_version is None else base_version
        was = target in self.state.drained
        names = set(self.state.drained) | {target} if drained else set(self.state.drained) - {target}
        now = time.time()
        state = replace(self.state, version=base + 1, drained=tuple(sorted(names)), updated_at=now,
                        updated_by=operator or actor)
        entry = AuditEntry(version=base + 1, time=now, actor=actor, operator=operator,
                           action="drain" if drained else "undrain", target=target, reason=reason,
                           before={"drained": was}, after={"drained": drained})
        return await self._commit(base, state, entry)
