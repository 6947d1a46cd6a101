"""The HorizontalPodAutoscaler algorithm, pure: kubesim's controller runs it and the console explains it.

A faithful port of kubernetes/kubernetes `pkg/controller/podautoscaler` (`horizontal.go`,
`replica_calculator.go`) as summarised, with sources, in ../shared/reference/k8s.md section 1. Nothing here
reads a clock or does I/O: the caller passes `now` (seconds on any monotonic scale) and the history the
controller would keep in memory (recommendations and scale events), and gets back a `Decision` that holds
the replica count, every metric's raw proposal, what held the count back, the status conditions and
currentMetrics Kubernetes writes, and the history to keep for the next sync.

Units follow the controller: quantities are compared in milli-units with integer arithmetic where Go uses
integers (utilization and per-pod averages truncate), so the numbers match a real cluster's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

METRIC_TYPES = ("Resource", "Pods", "Object", "External")
TARGET_TYPES = ("Utilization", "AverageValue", "Value")
SELECT_POLICIES = ("Max", "Min", "Disabled")
POLICY_TYPES = ("Pods", "Percent")

# Legacy path (spec.behavior absent): scaleUpLimitFactor and scaleUpLimitMinimum in horizontal.go.
_LEGACY_SCALE_UP_FACTOR = 2.0
_LEGACY_SCALE_UP_MINIMUM = 4.0
# autoscaling.DefaultCPUUtilization: the metric an HPA with an empty `metrics` list gets.
_DEFAULT_CPU_UTILIZATION = 80

_FAILED_REASON = {
    "Resource": "FailedGetResourceMetric",
    "Pods": "FailedGetPodsMetric",
    "Object": "FailedGetObjectMetric",
    "External": "FailedGetExternalMetric",
}


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class MetricSpec:
    """One entry of `spec.metrics`, flattened.

    `name` is the resource name for Resource metrics ("cpu", "memory") and the metric name otherwise.
    `target` is a percentage for Utilization and a quantity in the metric's base unit (cores, bytes,
    requests/s) for AverageValue and Value.
    """

    type: str
    name: str
    target_type: str
    target: float
    described_object: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.type not in METRIC_TYPES:
            raise ValueError(f"metric type must be one of {METRIC_TYPES}, got {self.type!r}")
        if self.target_type not in TARGET_TYPES:
            raise ValueError(f"target type must be one of {TARGET_TYPES}, got {self.target_type!r}")
        allowed = {
            "Resource": ("Utilization", "AverageValue"),
            "Pods": ("AverageValue",),
            "Object": ("Value", "AverageValue"),
            "External": ("Value", "AverageValue"),
        }[self.type]
        if self.target_type not in allowed:
            raise ValueError(f"a {self.type} metric takes a target of type {allowed}, got {self.target_type!r}")
        if not self.name:
            raise ValueError("a metric needs a name")
        if not (isinstance(self.target, int | float) and math.isfinite(self.target) and self.target > 0):
            raise ValueError(f"metric {self.name!r}: target must be a positive number, got {self.target!r}")

    @property
    def key(self) -> str:
        """How readings and proposals refer to this metric: `<type>/<name>`."""
        return f"{self.type}/{self.name}"


@dataclass(frozen=True)
class ScalingPolicy:
    type: str
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise ValueError(f"policy type must be one of {POLICY_TYPES}, got {self.type!r}")
        if self.value <= 0:
            raise ValueError(f"policy value must be positive, got {self.value}")
        if not 0 < self.period_seconds <= 1800:
            raise ValueError(f"policy periodSeconds must be in 1..1800, got {self.period_seconds}")


@dataclass(frozen=True)
class ScalingRules:
    """`behavior.scaleUp` or `behavior.scaleDown`; None fields take the API server's defaults."""

    stabilization_window_seconds: int | None = None
    select_policy: str | None = None
    policies: tuple[ScalingPolicy, ...] | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.select_policy is not None and self.select_policy not in SELECT_POLICIES:
            raise ValueError(f"selectPolicy must be one of {SELECT_POLICIES}, got {self.select_policy!r}")
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= 3600:
            raise ValueError(f"stabilizationWindowSeconds must be in 0..3600, got {window}")
        if self.policies is not None and not self.policies:
            raise ValueError("policies, when given, must hold at least one policy")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"tolerance must not be negative, got {self.tolerance}")


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


