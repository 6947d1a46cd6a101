"""KEDA's operator for ScaledObjects (keda.sh/v1alpha1), as far as scaling goes.

For each ScaledObject it keeps the HPA KEDA generates (``keda-hpa-<name>``, one External metric per trigger, named
``s<index>-<scaler>`` as KEDA names them), polls each trigger every ``pollingInterval`` against the real thing (a
real Redis, a real Prometheus) without blocking a tick, and writes each value onto the board as the External series
the HPA controller reads (what KEDA's metrics adapter would answer). It does what the HPA cannot: activation
(0 -> 1 when a trigger is above its activation value, back to 0 once every trigger has stayed at or below it for
``cooldownPeriod``, only with ``minReplicaCount`` 0) and fallback (a trigger failing more than
``fallback.failureThreshold`` times in a row puts the target at ``fallback.replicas``). A trigger whose metadata
cannot be used makes the ScaledObject Ready False and scales nothing.

Supported triggers: ``redis`` (LLEN), ``redis-streams`` (XLEN, or XPENDING with a ``consumerGroup``) and
``prometheus``. Authentication (authenticationRef, *FromEnv) is out of scope; see sources/redis_length.py."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.kubesim.controllers.base import Context, owned_by, owner_reference
from services.kubesim.discovery import ResourceKind
from services.kubesim.errors import ApiError
from services.kubesim.metrics import Series
from services.kubesim.sources import redis_length
from services.kubesim.sources.prometheus import QueryFailed, instant_query
from services.kubesim.store import Obj

DEFAULT_POLLING_S = 30.0
DEFAULT_COOLDOWN_S = 300.0
DEFAULT_MAX_REPLICAS = 100
DEFAULT_REDIS_TARGET = 5.0  # KEDA's default listLength / streamLength / pendingEntriesCount
NAME_LABEL = "scaledobject.keda.sh/name"
MANAGED_BY = "keda-operator"
TRUE_WORDS, FALSE_WORDS = {"1", "t", "T", "true", "TRUE", "True"}, {"0", "f", "F", "false", "FALSE", "False"}


class BadTrigger(ValueError):
    """A trigger (or the ScaledObject around it) KEDA would refuse; the message says which field and why."""


@dataclass(frozen=True)
class Trigger:
    index: int
    type: str
    metric_name: str  # the External metric's name in the HPA and on the board
    metric_type: str  # AverageValue | Value
    target: float
    activation: float
    read: Callable[[], Awaitable[float]]  # one poll against the real system


@dataclass
class Health:
    """One trigger's polling state, kept between ticks (KEDA keeps it in status.health and its scaler cache)."""

    due: float = -math.inf
    polling: bool = False
    value: float | None = None
    failures: int = 0
    error: str = ""  # the last failed poll's reason, until a poll succeeds
    reported: bool = True  # whether ``error`` has been recorded as an event


@dataclass
class Tracked:
    first_seen: float
    last_active: float | None = None
    spec: Obj = field(default_factory=dict)  # the spec the health below belongs to; a new spec starts afresh
    health: dict[str, Health] = field(default_factory=dict)


def _normalize(text: str) -> str:
    """KEDA's util.NormalizeString: metric names carry no '/', '.', ':', '%', '(' or ')'."""
    for char in "/.:%()":
        text = text.replace(char, "-")
    return text


def _number(metadata: dict[str, str], key: str, index: int, default: float | None = None,
            positive: bool = False) -> float:
    text = metadata.get(key)
    if text is None or text == "":
        if default is None:
            raise BadTrigger(f"trigger {index}: metadata.{key} is required")
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadTrigger(f"trigger {index}: metadata.{key} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise BadTrigger(f"trigger {index}: metadata.{key} must be a {'positive' if positive else 'non-negative'} "
                         f"number, got {text!r}")
    return value


def _flag(metadata: dict[str, str], key: str, index: int, default: bool) -> bool:
    text = metadata.get(key)
    if text is None:
        return default
    if text not in TRUE_WORDS | FALSE_WORDS:
        raise BadTrigger(f"trigger {index}: metadata.{key} must be true or false, got {text!r}")
    return text in TRUE_WORDS


