"""The router: ordered rules pick a pool, a weighted pick among healthy targets, then the fallback chain.

The result is a plan, an ordered list of targets to try. The proxy walks it; health is checked
again just before each attempt, so a half-open breaker admits only one probe.
"""

from __future__ import annotations

import operator
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.admin_api import JudgeSettings
from services.gateway.canary import assign_arm
from services.gateway.config import Comparison, GatewayConfig, PoolRequirement, Rule
from services.gateway.context import RoutingContext
from services.gateway.health import TargetHealth

Predicate = Callable[[object], bool]

_ORDERED = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def _compile_condition(expected: str | int | Comparison) -> Predicate:
    if not isinstance(expected, Comparison):
        want = expected.lower() if isinstance(expected, str) else expected
        return lambda value: value == want
    checks: list[Predicate] = []
    if expected.eq is not None:
        checks.append(lambda v, x=expected.eq: v == x)
    if expected.ne is not None:
        checks.append(lambda v, x=expected.ne: v != x)
    if expected.in_ is not None:
        checks.append(lambda v, xs=tuple(expected.in_): v in xs)
    for name, compare in _ORDERED.items():
        bound = getattr(expected, name)
        if bound is not None:
            checks.append(lambda v, c=compare, b=bound: v is not None and c(v, b))
    return lambda value: all(check(value) for check in checks)


@dataclass(frozen=True)
class CompiledRule:
    name: str
    conditions: tuple[tuple[str, Predicate], ...]
    pools: tuple[str, ...]
    require: PoolRequirement
    first_available: bool  # a 'pools' rule: the first pool with a qualifying target

    @classmethod
    def build(cls, rule: Rule) -> CompiledRule:
        return cls(
            name=rule.name,
            conditions=tuple((field, _compile_condition(want)) for field, want in rule.match.items()),
            pools=tuple(rule.pools) if rule.pools is not None else (rule.pool or "",),
            require=rule.require,
            first_available=rule.pools is not None,
        )

    def matches(self, ctx: RoutingContext) -> bool:
        return all(predicate(ctx.get(field)) for field, predicate in self.conditions)


@dataclass(frozen=True)
class Plan:
    route: str
    rule: str | None  # the rule that chose the pool; None for a fixed-pool route or the default
    pool: str
    attempts: tuple[tuple[str, str], ...]  # (pool, target) in the order to try
    forced: bool = False  # every target was unavailable: this is the least-bad one


@dataclass(frozen=True)
class ActiveRelease:
    """A running canary release in a pool: its arms, the canary weight, and the window it is counting."""

    name: str
    stable: str
    canary: str
    weight: int
    step_key: str
    judge: JudgeSettings | None = None  # set when the release grades its arms' answers


class NoTargetError(Exception):
    """Nothing in the route's pools can take the request (all disabled, drained or weighted 0)."""