@dataclass(frozen=True)
class HpaSpec:
    max_replicas: int
    min_replicas: int = 1
    metrics: tuple[MetricSpec, ...] = ()
    behavior: Behavior | None = None

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"minReplicas must not be negative, got {self.min_replicas}")
        if self.max_replicas < 1:
            raise ValueError(f"maxReplicas must be at least 1, got {self.max_replicas}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})")
        keys = [m.key for m in self.metrics]
        if len(keys) != len(set(keys)):
            raise ValueError(f"two metrics share a type and name: {keys}")

    @property
    def effective_metrics(self) -> tuple[MetricSpec, ...]:
        """An empty metrics list means CPU at 80% utilization (the API server's default)."""
        return self.metrics or (MetricSpec("Resource", "cpu", "Utilization", _DEFAULT_CPU_UTILIZATION),)


@dataclass(frozen=True)
class PodInfo:
    """A pod matched by the scale target's selector, as the controller sees it.

    `ready` is the Ready condition's status (None: no Ready condition); `ready_transition_time` its
    lastTransitionTime. `requests` are the summed container requests per resource, in base units.
    """

    name: str
    phase: str = "Running"
    ready: bool | None = True
    deleting: bool = False
    start_time: float | None = 0.0
    ready_transition_time: float = 0.0
    requests: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PodMetric:
    """One pod's sample: `value` in base units, taken at `timestamp` over a `window` of seconds."""

    value: float
    timestamp: float = 0.0
    window: float = 30.0


@dataclass(frozen=True)
class MetricReading:
    """What the metrics API returned for one metric: per-pod samples (Resource, Pods) or one value
    (Object; External gives the sum of its series). A metric with no reading is unavailable."""

    pods: Mapping[str, PodMetric] | None = None
    value: float | None = None


@dataclass(frozen=True)
class Recommendation:
    replicas: int
    timestamp: float


@dataclass(frozen=True)
class ScaleEvent:
    change: int
    timestamp: float


@dataclass(frozen=True)
class History:
    """What the controller keeps in memory per HPA (and loses on restart)."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True)
class ControllerConfig:
    """kube-controller-manager's HPA flags (seconds)."""

    tolerance: float = 0.1
    downscale_stabilization: float = 300.0
    cpu_initialization_period: float = 300.0
    initial_readiness_delay: float = 30.0


# --------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class MetricProposal:
    """One metric's raw replica count (`replicas`), or the `error` that made it unavailable."""

    metric: MetricSpec
    replicas: int | None
    status: Mapping[str, object] | None
    error: str | None = None


@dataclass(frozen=True)
class Decision:
    current_replicas: int
    desired_replicas: int
    metric_replicas: int | None
    winning_metric: str | None
    proposals: tuple[MetricProposal, ...]
    stabilized_replicas: int | None
    held_back_by: tuple[str, ...]
    rescale_reason: str
    conditions: tuple[Condition, ...]
    current_metrics: tuple[Mapping[str, object], ...]
    history: History

    @property
    def rescale(self) -> bool:
        return self.desired_replicas != self.current_replicas

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# ------------------------------------------------------------------------------------------ behavior


def default_behavior(behavior: Behavior, config: ControllerConfig = ControllerConfig()) -> Behavior:
    """Fill a present `behavior`'s unset fields as the API server (and, for the scale-down window, the
    controller's downscale-stabilization flag) does."""
    up = behavior.scale_up or ScalingRules()
    down = behavior.scale_down or ScalingRules()
    up = ScalingRules(
        stabilization_window_seconds=0 if up.stabilization_window_seconds is None else up.stabilization_window_seconds,
        select_policy=up.select_policy or "Max",
        policies=up.policies
        if up.policies is not None
        else (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)),
        tolerance=up.tolerance,
    )
    down_window = down.stabilization_window_seconds
    down = ScalingRules(
        stabilization_window_seconds=int(config.downscale_stabilization) if down_window is None else down_window,
        select_policy=down.select_policy or "Max",
        policies=down.policies if down.policies is not None else (ScalingPolicy("Percent", 100, 15),),
        tolerance=down.tolerance,
    )
    return Behavior(scale_up=up, scale_down=down)