def _required(metadata: dict[str, str], key: str, index: int) -> str:
    value = metadata.get(key)
    if not value:
        raise BadTrigger(f"trigger {index}: metadata.{key} is required")
    return value


def redis_url(metadata: dict[str, str], index: int) -> str:
    """``address`` (host:port) or ``host`` + ``port``, ``databaseIndex`` and ``enableTLS`` as a redis URL."""
    address = metadata.get("address") or ""
    if not address:
        host, port = metadata.get("host"), metadata.get("port")
        if not host or not port:
            raise BadTrigger(f"trigger {index}: metadata.address, or metadata.host and metadata.port, is required "
                             "(addressFromEnv and the like are not simulated)")
        address = f"{host}:{port}"
    database = metadata.get("databaseIndex") or "0"
    if not database.isdigit():
        raise BadTrigger(f"trigger {index}: metadata.databaseIndex must be a whole number, got {database!r}")
    scheme = "rediss" if _flag(metadata, "enableTLS", index, False) else "redis"
    return f"{scheme}://{address}/{int(database)}"


def _prometheus_read(address: str, query: str, ignore_null: bool, timeout_s: float) -> Callable[[], Awaitable[float]]:
    async def read() -> float:
        values = await instant_query(address, query, timeout_s)
        if len(values) > 1:
            raise QueryFailed("prometheus query returned multiple elements")
        if not values:
            if ignore_null:
                return 0.0
            raise QueryFailed("prometheus metrics 'prometheus' target may be lost, the result is empty")
        return values[0]

    return read


def parse_trigger(index: int, raw: Obj) -> Trigger:
    """A trigger as KEDA's scaler for its type reads it (every metadata value is a string, as the CRD requires)."""
    kind, metadata = raw.get("type") or "", raw.get("metadata") or {}
    metric_type = raw.get("metricType") or "AverageValue"
    if metric_type not in ("AverageValue", "Value"):
        raise BadTrigger(f"trigger {index}: metricType {metric_type} is not supported by a {kind} trigger "
                         "(AverageValue or Value)")
    if kind == "redis":
        url, key = redis_url(metadata, index), _required(metadata, "listName", index)
        target = _number(metadata, "listLength", index, DEFAULT_REDIS_TARGET, positive=True)
        activation = _number(metadata, "activationListLength", index, 0.0)

        async def llen() -> float:
            return float(await redis_length.list_length(url, key))

        return Trigger(index, kind, f"s{index}-{_normalize('redis-' + key)}", metric_type, target, activation, llen)
    if kind == "redis-streams":
        url, stream = redis_url(metadata, index), _required(metadata, "stream", index)
        group = metadata.get("consumerGroup")
        if group:
            target = _number(metadata, "pendingEntriesCount", index, DEFAULT_REDIS_TARGET, positive=True)

            async def pending() -> float:
                return float(await redis_length.pending_count(url, stream, group))

            read = pending
        else:
            target = _number(metadata, "streamLength", index, DEFAULT_REDIS_TARGET, positive=True)

            async def xlen() -> float:
                return float(await redis_length.stream_length(url, stream))

            read = xlen
        name = f"s{index}-{_normalize('redis-streams-' + stream)}"
        return Trigger(index, kind, name, metric_type, target, 0.0, read)
    if kind == "prometheus":
        address, query = _required(metadata, "serverAddress", index), _required(metadata, "query", index)
        target = _number(metadata, "threshold", index, positive=True)
        activation = _number(metadata, "activationThreshold", index, 0.0)
        timeout_s = _number(metadata, "timeout", index, 3000.0, positive=True) / 1000  # milliseconds, as in KEDA
        read = _prometheus_read(address, query, _flag(metadata, "ignoreNullValues", index, True), timeout_s)
        return Trigger(index, kind, f"s{index}-prometheus", metric_type, target, activation, read)
    raise BadTrigger(f"trigger {index}: type {kind!r} is not simulated (redis, redis-streams, prometheus)")


def quantity(value: float) -> str:
    """A metric target as KEDA writes it: whole numbers plain, fractions in milli-units."""
    return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"


