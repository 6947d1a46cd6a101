"""Canary releases on one replica: count the arms, publish the counts, and (holding the lease) move releases on.

Every replica routes by the shared state and counts what its own traffic did on each arm in the current
step's window; every ``publish_s`` it publishes those counts to the store. One replica at a time holds the
``canary`` lease: it merges every replica's windows, evaluates the gates every ``analysis_interval_s``,
and commits each transition through the control plane (versioned, audited). When it stops renewing, the
lease lapses and another replica takes over; step start times live in the state, so a restart or a
takeover resumes a step with its elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from typing import TYPE_CHECKING

from services.admin_api import GateResult, ReleaseSpec, ReleaseState
from services.gateway.canary import ArmWindow, Release, advance, evaluate
from services.gateway.judge import DROPPED
from services.gateway.state.base import StoreUnavailable

if TYPE_CHECKING:
    from services.gateway.control import ControlPlane

log = logging.getLogger("switchboard.canary")

LEASE = "canary"
KEEP_FINISHED_S = 600.0  # a finished release's last window stays on show (and published) this long
PHASE_CODES = {"Progressing": 0, "Paused": 1, "Degraded": 2, "Healthy": 3}


class CanaryRuntime:
    def __init__(self, control: ControlPlane, tick_s: float = 1.0, lease_ttl_s: float = 5.0,
                 publish_s: float = 1.0, clock=time.time) -> None:
        self.control = control
        self.gw = control.gw
        self.tick_s = tick_s
        self.lease_ttl_s = lease_ttl_s
        self.publish_s = publish_s
        self.clock = clock
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        self.holder = False
        self._windows: dict[str, dict[str, ArmWindow]] = {}  # step key -> arm -> this replica's counts
        self._last_analysis: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    # ---- counting (hot path: dict lookups only) --------------------------------------------------------

    def _arm_window(self, pool: str, target: str, outcome: str | None = None) -> ArmWindow | None:
        """The window ``target`` counts in when it is an arm of the release running in ``pool``; with an
        ``outcome``, the per-arm requests metric counts it too."""
        active = self.gw.router.releases.get(pool)
        if active is None:
            return None
        arm = "canary" if target == active.canary else "stable" if target == active.stable else None
        if arm is None:
            return None
        if outcome is not None:
            self.gw.metrics.child("release_requests", active.name, arm, outcome).inc()
        windows = self._windows.get(active.step_key)
        if windows is None:
            windows = self._windows[active.step_key] = {"stable": ArmWindow(), "canary": ArmWindow()}
        return windows[arm]

    def observe_success(self, pool: str, target: str, total_s: float) -> None:
        window = self._arm_window(pool, target, "success")
        if window is not None:
            window.success(total_s)

    def observe_failure(self, pool: str, target: str) -> None:
        window = self._arm_window(pool, target, "failure")
        if window is not None:
            window.failure()

    def observe_cost(self, pool: str, target: str, cost: float) -> None:
        window = self._arm_window(pool, target)
        if window is not None:
            window.cost += cost
            window.costed += 1

    def observe_verdict(self, step_key: str, arm: str, score: float | None, error: str | None) -> None:
        """A judge's grade for an answer given during step ``step_key`` (late verdicts of an old step are dropped)."""
        windows = self._windows.get(step_key)
        if windows is None:
            return
        window = windows[arm]
        if error == DROPPED:
            window.judge_dropped += 1
        elif error is not None or score is None:
            window.judge_errors += 1
        else:
            window.quality_sum += score
            window.judged += 1

    def arm_of(self, pool: str, target: str) -> tuple[str, str] | None:
        """(step key, arm) when ``target`` is an arm of the release running in ``pool``."""
        active = self.gw.router.releases.get(pool)
        if active is None or target not in (active.stable, active.canary):
            return None
        return active.step_key, "canary" if target == active.canary else "stable"

    # ---- merging and reporting ----------------------------------------------------------------------------

    async def merged(self, release: Release) -> tuple[ArmWindow, ArmWindow]:
        """Every replica's counts for the release's current step (this replica's live ones, not its last publish)."""
        key = release.step_key
        arms = {"stable": ArmWindow(), "canary": ArmWindow()}
        try:
            published = await self.control.store.gather(f"arms:{key}")
        except StoreUnavailable as exc:
            log.warning("canary: cannot read other replicas' counts (%s); using this replica's only", exc)
            published = {}
        for replica, doc in published.items():
            if replica == self.replica:
                continue
            for arm, window in json.loads(doc).items():
                arms[arm].add(ArmWindow.from_dict(window))
        for arm, window in self._windows.get(key, {}).items():
            arms[arm].add(window)
        return arms["stable"], arms["canary"]

    async def state(self, release: Release) -> ReleaseState:
        stable, canary = await self.merged(release)
        now = self.clock()
        status, steps = release.status, release.spec.steps
        running = not release.finished
        pause_left = None
        if running and status.step_index < len(steps) and (pause := steps[status.step_index].pause) is not None:
            if pause.duration_s is not None:
                held = now - status.paused_at if status.paused_at is not None else 0.0
                pause_left = max(0.0, pause.duration_s - (now - status.step_started_at - held))
        return ReleaseState(
            spec=release.spec, phase=status.phase, step_index=status.step_index, steps_total=len(steps),
            desired_weight=release.desired_weight, actual_weight=status.weight,
            step_started_at=status.step_started_at, time_in_step_s=now - status.step_started_at if running else None,
            pause_left_s=pause_left, message=status.message, aborted=status.aborted,
            analysis=evaluate(release.spec, stable, canary), arms={"stable": stable.stats(), "canary": canary.stats()},
            history=list(status.history),
        )

    # ---- the loop ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="canary")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        next_publish = 0.0
        while True:
            try:
                now = self.clock()
                if now >= next_publish:
                    await self._publish()
                    next_publish = now + self.publish_s
                self.holder = await self.control.store.acquire_lease(LEASE, self.replica, self.lease_ttl_s)
                if self.holder:
                    await self._lead(now)
            except StoreUnavailable as exc:
                self.holder = False
                log.warning("canary: state store unavailable, releases wait: %s", exc)
            except Exception:
                log.exception("canary: controller step failed; retrying")
            await asyncio.sleep(self.tick_s)

    async def _publish(self) -> None:
        now = self.clock()
        live = {release.step_key for release in self.releases().values()
                if not release.finished or now - release.status.history[0].time < KEEP_FINISHED_S}
        for key in [k for k in self._windows if k not in live]:
            del self._windows[key]  # a step that ended: its counts are no longer anyone's window
        for key in [k for k in self._last_analysis if k not in live]:
            del self._last_analysis[key]
        for key, arms in self._windows.items():
            doc = json.dumps({arm: window.to_dict() for arm, window in arms.items()})
            await self.control.store.publish(f"arms:{key}", self.replica, doc, ttl_s=max(30.0, 5 * self.publish_s))

    def releases(self) -> dict[str, Release]:
        return {name: Release.from_dict(data) for name, data in self.control.state.releases.items()}

    async def _lead(self, now: float) -> None:
        await self._create_configured()
        for release in self.releases().values():
            if release.finished:
                continue
            gates: list[GateResult] | None = None
            due = self._last_analysis.get(release.step_key, 0.0) + release.spec.analysis_interval_s
            if now >= due:
                stable, canary = await self.merged(release)
                gates = evaluate(release.spec, stable, canary)
                self._last_analysis[release.step_key] = now
            moved = advance(release, now, gates)
            if moved is not None:
                await self.control.move_release(release, moved)

    async def _create_configured(self) -> None:
        """Releases in the config file that the state does not have yet (created once, by the lease holder)."""
        for spec in self.gw.config.releases:
            if spec.name not in self.control.state.releases:
                await self.control.create_release(ReleaseSpec.model_validate(spec.model_dump()),
                                                  "from the configuration", "config", None, only_if_missing=True)

    def publish_gauges(self) -> None:
        """Each release's weight and phase, refreshed when /metrics is scraped (every replica has the state)."""
        for name, release in self.releases().items():
            self.gw.metrics.child("release_weight", name).set(release.status.weight)
            self.gw.metrics.child("release_phase", name).set(PHASE_CODES[release.status.phase])