@dataclass(frozen=True)
class _Tolerances:
    down: float
    up: float

    def within(self, ratio: float) -> bool:
        return (1.0 - self.down) <= ratio <= (1.0 + self.up)


def _tolerances(hpa: HpaSpec, config: ControllerConfig) -> _Tolerances:
    up = hpa.behavior.scale_up.tolerance if hpa.behavior and hpa.behavior.scale_up else None
    down = hpa.behavior.scale_down.tolerance if hpa.behavior and hpa.behavior.scale_down else None
    return _Tolerances(
        down=config.tolerance if down is None else down,
        up=config.tolerance if up is None else up,
    )


# ---------------------------------------------------------------------------------- replica calculator


def _milli(value: float) -> int:
    return round(value * 1000)


def _quantity(milli: int) -> str:
    """A milli-unit integer as Kubernetes prints the Quantity (`250m`, `2`)."""
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


class _MetricUnavailable(Exception):
    pass


@dataclass(frozen=True)
class _Groups:
    ready_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def _group_pods(
    pods: Sequence[PodInfo], samples: Mapping[str, PodMetric], resource: str, now: float, config: ControllerConfig
) -> _Groups:
    """groupPods: ignored (deleting or Failed), unready (Pending; for CPU the readiness rules), missing."""
    ready_count, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        sample = samples.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if resource == "cpu" and _cpu_unready(pod, sample, now, config):
            unready.add(pod.name)
            continue
        ready_count += 1
    return _Groups(ready_count, frozenset(unready), frozenset(missing), frozenset(ignored))


def _cpu_unready(pod: PodInfo, sample: PodMetric, now: float, config: ControllerConfig) -> bool:
    if pod.ready is None or pod.start_time is None:
        return True
    if pod.start_time + config.cpu_initialization_period > now:
        # Still initialising: skip a pod that is not ready, or whose sample predates one full metric
        # window after its last readiness transition.
        return pod.ready is False or sample.timestamp < pod.ready_transition_time + sample.window
    # Past initialisation: skip only a pod that is not ready and never became ready after starting.
    return pod.ready is False and pod.start_time + config.initial_readiness_delay > pod.ready_transition_time


@dataclass(frozen=True)
class _Usage:
    ratio: float
    current: int
    raw_average: int


