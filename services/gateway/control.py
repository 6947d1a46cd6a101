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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.admin_api import KeyCreate, ReleaseSpec
from services.gateway.canary import ActionRefused, Release, act, start
from services.gateway.canary_runtime import CanaryRuntime
from services.gateway.config import GatewayConfig, release_problems
from services.gateway.judge import Judge
from services.gateway.keys import SHOWN_PREFIX_LEN, ClientKey, KeyRing, generate_key, hash_key, new_key_id
from services.gateway.routing import ActiveRelease
from services.gateway.runtime import Gateway
from services.gateway.state.base import AuditEntry, ControlState, StaleVersion, StateStore, StoreUnavailable

log = logging.getLogger("switchboard.control")


class UnknownName(LookupError):
    """A pool or target the configuration does not have (404)."""


class Refused(Exception):
    """A change the current state does not allow (409): a release's phase, a name taken, a pool in a release."""


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
        settings = gw.config.canary
        self.canary = gw.canary = CanaryRuntime(self, settings.tick_s, settings.lease_ttl_s, settings.publish_s)
        self.judge = gw.judge = Judge(gw, self.canary.observe_verdict)

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
        self.canary.start()
        self.judge.start()

    async def stop(self) -> None:
        await self.judge.stop()
        await self.canary.stop()
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
        releases = {name: Release.from_dict(data) for name, data in state.releases.items()}
        running: dict[str, ActiveRelease] = {}
        for release in releases.values():
            spec, arms = release.spec, weights.get(release.spec.pool)
            if release.finished or arms is None or spec.stable not in arms or spec.canary not in arms:
                continue  # ended (its final weights are the pool's stored ones), or no longer configured
            arms[spec.canary], arms[spec.stable] = release.status.weight, 100 - release.status.weight
            running[spec.pool] = ActiveRelease(spec.name, spec.stable, spec.canary, release.status.weight,
                                               release.step_key, spec.judge)
        router.weights = weights
        router.releases = running
        router.drained = {t for t in state.drained if t in config.targets}
        if state.keys is not self.state.keys:
            self.gw.access.ring = KeyRing(state.keys)
        self.gw.metrics.set_weights(weights)
        self.state = state

    # ---- writes ------------------------------------------------------------------------------

    def _pool(self, pool: str) -> dict[str, int]:
        if pool not in self.gw.router.weights:
            raise UnknownName(f"unknown pool '{pool}'")
        return self.gw.router.weights[pool]

    async def _write(self, base_version: int | None, build: Callable[[ControlState], tuple[ControlState, AuditEntry]],
                     ) -> ControlState:
        """Commit ``build(current state)`` as the next version.

        With a ``base_version`` (the version the caller read), a replica that is behind catches up from the
        store first, so a change is never built on state older than what the caller saw; a base older than
        the store's is a 409. Without one, the change applies on whatever is current (and is rebuilt once
        if another replica committed in between).
        """
        async with self._write_lock:
            for _ in range(3):
                if base_version is not None and base_version != self.state.version:
                    self.apply(await self.store.load())
                    if base_version != self.state.version:
                        raise StaleVersion(self.state)
                base = self.state.version
                state, entry = build(self.state)
                try:
                    committed = await self.store.commit(base, state, entry)
                except StaleVersion as stale:
                    self._on_change(stale.current)
                    if base_version is not None:
                        raise
                    continue
                self.apply(committed)
                return committed
            raise StaleVersion(self.state)

    @staticmethod
    def _next(state: ControlState, actor: str, operator: str | None, **changes: object) -> ControlState:
        return replace(state, version=state.version + 1, updated_at=time.time(), updated_by=operator or actor,
                       **changes)  # type: ignore[arg-type]

    @staticmethod
    def _entry(state: ControlState, actor: str, operator: str | None, action: str, target: str, reason: str,
               before: object, after: object) -> AuditEntry:
        return AuditEntry(version=state.version, time=state.updated_at or time.time(), actor=actor,
                          operator=operator, action=action, target=target, reason=reason, before=before, after=after)

    async def set_weights(
        self, pool: str, weights: dict[str, int], base_version: int, reason: str, actor: str, operator: str | None
    ) -> ControlState:
        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            live = self._pool(pool)
            active = self.gw.router.releases.get(pool)
            if active is not None and {active.stable, active.canary} & set(weights):
                raise Refused(f"pool '{pool}' is in release '{active.name}': its arms' weights follow the release's "
                              "steps (promote, pause or abort the release instead)")
            unknown = sorted(set(weights) - set(live))
            if unknown:
                raise UnknownName(f"pool '{pool}' has no target {', '.join(repr(t) for t in unknown)}")
            after = {**live, **weights}
            if not any(after.values()):
                raise InvalidChange("at least one target weight must be above 0", "weights")
            state = self._next(current, actor, operator, weights={**current.weights, pool: after})
            return state, self._entry(state, actor, operator, "set_weights", pool, reason, dict(live), after)

        return await self._write(base_version, build)

    async def set_drained(
        self, target: str, drained: bool, base_version: int | None, reason: str, actor: str, operator: str | None
    ) -> ControlState:
        if target not in self.gw.config.targets:
            raise UnknownName(f"unknown target '{target}'")

        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            was = target in current.drained
            names = set(current.drained) | {target} if drained else set(current.drained) - {target}
            state = self._next(current, actor, operator, drained=tuple(sorted(names)))
            return state, self._entry(state, actor, operator, "drain" if drained else "undrain", target, reason,
                                      {"drained": was}, {"drained": drained})

        return await self._write(base_version, build)

    # ---- client keys ---------------------------------------------------------------------------

    def key(self, key_id: str) -> ClientKey:
        key = self.state.keys.get(key_id)
        if key is None:
            raise UnknownName(f"unknown client key '{key_id}'")
        return key

    async def create_key(self, spec: KeyCreate, actor: str, operator: str | None) -> tuple[str, ClientKey, int]:
        """A new key: returns the key itself (shown once, never stored), its record and the new version."""
        unknown = [route for route in spec.routes if route not in self.gw.config.routes]
        if unknown:
            raise UnknownName(f"unknown route(s) {', '.join(unknown)}; routes are: {', '.join(self.gw.config.routes)}")
        secret = generate_key()
        key = ClientKey(
            id=new_key_id(), hash=hash_key(secret), prefix=secret[:SHOWN_PREFIX_LEN], name=spec.name.strip(),
            owner=spec.owner.strip(), tier=spec.tier, routes=tuple(dict.fromkeys(spec.routes)),
            rpm_limit=spec.rpm_limit, tpm_limit=spec.tpm_limit, budget_usd=spec.budget_usd,
            budget_period=spec.budget_period, expires_at=spec.expires_at, disabled=False, created_at=time.time(),
            created_by=operator or actor,
        )

        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            state = self._next(current, actor, operator, keys={**current.keys, key.id: key})
            return state, self._entry(state, actor, operator, "create_key", key.id, spec.reason, None, key.public())

        committed = await self._write(None, build)
        return secret, key, committed.version

    async def set_key_disabled(self, key_id: str, disabled: bool, reason: str, actor: str,
                               operator: str | None) -> ClientKey:
        self.key(key_id)

        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            key = current.keys.get(key_id)
            if key is None:
                raise UnknownName(f"unknown client key '{key_id}'")
            state = self._next(current, actor, operator, keys={**current.keys, key_id: key.with_disabled(disabled)})
            return state, self._entry(state, actor, operator, "disable_key" if disabled else "enable_key", key_id,
                                      reason, {"disabled": key.disabled}, {"disabled": disabled})

        return (await self._write(None, build)).keys[key_id]

    async def delete_key(self, key_id: str, reason: str, actor: str, operator: str | None) -> ClientKey:
        deleted = self.key(key_id)

        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            key = current.keys.get(key_id)
            if key is None:
                raise UnknownName(f"unknown client key '{key_id}'")
            state = self._next(current, actor, operator,
                               keys={k: v for k, v in current.keys.items() if k != key_id})
            return state, self._entry(state, actor, operator, "delete_key", key_id, reason, key.public(), None)

        await self._write(None, build)
        return deleted

    # ---- canary releases -----------------------------------------------------------------------

    @staticmethod
    def _release_entry(state: ControlState, actor: str, operator: str | None, action: str, before: Release | None,
                       after: Release, reason: str) -> AuditEntry:
        def summary(release: Release | None) -> dict[str, object] | None:
            if release is None:
                return None
            s = release.status
            return {"phase": s.phase, "step": s.step_index, "weight": s.weight}

        return ControlPlane._entry(state, actor, operator, action, after.spec.name, reason, summary(before),
                                   summary(after))

    def _release_changes(self, current: ControlState, release: Release) -> dict[str, Any]:
        """The state fields a release's new status changes. A finished release hands its arms' final weights
        to the pool's stored weights, so operators set them as usual from then on."""
        changes: dict[str, Any] = {"releases": {**current.releases, release.spec.name: release.to_dict()}}
        spec = release.spec
        if release.finished and spec.pool in self.gw.config.pools:
            pool = {**self.gw.config.pools[spec.pool].targets, **current.weights.get(spec.pool, {})}
            pool[spec.canary], pool[spec.stable] = release.status.weight, 100 - release.status.weight
            changes["weights"] = {**current.weights, spec.pool: pool}
        return changes

    async def create_release(self, spec: ReleaseSpec, reason: str, actor: str, operator: str | None,
                             only_if_missing: bool = False) -> Release:
        problems = release_problems(self.gw.config, spec)
        if spec.stable == spec.canary:
            raise Refused("; ".join(problems))
        if problems:
            raise UnknownName("; ".join(problems))

        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            if spec.name in current.releases:
                raise Refused(f"a release named '{spec.name}' exists")
            for data in current.releases.values():
                other = Release.from_dict(data)
                if other.spec.pool == spec.pool and not other.finished:
                    raise Refused(f"pool '{spec.pool}' is already in release '{other.spec.name}' "
                                  f"({other.status.phase})")
            release = start(spec, time.time(), operator or actor)
            state = self._next(current, actor, operator, releases={**current.releases, spec.name: release.to_dict()})
            return state, self._release_entry(state, actor, operator, "release_create", None, release, reason)

        try:
            committed = await self._write(None, build)
        except Refused:
            if only_if_missing and spec.name in self.state.releases:
                return Release.from_dict(self.state.releases[spec.name])
            raise
        return Release.from_dict(committed.releases[spec.name])

    def release(self, name: str) -> Release:
        data = self.state.releases.get(name)
        if data is None:
            raise UnknownName(f"unknown release '{name}'")
        return Release.from_dict(data)

    async def release_action(self, name: str, action: str, base_version: int, reason: str, actor: str,
                             operator: str | None) -> Release:
        """An operator's promote, promote-full, pause, resume, abort or retry, on the version they read."""
        self.release(name)

        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            before = Release.from_dict(current.releases[name])
            try:
                after = act(before, action, time.time(), operator or actor, reason)
            except ActionRefused as exc:
                raise Refused(str(exc)) from None
            state = self._next(current, actor, operator, **self._release_changes(current, after))
            return state, self._release_entry(state, actor, operator, f"release_{action}", before, after, reason)

        committed = await self._write(base_version, build)
        return Release.from_dict(committed.releases[name])

    async def move_release(self, seen: Release, moved: Release) -> None:
        """The controller's transition, committed only if the release is still as it was evaluated (an
        operator's action in between wins)."""
        name = seen.spec.name

        def build(current: ControlState) -> tuple[ControlState, AuditEntry]:
            if current.releases.get(name) != seen.to_dict():
                raise Refused("the release changed while it was evaluated")
            state = self._next(current, "controller", None, **self._release_changes(current, moved))
            action = "release_rollback" if moved.status.phase == "Degraded" else "release_step"
            return state, self._release_entry(state, "controller", None, action, seen, moved, moved.status.message)

        try:
            await self._write(None, build)
        except Refused:
            log.info("release %s changed under the controller; it looks again next tick", name)