class Router:
    def __init__(
        self,
        config: GatewayConfig,
        health: dict[str, TargetHealth],
        enabled: set[str],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.health = health
        self.enabled = enabled
        self.rng = rng or random.Random()
        self.clock = clock
        self.weights: dict[str, dict[str, int]] = {name: dict(pool.targets) for name, pool in config.pools.items()}
        self.drained: set[str] = set()
        self.releases: dict[str, ActiveRelease] = {}  # pool -> its running release
        self._rules = {
            name: tuple(CompiledRule.build(rule) for rule in route.rules or ())
            for name, route in config.routes.items()
        }

    # ---- target and pool eligibility -------------------------------------------------------

    def _in_service(self, pool: str) -> list[tuple[str, int]]:
        """Targets of a pool that may get traffic at all: enabled, not drained, weight above 0."""
        return [
            (target, weight)
            for target, weight in self.weights[pool].items()
            if weight > 0 and target in self.enabled and target not in self.drained
        ]

    def _qualifies(self, target: str, require: PoolRequirement, now: float, stream: bool) -> bool:
        """Available, and within the rule's latency and error-rate bounds. The latency compared is the
        EMA matching the request: time to first token for a stream, total latency otherwise."""
        health = self.health[target]
        if not health.available(now):
            return False
        if require.max_ema_latency_ms is not None:
            ema = health.latency_ema_ms(stream)
            if ema is not None and ema >= require.max_ema_latency_ms:
                return False
        if require.max_error_rate is not None and health.error_rate(now) >= require.max_error_rate:
            return False
        return True

    def pool_available(self, pool: str, require: PoolRequirement | None = None, now: float | None = None,
                       stream: bool = False) -> bool:
        now = self.clock() if now is None else now
        require = require or PoolRequirement()
        return any(self._qualifies(target, require, now, stream) for target, _ in self._in_service(pool))

    def seconds_until_available(self, plan: Plan, now: float | None = None) -> float:
        """How long until some target in the plan's chain may take a request again (0: one may now);
        what a final 429 tells the client in ``retry-after``."""
        now = self.clock() if now is None else now
        chain = dict.fromkeys([plan.pool, *self.config.routes[plan.route].fallback])
        waits = [self.health[target].badness(now)[0] for pool in chain for target, _ in self._in_service(pool)]
        return min(waits, default=0.0)

    # ---- choosing ----------------------------------------------------------------------------

    def choose_pool(self, route: str, ctx: RoutingContext, now: float) -> tuple[str, str | None]:
        spec = self.config.routes[route]
        if spec.pool is not None:
            return spec.pool, None
        for rule in self._rules[route]:
            if not rule.matches(ctx):
                continue
            needs_health = rule.first_available or rule.require != PoolRequirement()
            for pool in rule.pools:
                if not needs_health or self.pool_available(pool, rule.require, now, ctx.stream):
                    return pool, rule.name
        fallback_pool = spec.default_pool or (spec.fallback[0] if spec.fallback else None)
        if fallback_pool is None:
            raise NoTargetError(f"no rule of route '{route}' matched and it has no default pool")
        return fallback_pool, None

    def _weighted_order(self, candidates: list[tuple[str, int]]) -> list[str]:
        """Targets in a random order where each next pick is proportional to weight."""
        remaining = list(candidates)
        ordered: list[str] = []
        while remaining:
            total = sum(weight for _, weight in remaining)
            point = self.rng.random() * total
            for index, (target, weight) in enumerate(remaining):
                point -= weight
                if point < 0 or index == len(remaining) - 1:
                    ordered.append(target)
                    del remaining[index]
                    break
        return ordered

    def _release_order(self, pool: str, healthy: list[tuple[str, int]], sticky: str | None) -> list[str]:
        """The weighted order, except that a running release's arms are not drawn by weight: the request's
        sticky key picks its arm (first), and the other arm comes last, as the fallback."""
        active = self.releases.get(pool)
        names = {t for t, _ in healthy}
        if active is None or active.stable not in names or active.canary not in names:
            return self._weighted_order(healthy)
        arm = assign_arm(active.name, sticky, active.weight, self.rng.random())
        chosen, other = (active.canary, active.stable) if arm == "canary" else (active.stable, active.canary)
        merged = [(t, w) for t, w in healthy if t != other]
        ordered = self._weighted_order([(t, 100 if t == chosen else w) for t, w in merged])
        return [*ordered, other]

    def plan(self, route: str, ctx: RoutingContext, sticky: str | None = None) -> Plan:
        """``sticky`` (the client key or the session header) keeps a caller on one arm of a release."""
        now = self.clock()
        pool, rule = self.choose_pool(route, ctx, now)
        chain = [pool, *(p for p in self.config.routes[route].fallback if p != pool)]
        attempts: list[tuple[str, str]] = []
        seen: set[str] = set()
        considered: list[tuple[str, str]] = []
        for pool_name in chain:
            in_service = [(t, w) for t, w in self._in_service(pool_name) if t not in seen]
            considered += [(pool_name, t) for t, _ in in_service]
            healthy = [(t, w) for t, w in in_service if self.health[t].available(now)]
            for target in self._release_order(pool_name, healthy, sticky):
                attempts.append((pool_name, target))
                seen.add(target)
            seen.update(t for t, _ in in_service)
        if attempts:
            return Plan(route, rule, pool, tuple(attempts))
        if not considered:
            raise NoTargetError(f"route '{route}' has no enabled target in pools {', '.join(chain)}")
        least_bad = min(considered, key=lambda pt: self.health[pt[1]].badness(now))
        return Plan(route, rule, pool, (least_bad,), forced=True)