def _utilization_usage(values: Mapping[str, int], requests: Mapping[str, int], target: int) -> _Usage:
    """GetResourceUtilizationRatio: a ratio of sums, truncated to a whole percent."""
    total = requested = entries = 0
    for name, value in values.items():
        if name not in requests:
            continue
        total += value
        requested += requests[name]
        entries += 1
    if requested == 0:
        raise _MetricUnavailable("no metrics returned matched known pods")
    utilization = (total * 100) // requested
    return _Usage(utilization / target, utilization, total // entries)


def _average_usage(values: Mapping[str, int], target: int) -> _Usage:
    """GetMetricUsageRatio: the truncated per-pod average over the target."""
    average = sum(values.values()) // len(values)
    return _Usage(average / target, average, average)


def _pod_replicas(
    metric: MetricSpec,
    reading: MetricReading,
    pods: Sequence[PodInfo],
    current_replicas: int,
    tolerances: _Tolerances,
    now: float,
    config: ControllerConfig,
) -> tuple[int, _Usage]:
    """GetResourceReplicas / calcPlainMetricReplicas: the per-pod metric path, with the readiness and
    missing-metric rules and the re-check that the direction did not flip."""
    if reading.pods is None:
        raise _MetricUnavailable(f"no per-pod samples for {metric.key}")
    if not pods:
        raise _MetricUnavailable("no pods returned by selector while calculating replica count")
    resource = metric.name if metric.type == "Resource" else ""
    groups = _group_pods(pods, reading.pods, resource, now, config)
    known = {pod.name for pod in pods}
    values = {
        name: _milli(sample.value)
        for name, sample in reading.pods.items()
        if name in known and name not in groups.ignored and name not in groups.unready
    }
    if not values:
        raise _MetricUnavailable("did not receive metrics for targeted pods (pods might be unready)")

    utilization = metric.target_type == "Utilization"
    requests: dict[str, int] = {}
    if utilization:
        for pod in pods:
            if metric.name not in pod.requests:
                raise _MetricUnavailable(f"missing request for {metric.name} in pod {pod.name}")
            requests[pod.name] = _milli(pod.requests[metric.name])
        target = int(metric.target)
        usage_of = lambda vals: _utilization_usage(vals, requests, target)  # noqa: E731
    else:
        target = _milli(metric.target)
        usage_of = lambda vals: _average_usage(vals, target)  # noqa: E731

    usage = usage_of(values)
    scale_up_with_unready = bool(groups.unready) and usage.ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.within(usage.ratio):
            return current_replicas, usage
        return math.ceil(usage.ratio * groups.ready_count), usage

    if groups.missing:
        if usage.ratio < 1.0:
            for name in groups.missing:
                # Scale-down: a missing pod is assumed at the target (max(100%, target) of its request).
                values[name] = requests[name] * max(100, target) // 100 if utilization else target
        elif not utilization or usage.ratio > 1.0:
            for name in groups.missing:
                values[name] = 0
    if scale_up_with_unready:
        for name in groups.unready:
            values[name] = 0

    new_ratio = usage_of(values).ratio
    flipped = (usage.ratio < 1.0 < new_ratio) or (usage.ratio > 1.0 > new_ratio)
    if tolerances.within(new_ratio) or flipped:
        return current_replicas, usage
    new_replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return current_replicas, usage
    return new_replicas, usage


def _ready_pod_count(pods: Sequence[PodInfo]) -> int:
    if not pods:
        raise _MetricUnavailable("no pods returned by selector while calculating replica count")
    return sum(1 for pod in pods if pod.phase == "Running" and pod.ready is True)


def _value_replicas(
    metric: MetricSpec,
    reading: MetricReading,
    pods: Sequence[PodInfo],
    current_replicas: int,
    status_replicas: int,
    tolerances: _Tolerances,
) -> tuple[int, int]:
    """Object and External metrics: (replicas, current usage in milli-units for the status)."""
    if reading.value is None:
        raise _MetricUnavailable(f"no value for {metric.key}")
    usage = _milli(reading.value)
    target = _milli(metric.target)
    if metric.target_type == "AverageValue":
        # Get{Object,External}PerPodMetricReplicas: independent of the current count (what KEDA relies on).
        replicas = status_replicas
        ratio = usage / (target * status_replicas) if status_replicas else math.inf
        if not tolerances.within(ratio):
            replicas = math.ceil(usage / target)
        average = math.ceil(usage / status_replicas) if status_replicas else usage
        return replicas, average
    ratio = usage / target
    if current_replicas == 0:
        return math.ceil(ratio), usage
    if tolerances.within(ratio):
        return current_replicas, usage
    return math.ceil(ratio * _ready_pod_count(pods)), usage


def _metric_status(metric: MetricSpec, usage: _Usage | None, value: int | None) -> dict[str, object]:
    if metric.type == "Resource":
        assert usage is not None
        current: dict[str, object] = {"averageValue": _quantity(usage.raw_average)}
        if metric.target_type == "Utilization":
            current["averageUtilization"] = usage.current
        return {"type": "Resource", "resource": {"name": metric.name, "current": current}}
    if metric.type == "Pods":
        assert usage is not None
        return {
            "type": "Pods",
            "pods": {"metric": {"name": metric.name}, "current": {"averageValue": _quantity(usage.current)}},
        }
    assert value is not None
    field_name = "value" if metric.target_type == "Value" else "averageValue"
    body: dict[str, object] = {"metric": {"name": metric.name}, "current": {field_name: _quantity(value)}}
    if metric.type == "Object":
        body["describedObject"] = dict(metric.described_object or {})
        return {"type": "Object", "object": body}
    return {"type": "External", "external": body}


def _propose(
    metric: MetricSpec,
    reading: MetricReading | None,
    pods: Sequence[PodInfo],
    current_replicas: int,
    status_replicas: int,
    tolerances: _Tolerances,
    now: float,
    config: ControllerConfig,
) -> MetricProposal:
    """One metric's raw replica proposal (computeReplicasForMetric)."""
    try:
        if reading is None:
            raise _MetricUnavailable(f"unable to get metric {metric.name}: no reading")
        if metric.type in ("Resource", "Pods"):
            replicas, usage = _pod_replicas(metric, reading, pods, current_replicas, tolerances, now, config)
            return MetricProposal(metric, replicas, _metric_status(metric, usage, None))
        replicas, value = _value_replicas(metric, reading, pods, current_replicas, status_replicas, tolerances)
        return MetricProposal(metric, replicas, _metric_status(metric, None, value))
    except _MetricUnavailable as error:
        return MetricProposal(metric, None, None, error=str(error))


# ------------------------------------------------------------------------------------- normalisation


def _stabilize_with_behavior(
    behavior: Behavior, history: tuple[Recommendation, ...], current: int, desired: int, now: float
) -> tuple[int, str, str, tuple[Recommendation, ...]]:
    """stabilizeRecommendationWithBehaviors: clamp `current` between the lowest recommendation in the
    scale-up window and the highest in the scale-down window."""
    assert behavior.scale_up is not None and behavior.scale_down is not None
    up_cutoff = now - (behavior.scale_up.stabilization_window_seconds or 0)
    down_cutoff = now - (behavior.scale_down.stabilization_window_seconds or 0)
    up_rec = down_rec = desired
    old_index = None
    for index, rec in enumerate(history):
        if rec.timestamp > up_cutoff:
            up_rec = min(rec.replicas, up_rec)
        if rec.timestamp > down_cutoff:
            down_rec = max(rec.replicas, down_rec)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = index
    recommendation = min(max(current, up_rec), down_rec)
    if desired >= current:
        reason = "ScaleUpStabilized"
        message = "recent recommendations were lower than current one, applying the lowest recent recommendation"
    else:
        reason = "ScaleDownStabilized"
        message = "recent recommendations were higher than current one, applying the highest recent recommendation"
    return recommendation, reason, message, _store(history, old_index, Recommendation(desired, now))


def _stabilize_legacy(
    history: tuple[Recommendation, ...], desired: int, now: float, window: float
) -> tuple[int, tuple[Recommendation, ...]]:
    """stabilizeRecommendation (no behavior): the highest recommendation within the downscale window."""
    cutoff = now - window
    highest = desired
    old_index = None
    for index, rec in enumerate(history):
        if rec.timestamp < cutoff:
            old_index = index
        elif rec.replicas > highest:
            highest = rec.replicas
    return highest, _store(history, old_index, Recommendation(desired, now))


def _store(
    history: tuple[Recommendation, ...], old_index: int | None, new: Recommendation
) -> tuple[Recommendation, ...]:
    """Reuse the last stale slot, or append: the controller's list stays as long as its busiest window."""
    if old_index is None:
        return (*history, new)
    return (*history[:old_index], new, *history[old_index + 1 :])


def _change_in_period(events: tuple[ScaleEvent, ...], period: int, now: float) -> int:
    cutoff = now - period
    return sum(event.change for event in events if event.timestamp > cutoff)


def _count_at_period_start(current: int, history: History, period: int, now: float) -> int:
    """The replica count before the scale events of the policy's period (both limits start from it)."""
    return (current - _change_in_period(history.scale_up_events, period, now)
            + _change_in_period(history.scale_down_events, period, now))


def scale_up_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    """calculateScaleUpLimitWithScalingRules: the highest count the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies or ():
        start = _count_at_period_start(current, history, policy.period_seconds, now)
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    if not proposals:
        return current
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    """calculateScaleDownLimitWithBehaviors: the lowest count the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies or ():
        start = _count_at_period_start(current, history, policy.period_seconds, now)
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    if not proposals:
        return current
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


_WITHIN_RANGE = ("DesiredWithinRange", "the desired count is within the acceptable range")
_TOO_MANY = ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
_TOO_FEW = ("TooFewReplicas", "the desired replica count is less than the minimum replica count")
_UP_LIMIT = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
_DOWN_LIMIT = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")


def _rate_limit_with_behavior(
    hpa: HpaSpec, behavior: Behavior, history: History, current: int, desired: int, min_replicas: int, now: float
) -> tuple[int, tuple[str, str]]:
    """convertDesiredReplicasWithBehaviorRate."""
    assert behavior.scale_up is not None and behavior.scale_down is not None
    if desired > current:
        limit = max(scale_up_limit(current, history, behavior.scale_up, now), current)
        allowed, why = (limit, _UP_LIMIT) if hpa.max_replicas > limit else (hpa.max_replicas, _TOO_MANY)
        if desired > allowed:
            return allowed, why
    elif desired < current:
        limit = min(scale_down_limit(current, history, behavior.scale_down, now), current)
        allowed, why = (limit, _DOWN_LIMIT) if min_replicas < limit else (min_replicas, _TOO_FEW)
        if desired < allowed:
            return allowed, why
    return desired, _WITHIN_RANGE


def _rate_limit_legacy(hpa: HpaSpec, current: int, desired: int, min_replicas: int) -> tuple[int, tuple[str, str]]:
    """convertDesiredReplicasWithRules: up to max(2 x current, 4) per sync, no scale-down rate limit."""
    limit = int(max(_LEGACY_SCALE_UP_FACTOR * current, _LEGACY_SCALE_UP_MINIMUM))
    allowed, why = (limit, _UP_LIMIT) if hpa.max_replicas > limit else (hpa.max_replicas, _TOO_MANY)
    if desired < min_replicas:
        return min_replicas, _TOO_FEW
    if desired > allowed:
        return allowed, why
    return desired, _WITHIN_RANGE


def record_rescale(history: History, behavior: Behavior | None, previous: int, new: int, now: float) -> History:
    """storeScaleEvent: remember a rescale for the policies' periods (only when `behavior` is set),
    dropping events older than the direction's longest policy period."""
    if behavior is None or new == previous:
        return history
    if new > previous:
        rules, events = behavior.scale_up, history.scale_up_events
    else:
        rules, events = behavior.scale_down, history.scale_down_events
    longest = max((policy.period_seconds for policy in (rules.policies if rules else None) or ()), default=0)
    kept = tuple(e for e in events if e.timestamp >= now - longest)
    event = ScaleEvent(abs(new - previous), now)
    if new > previous:
        return replace(history, scale_up_events=(*kept, event))
    return replace(history, scale_down_events=(*kept, event))


# ------------------------------------------------------------------------------------------ decide


def decide(
    hpa: HpaSpec,
    current_replicas: int,
    pods: Sequence[PodInfo],
    readings: Mapping[str, MetricReading],
    history: History,
    now: float,
    config: ControllerConfig = ControllerConfig(),
    status_replicas: int | None = None,
) -> Decision:
    """One reconcile of one HPA (reconcileAutoscaler after a successful get of /scale).

    `current_replicas` is the target's spec.replicas, `status_replicas` its status.replicas (default: the
    same), `readings` maps each `MetricSpec.key` to what the metrics API returned (absent: unavailable).
    The returned history assumes the rescale, if any, succeeds.
    """
    if current_replicas < 0:
        raise ValueError(f"current replicas must not be negative, got {current_replicas}")
    status_replicas = current_replicas if status_replicas is None else status_replicas
    behavior = default_behavior(hpa.behavior, config) if hpa.behavior is not None else None

    def finish(
        desired: int,
        reason: str,
        conditions: list[Condition],
        proposals: tuple[MetricProposal, ...] = (),
        metric_replicas: int | None = None,
        winning: str | None = None,
        stabilized: int | None = None,
        held: tuple[str, ...] = (),
        new_history: History = history,
    ) -> Decision:
        if desired != current_replicas:
            new_history = record_rescale(new_history, behavior, current_replicas, desired, now)
            conditions = [
                Condition(
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    f"the HPA controller was able to update the target scale to {desired}",
                )
                if c.type == "AbleToScale"
                else c
                for c in conditions
            ]
        return Decision(
            current_replicas=current_replicas,
            desired_replicas=desired,
            metric_replicas=metric_replicas,
            winning_metric=winning,
            proposals=proposals,
            stabilized_replicas=stabilized,
            held_back_by=held,
            rescale_reason=reason,
            conditions=tuple(conditions),
            current_metrics=tuple(p.status for p in proposals if p.status is not None),
            history=new_history,
        )

    able = Condition(
        "AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get the target's current scale"
    )
    if current_replicas == 0 and hpa.min_replicas != 0:
        disabled = Condition(
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        )
        return finish(0, "", [able, disabled])
    if current_replicas > hpa.max_replicas:
        return finish(hpa.max_replicas, "Current number of replicas above Spec.MaxReplicas", [able])
    if current_replicas < hpa.min_replicas:
        return finish(hpa.min_replicas, "Current number of replicas below Spec.MinReplicas", [able])

    tolerances = _tolerances(hpa, config)
    proposals = tuple(
        _propose(m, readings.get(m.key), pods, current_replicas, status_replicas, tolerances, now, config)
        for m in hpa.effective_metrics
    )
    valid = [p for p in proposals if p.replicas is not None]
    invalid = [p for p in proposals if p.replicas is None]
    metric_replicas, winning = 0, None
    for proposal in valid:
        assert proposal.replicas is not None
        if metric_replicas == 0 or proposal.replicas > metric_replicas:
            metric_replicas, winning = proposal.replicas, proposal.metric.key
    if not valid or (invalid and metric_replicas < current_replicas):
        first = invalid[0]
        inactive = Condition(
            "ScalingActive",
            "False",
            _FAILED_REASON[first.metric.type],
            f"the HPA was unable to compute the replica count: {first.error}",
        )
        return finish(current_replicas, "", [able, inactive], proposals, None, None)
    active = Condition(
        "ScalingActive",
        "True",
        "ValidMetricFound",
        f"the HPA was able to successfully calculate a replica count from {winning}",
    )

    desired = metric_replicas
    reason = ""
    if desired > current_replicas:
        reason = f"{winning} above target"
    elif desired < current_replicas:
        reason = "All metrics below target"

    if behavior is None:
        stabilized, recommendations = _stabilize_legacy(
            history.recommendations, desired, now, config.downscale_stabilization
        )
        stab_reason = (
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        )
        final, limited = _rate_limit_legacy(hpa, current_replicas, stabilized, hpa.min_replicas)
    else:
        stabilized, why, message, recommendations = _stabilize_with_behavior(
            behavior, history.recommendations, current_replicas, desired, now
        )
        stab_reason = (why, message)
        final, limited = _rate_limit_with_behavior(
            hpa, behavior, history, current_replicas, stabilized, hpa.min_replicas, now
        )

    held: list[str] = []
    if stabilized != desired:
        able = Condition("AbleToScale", "True", *stab_reason)
        held.append(stab_reason[0])
    else:
        able = Condition("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
    if final != stabilized:
        scaling_limited = Condition("ScalingLimited", "True", *limited)
        held.append(limited[0])
    else:
        scaling_limited = Condition("ScalingLimited", "False", *limited)
    return finish(
        final,
        reason,
        [able, active, scaling_limited],
        proposals,
        metric_replicas,
        winning,
        stabilized,
        tuple(held),
        replace(history, recommendations=recommendations),
    )


# ------------------------------------------------------------------------------------------ explain

_EXPLAIN_NOW = 1_000_000.0  # far past every readiness and CPU-initialisation window of the synthetic pods


def explain(hpa: HpaSpec, replicas: int, current: Mapping[str, float],
            config: ControllerConfig = ControllerConfig()) -> Decision:
    """What ``decide`` gives for the metrics an HPA's status reports, with no history: the formula's answer.

    ``current`` maps ``MetricSpec.key`` to the figure status.currentMetrics holds: the utilization percentage
    (Utilization), the per-pod average (AverageValue; for Object and External the status's averageValue) or the
    value (Value). ``replicas`` is status.currentReplicas. The pods are synthesised as ``replicas`` Ready pods
    that all report the average, so each proposal is the textbook ceil(current / target x replicas) (External
    and Object AverageValue: ceil(total / target)) with the tolerance; a metric missing from ``current`` is
    unavailable. The real controller also adjusts for missing and unready pods' samples, which the status does
    not show; with an empty history no stabilization window or rate policy looks back.
    """
    pods = tuple(PodInfo(f"pod-{n}", requests={"cpu": 1.0, "memory": 1.0}) for n in range(replicas))
    readings: dict[str, MetricReading] = {}
    for metric in hpa.effective_metrics:
        figure = current.get(metric.key)
        if figure is None:
            continue
        if metric.type in ("Resource", "Pods"):
            per_pod = figure / 100 if metric.target_type == "Utilization" else figure
            sample = PodMetric(per_pod, timestamp=_EXPLAIN_NOW)
            readings[metric.key] = MetricReading(pods={pod.name: sample for pod in pods})
        elif metric.target_type == "AverageValue":
            readings[metric.key] = MetricReading(value=figure * replicas)
        else:
            readings[metric.key] = MetricReading(value=figure)
    return decide(hpa, replicas, pods, readings, History(), _EXPLAIN_NOW, config)