def _conditions(ready: tuple[str, str, str], active: tuple[str, str, str],
                fallback: tuple[str, str, str]) -> list[Obj]:
    return [{"type": kind, "status": status, "reason": reason, "message": message}
            for kind, (status, reason, message) in (("Ready", ready), ("Active", active), ("Fallback", fallback))]


NOT_ACTIVE = ("False", "ScalerNotActive", "Scaling is not performed because triggers are not active")
IS_ACTIVE = ("True", "ScalerActive", "Scaling is performed because triggers are active")
NO_FALLBACK = ("False", "NoFallbackFound", "No fallbacks are active on this scaled object")
FALLING_BACK = ("True", "FallbackExists", "At least one trigger is falling back on this scaled object")


class ScaledObjects:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.tracked: dict[str, Tracked] = {}  # by ScaledObject uid

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        seen: set[str] = set()
        for scaled in store.list(kinds.scaledobjects, None, lambda _: True):
            seen.add(scaled["metadata"]["uid"])
            self._reconcile(scaled)
        for uid in set(self.tracked) - seen:  # deleted: its series go (the collector takes its HPA)
            self._forget(self.tracked.pop(uid))

    def _forget(self, tracked: Tracked) -> None:
        for name in tracked.health:
            self.context.board.clear(Series(tracked.spec.get("namespace", ""), name, ""))

    # --- one ScaledObject ------------------------------------------------------------------------------------

    def _reconcile(self, scaled: Obj) -> None:
        meta, spec = scaled["metadata"], scaled.get("spec") or {}
        namespace = meta["namespace"]
        tracked = self.tracked.setdefault(meta["uid"], Tracked(first_seen=self.context.clock()))
        if tracked.spec != {"namespace": namespace, **spec}:  # a changed spec polls afresh
            self._forget(tracked)
            tracked.spec, tracked.health = {"namespace": namespace, **spec}, {}
        try:
            triggers = [parse_trigger(index, raw) for index, raw in enumerate(spec.get("triggers") or [])]
            if not triggers:
                raise BadTrigger("spec.triggers must name at least one trigger")
            target_kind, target = self._target(namespace, spec)
            bounds = self._bounds(spec)
            hpa_name = self._ensure_hpa(scaled, triggers, bounds)
        except BadTrigger as exc:
            self._forget(tracked)
            tracked.health = {}
            self._write_status(scaled, {"conditions": _conditions(
                ("False", "ScaledObjectCheckFailed", str(exc)), NOT_ACTIVE, NO_FALLBACK)}, keep=True)
            return
        for trigger in triggers:
            self._poll(namespace, trigger, tracked, spec)
        self._scale(scaled, triggers, tracked, target_kind, target, bounds, hpa_name)

    def _target(self, namespace: str, spec: Obj) -> tuple[ResourceKind, Obj]:
        ref = spec.get("scaleTargetRef") or {}
        api_version, kind_name = ref.get("apiVersion") or "apps/v1", ref.get("kind") or "Deployment"
        kinds = self.context.kinds
        kind = next((k for k in (kinds.deployments, kinds.statefulsets, kinds.rollouts)
                     if k.api_version == api_version and k.kind == kind_name), None)
        if kind is None:
            raise BadTrigger(f"scaleTargetRef {api_version}.{kind_name} is not a kind kubesim can scale "
                             "(apps/v1 Deployment or StatefulSet, argoproj.io/v1alpha1 Rollout)")
        try:
            return kind, self.context.store.get(kind, namespace, ref.get("name") or "")
        except ApiError:
            raise BadTrigger(f"scaleTargetRef: {kind_name} {ref.get('name')!r} does not exist") from None

    @staticmethod
    def _bounds(spec: Obj) -> tuple[int, int]:
        minimum = int(spec.get("minReplicaCount") or 0)
        maximum = int(spec["maxReplicaCount"]) if spec.get("maxReplicaCount") is not None else DEFAULT_MAX_REPLICAS
        if minimum < 0 or maximum < max(minimum, 1):
            raise BadTrigger(f"maxReplicaCount ({maximum}) must be at least minReplicaCount ({minimum}) and 1")
        return minimum, maximum

    def _ensure_hpa(self, scaled: Obj, triggers: list[Trigger], bounds: tuple[int, int]) -> str:
        meta, spec = scaled["metadata"], scaled.get("spec") or {}
        config = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
        name = config.get("name") or f"keda-hpa-{meta['name']}"
        ref = spec.get("scaleTargetRef") or {}
        selector = {"matchLabels": {NAME_LABEL: meta["name"]}}
        metrics = [{"type": "External", "external": {
            "metric": {"name": trigger.metric_name, "selector": selector},
            "target": ({"type": "AverageValue", "averageValue": quantity(trigger.target)}
                       if trigger.metric_type == "AverageValue"
                       else {"type": "Value", "value": quantity(trigger.target)})}} for trigger in triggers]
        hpa_spec: Obj = {"scaleTargetRef": {"apiVersion": ref.get("apiVersion") or "apps/v1",
                                            "kind": ref.get("kind") or "Deployment", "name": ref.get("name")},
                         "minReplicas": max(bounds[0], 1), "maxReplicas": bounds[1], "metrics": metrics}
        if config.get("behavior"):
            hpa_spec["behavior"] = config["behavior"]
        labels = {**(meta.get("labels") or {}), "app.kubernetes.io/name": name,
                  "app.kubernetes.io/part-of": meta["name"], "app.kubernetes.io/managed-by": MANAGED_BY,
                  NAME_LABEL: meta["name"]}
        store, kind = self.context.store, self.context.kinds.hpas
        try:
            existing = store.get(kind, meta["namespace"], name)
        except ApiError:
            existing = None
        try:
            if existing is None:
                store.create(kind, meta["namespace"], {
                    "apiVersion": kind.api_version, "kind": kind.kind,
                    "metadata": {"name": name, "labels": labels, "ownerReferences": [owner_reference(scaled)]},
                    "spec": hpa_spec})
            elif not owned_by(existing, scaled):
                raise BadTrigger(f"the HorizontalPodAutoscaler {name} already exists and is not owned by this "
                                 "ScaledObject")
            else:
                existing["metadata"]["labels"] = labels
                existing["spec"] = hpa_spec
                store.replace(kind, meta["namespace"], name, existing)
        except ApiError as exc:  # e.g. a behavior the HPA schema refuses
            raise BadTrigger(f"the HorizontalPodAutoscaler {name} cannot be written: {exc}") from None
        return name

    # --- polling ---------------------------------------------------------------------------------------------

    def _poll(self, namespace: str, trigger: Trigger, tracked: Tracked, spec: Obj) -> None:
        health = tracked.health.setdefault(trigger.metric_name, Health())
        now = self.context.clock()
        if health.polling or now < health.due:
            return
        health.polling, health.due = True, now + float(spec.get("pollingInterval") or DEFAULT_POLLING_S)
        series, fallback = Series(namespace, trigger.metric_name, ""), spec.get("fallback") or {}
        board, clock = self.context.board, self.context.clock

        async def poll() -> None:
            try:
                value = await trigger.read()
                if tracked.health.get(trigger.metric_name) is not health:
                    return  # the ScaledObject changed or went while this poll ran: its answer is stale
            except (redis_length.LengthFailed, QueryFailed) as exc:
                health.value, health.failures = None, health.failures + 1
                health.error, health.reported = str(exc), False
                if _falling_back(health, fallback) and trigger.metric_type == "AverageValue":
                    # KEDA's metrics adapter answers replicas x target, so the HPA settles on fallback.replicas
                    board.set(series, int(fallback["replicas"]) * trigger.target, clock(), "keda-fallback")
                else:
                    board.clear(series)
            else:
                health.value, health.failures, health.error = value, 0, ""
                board.set(series, value, clock(), trigger.type)
            finally:
                health.polling = False

        self.context.spawn(poll(), f"keda {namespace}/{trigger.metric_name}")

    # --- scaling and status ----------------------------------------------------------------------------------

    def _scale(self, scaled: Obj, triggers: list[Trigger], tracked: Tracked, target_kind: ResourceKind,
               target: Obj, bounds: tuple[int, int], hpa_name: str) -> None:
        spec = scaled.get("spec") or {}
        fallback = spec.get("fallback") or {}
        healths = [tracked.health[trigger.metric_name] for trigger in triggers]
        now = self.context.clock()
        active = any(h.value is not None and h.value > t.activation for t, h in zip(triggers, healths, strict=True))
        failing = [h for h in healths if h.failures > 0]
        falling_back = any(_falling_back(h, fallback) for h in healths)
        current = int((target.get("spec") or {}).get("replicas", 1))
        for health in healths:
            if not health.reported:
                health.reported = True
                self.context.event(scaled, "KEDAScalerFailed", health.error, "Warning")
        if active:
            tracked.last_active = now
        wanted = current
        if falling_back:
            wanted = int(fallback["replicas"])
        elif bounds[0] == 0:
            if active and current == 0:
                wanted = 1
            elif not active and not failing and current > 0 and all(h.value is not None for h in healths):
                due = (tracked.first_seen + float(spec.get("initialCooldownPeriod") or 0)
                       if tracked.last_active is None else tracked.last_active + self._cooldown(spec))
                if now >= due:
                    wanted = 0
        elif current < bounds[0]:
            wanted = bounds[0]
        if wanted != current:
            self._set_replicas(scaled, target_kind, target, current, wanted)
        ready = ("True", "ScaledObjectReady", "ScaledObject is defined correctly and is ready for scaling")
        if failing and len(failing) == len(healths):
            ready = ("False", "TriggerError", "Triggers defined in ScaledObject are not working correctly")
        elif failing:
            ready = ("Unknown", "PartialTriggerError",
                     "Some triggers defined in ScaledObject are not working correctly")
        status: Obj = {
            "conditions": _conditions(ready, IS_ACTIVE if active else NOT_ACTIVE,
                                      FALLING_BACK if falling_back else NO_FALLBACK),
            "hpaName": hpa_name,
            "scaleTargetKind": f"{target_kind.api_version}.{target_kind.kind}",
            "scaleTargetGVKR": {"group": target_kind.group, "version": target_kind.version,
                                "kind": target_kind.kind, "resource": target_kind.plural},
            "externalMetricNames": [trigger.metric_name for trigger in triggers],
            "triggersTypes": ",".join(trigger.type for trigger in triggers),
            "health": {t.metric_name: {"numberOfFailures": h.failures, "status": "Failing" if h.failures else "Happy"}
                       for t, h in zip(triggers, healths, strict=True)},
        }
        old = scaled.get("status") or {}
        status["originalReplicaCount"] = old.get("originalReplicaCount", current)
        if active:
            status["lastActiveTime"] = self.context.timestamp()
        elif old.get("lastActiveTime"):
            status["lastActiveTime"] = old["lastActiveTime"]
        self._write_status(scaled, status)

    @staticmethod
    def _cooldown(spec: Obj) -> float:
        value = spec.get("cooldownPeriod")
        return DEFAULT_COOLDOWN_S if value is None else float(value)

    def _set_replicas(self, scaled: Obj, kind: ResourceKind, target: Obj, current: int, wanted: int) -> None:
        target["spec"]["replicas"] = wanted
        meta = target["metadata"]
        self.context.store.replace(kind, meta["namespace"], meta["name"], target)
        where = f"{kind.api_version}.{kind.kind} {meta['namespace']}/{meta['name']}"
        if current == 0:
            self.context.event(scaled, "KEDAScaleTargetActivated", f"Scaled {where} from 0 to {wanted}")
        elif wanted == 0:
            self.context.event(scaled, "KEDAScaleTargetDeactivated", f"Deactivated {where} from {current} to 0")

    def _write_status(self, scaled: Obj, status: Obj, keep: bool = False) -> None:
        """Writes the status when it changed; ``keep`` keeps the other fields and replaces the conditions."""
        new = {**(scaled.get("status") or {}), **status} if keep else status
        if new == scaled.get("status"):
            return
        scaled["status"] = new
        meta = scaled["metadata"]
        self.context.store.replace(self.context.kinds.scaledobjects, meta["namespace"], meta["name"], scaled,
                                   subresource="status")


def _falling_back(health: Health, fallback: Obj) -> bool:
    """KEDA falls back once a trigger has failed more than failureThreshold times in a row."""
    return bool(fallback) and fallback.get("replicas") is not None and \
        health.failures > int(fallback.get("failureThreshold") or 0)
