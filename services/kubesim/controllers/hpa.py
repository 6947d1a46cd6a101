"""The HorizontalPodAutoscaler controller: each HPA is reconciled every ``Settings.hpa_sync`` seconds of the runner's
clock (first on the tick that sees it) with the pure algorithm of services/hpa.py, and the outcome is written as
kube-controller-manager writes it: the scale target's spec.replicas (what a /scale update does), the HPA's status
(currentReplicas, desiredReplicas, currentMetrics, lastScaleTime, the AbleToScale, ScalingActive and ScalingLimited
conditions) and its Events (SuccessfulRescale, FailedGetScale, FailedGet*Metric, FailedComputeMetricsReplicas).

Metrics come from the board (services/kubesim/metrics.py), as the metrics APIs would answer: a Resource or Pods
metric's series holds the target's total, spread evenly over its Running pods; an Object metric's series is keyed by
the described object's name; an External metric's by its name alone. An absent series is an unavailable metric.
Like the real controller, the recommendations and scale events each HPA's policies need are kept in memory only."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from services.hpa import (
    Decision,
    History,
    HpaSpec,
    MetricReading,
    MetricSpec,
    PodInfo,
    PodMetric,
    decide,
)
from services.hpa_spec import SpecError, parse_spec
from services.kubesim.controllers.base import Context, condition, set_condition
from services.kubesim.discovery import ResourceKind
from services.kubesim.errors import ApiError
from services.kubesim.metrics import Series
from services.kubesim.selectors import label_selector
from services.kubesim.store import Obj, Store
from services.quantity import parse_quantity

LOG = logging.getLogger(__name__)

# metrics-server's default --metric-resolution: the window each per-pod sample covers (the CPU readiness rules
# count a new pod's sample only once it was taken a full window after the pod turned Ready).
METRIC_WINDOW_S = 15.0
RESOURCES = ("cpu", "memory")
# A spec the algorithm cannot use (the real API server would have refused most of these on write).
INVALID_SPEC = "InvalidSpec"
# The Warning event each metric type's failure records (getUnableComputeReplicaCountCondition).
FAILED_REASONS = {"Resource": "FailedGetResourceMetric", "Pods": "FailedGetPodsMetric",
                  "Object": "FailedGetObjectMetric", "External": "FailedGetExternalMetric"}


# ------------------------------------------------------------------------------------------------- the pods


def selector_text(selector: Obj) -> str:
    """A LabelSelector (matchLabels, matchExpressions) in the ``labelSelector=`` syntax selectors.py parses."""
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator in ("In", "NotIn"):
            terms.append(f"{key} {operator.lower()} ({','.join(values)})")
        elif operator == "Exists":
            terms.append(str(key))
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise ApiError(400, f"{operator!r} is not a valid label selector operator")
    return ",".join(terms)


def _wall_seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _stored(store: Store, kind: ResourceKind) -> list[Obj]:
    """Every stored object of ``kind`` itself, uncopied (list's predicate is handed each one), to read only:
    copying a thousand pods every tick would cost more than all the rest this controller does."""
    found: list[Obj] = []

    def keep(obj: Obj) -> bool:
        found.append(obj)
        return False  # nothing for list to copy

    store.list(kind, None, keep)
    return found


class PodTimes:
    """Each pod's startTime and Ready transition on the runner's clock.

    The API holds wall-clock stamps; the algorithm compares them with sample times and ``now`` on the runner's
    (possibly injected) clock. So each stamp is placed on that clock when first seen: the runner's now, less how
    long ago (by the wall clock) it was written. Seen every tick, a stamp is placed within a tick of its moment."""

    def __init__(self) -> None:
        self._placed: dict[tuple[str, str], tuple[str, float]] = {}  # (pod uid, field) -> (stamp, runner time)

    def observe(self, pods: Iterable[Obj], now: float) -> None:
        wall_now = datetime.now(UTC).timestamp()
        alive: set[tuple[str, str]] = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            status = pod.get("status") or {}
            ready = condition(status.get("conditions") or [], "Ready") or {}
            for field, stamp in (("start", status.get("startTime")), ("ready", ready.get("lastTransitionTime"))):
                if not isinstance(stamp, str):
                    continue
                alive.add((uid, field))
                placed = self._placed.get((uid, field))
                if placed is None or placed[0] != stamp:
                    try:
                        self._placed[(uid, field)] = (stamp, now - max(0.0, wall_now - _wall_seconds(stamp)))
                    except ValueError:
                        LOG.warning("kubesim HPA: pod %s has a malformed %s time %r", uid, field, stamp)
        for key in set(self._placed) - alive:
            del self._placed[key]

    def at(self, uid: str, field: str) -> float | None:
        placed = self._placed.get((uid, field))
        return None if placed is None else placed[1]


def pod_requests(pod: Obj) -> dict[str, float]:
    """The summed container requests of cpu and memory; a resource some container does not request is left out
    (the controller then reports "missing request for cpu"), as is one with a malformed quantity."""
    containers = (pod.get("spec") or {}).get("containers") or []
    summed: dict[str, float] = {}
    for resource in RESOURCES:
        try:
            amounts = [parse_quantity(((c.get("resources") or {}).get("requests") or {})[resource])
                       for c in containers]
        except KeyError:
            continue
        except ValueError as exc:
            LOG.warning("kubesim HPA: pod %s: %s", pod["metadata"]["name"], exc)
            continue
        if amounts:
            summed[resource] = sum(amounts)
    return summed


def pod_info(pod: Obj, times: PodTimes) -> PodInfo:
    meta, status = pod["metadata"], pod.get("status") or {}
    ready = condition(status.get("conditions") or [], "Ready")
    return PodInfo(name=meta["name"], phase=status.get("phase") or "Pending",
                   ready=None if ready is None else ready.get("status") == "True",
                   deleting=bool(meta.get("deletionTimestamp")),
                   start_time=times.at(meta["uid"], "start") if status.get("startTime") else None,
                   ready_transition_time=times.at(meta["uid"], "ready") or 0.0,
                   requests=pod_requests(pod))


# --------------------------------------------------------------------------------------------- the readings


def readings(context: Context, namespace: str, target: str, spec: HpaSpec, pods: list[Obj],
             now: float) -> dict[str, MetricReading]:
    """What the metrics APIs would return now, by MetricSpec.key; a metric whose series is not on the board is
    left out (unavailable). A sample on the board is current (a source clears what it can no longer read), so the
    per-pod readings are stamped ``now``, as metrics-server's latest scrape is, within its resolution."""
    running = [pod["metadata"]["name"] for pod in pods if (pod.get("status") or {}).get("phase") == "Running"
               and not pod["metadata"].get("deletionTimestamp")]
    found: dict[str, MetricReading] = {}
    for metric in spec.effective_metrics:
        if metric.type in ("Resource", "Pods"):
            sample = context.board.get(Series(namespace, metric.name, target))
            if sample is not None:
                share = sample.value / len(running) if running else 0.0
                found[metric.key] = MetricReading(pods={name: PodMetric(share, now, METRIC_WINDOW_S)
                                                        for name in running})
            continue
        workload = (metric.described_object or {}).get("name", "") if metric.type == "Object" else ""
        sample = context.board.get(Series(namespace, metric.name, workload))
        if sample is not None:
            found[metric.key] = MetricReading(value=sample.value)
    return found


def _failure_text(metric: MetricSpec, error: str | None) -> str:
    """The error as computeReplicasForMetric wraps it (the FailedComputeMetricsReplicas message quotes it)."""
    if metric.type == "Resource":
        what = "utilization" if metric.target_type == "Utilization" else "usage"
        return f"failed to get {metric.name} {what}: {error}"
    if metric.type == "External":
        return f"failed to get external metric {metric.name}: {error}"
    return f"failed to get {metric.type.lower()} metric value: {error}"


# ----------------------------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class Target:
    kind: ResourceKind
    obj: Obj


class Hpas:
    """The HPA controller (horizontal.go's reconcileAutoscaler around services/hpa.decide)."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.histories: dict[str, History] = {}  # HPA uid -> what the policies and windows remember
        self.due: dict[str, float] = {}  # HPA uid -> the runner time of its next reconcile
        self.times = PodTimes()

    def tick(self) -> None:
        store, kinds, now = self.context.store, self.context.kinds, self.context.clock()
        pods = _stored(store, kinds.pods)  # read only, never changed
        self.times.observe(pods, now)  # every tick: each stamp placed within a tick of its moment
        hpas = store.list(kinds.hpas, None, lambda _: True)
        alive = {hpa["metadata"]["uid"] for hpa in hpas}
        for memory in (self.histories, self.due):
            for uid in set(memory) - alive:
                del memory[uid]
        for hpa in hpas:
            uid = hpa["metadata"]["uid"]
            if now < self.due.get(uid, now):
                continue
            self.due[uid] = now + self.context.settings.hpa_sync
            try:
                self.reconcile(hpa, pods, now)
            except Exception:  # one HPA's surprise must not stop the others
                LOG.exception("kubesim HPA %s/%s failed to reconcile", hpa["metadata"].get("namespace"),
                              hpa["metadata"]["name"])

    def _target_kind(self, ref: Obj) -> ResourceKind | None:
        kinds = self.context.kinds
        group = str(ref.get("apiVersion") or "").rpartition("/")[0]
        return {("apps", "Deployment"): kinds.deployments, ("apps", "StatefulSet"): kinds.statefulsets,
                ("apps", "ReplicaSet"): kinds.replicasets,
                ("argoproj.io", "Rollout"): kinds.rollouts}.get((group, ref.get("kind")))

    def _target(self, namespace: str, ref: Obj) -> Target:
        kind = self._target_kind(ref)
        if kind is None:
            group = str(ref.get("apiVersion") or "").rpartition("/")[0]
            raise ApiError(404, f'no matches for kind "{ref.get("kind")}" in group "{group}"')
        return Target(kind, self.context.store.get(kind, namespace, str(ref.get("name") or "")))

    def reconcile(self, hpa: Obj, pods: list[Obj], now: float) -> None:
        """One sync of one HPA; ``pods`` are every pod in the cluster (read only)."""
        namespace = hpa["metadata"]["namespace"]
        status = dict(hpa.get("status") or {})
        status["observedGeneration"] = hpa["metadata"].get("generation", 1)
        status.setdefault("currentReplicas", 0)
        status.setdefault("desiredReplicas", 0)
        stamp = self.context.timestamp()
        conditions = status.get("conditions") or []
        try:
            spec = parse_spec(hpa)
        except SpecError as exc:
            self.context.event(hpa, INVALID_SPEC, str(exc), "Warning")
            status["conditions"] = set_condition(conditions, "AbleToScale", "False", INVALID_SPEC,
                                                 f"the HPA spec cannot be used: {exc}", stamp)
            self._write_status(hpa, status)
            return
        try:
            target = self._target(namespace, (hpa.get("spec") or {}).get("scaleTargetRef") or {})
        except ApiError as exc:
            self.context.event(hpa, "FailedGetScale", exc.message, "Warning")
            status["conditions"] = set_condition(
                conditions, "AbleToScale", "False", "FailedGetScale",
                f"the HPA controller was unable to get the target's current scale: {exc.message}", stamp)
            self._write_status(hpa, status)
            return
        target_spec, target_status = target.obj.get("spec") or {}, target.obj.get("status") or {}
        current = int(target_spec.get("replicas", 1))
        status["currentReplicas"] = current
        selector = target_spec.get("selector")
        try:
            if selector is None:
                raise ApiError(400, "selector is required")
            matches = label_selector(selector_text(selector))
        except ApiError as exc:  # the real controller's words for a scale with no selector, or a bad one
            missing = selector is None
            message = exc.message if missing else \
                f"couldn't convert selector into a corresponding internal selector object: {exc.message}"
            self.context.event(hpa, "SelectorRequired" if missing else "InvalidSelector", message, "Warning")
            status["conditions"] = set_condition(
                conditions, "ScalingActive", "False", "InvalidSelector",
                "the HPA target's scale is missing a selector" if missing else message, stamp)
            self._write_status(hpa, status)
            return
        mine = [pod for pod in pods if pod["metadata"].get("namespace") == namespace and matches(pod)]
        decision = decide(spec, current, [pod_info(pod, self.times) for pod in mine],
                          readings(self.context, namespace, target.obj["metadata"]["name"], spec, mine, now),
                          self.histories.get(hpa["metadata"]["uid"], History()), now,
                          status_replicas=int(target_status.get("replicas", current)))
        self._apply(hpa, target, decision, status)

    def _apply(self, hpa: Obj, target: Target, decision: Decision, status: Obj) -> None:
        uid, stamp = hpa["metadata"]["uid"], self.context.timestamp()
        history = decision.history
        for proposal in decision.proposals:
            if proposal.error is not None:
                self.context.event(hpa, FAILED_REASONS[proposal.metric.type], proposal.error, "Warning")
        conditions = status.get("conditions") or []
        for found in decision.conditions:
            conditions = set_condition(conditions, found.type, found.status, found.reason, found.message, stamp)
        active = decision.condition("ScalingActive")
        if active is not None and active.status == "False" and active.reason.startswith("FailedGet"):
            failed = [p for p in decision.proposals if p.error is not None]
            self.context.event(hpa, "FailedComputeMetricsReplicas",
                               f"invalid metrics ({len(failed)} invalid out of {len(decision.proposals)}), first "
                               f"error is: {_failure_text(failed[0].metric, failed[0].error)}", "Warning")
        else:
            status["desiredReplicas"] = decision.desired_replicas
        if decision.rescale:
            try:
                self._scale(target, decision.desired_replicas)
            except ApiError as exc:
                self.context.event(hpa, "FailedRescale", f"New size: {decision.desired_replicas}; reason: "
                                                         f"{decision.rescale_reason}; error: {exc.message}", "Warning")
                conditions = set_condition(conditions, "AbleToScale", "False", "FailedUpdateScale",
                                           f"the HPA controller was unable to update the target scale: {exc.message}",
                                           stamp)
                old = self.histories.get(uid, History())
                history = replace(history, scale_up_events=old.scale_up_events,
                                  scale_down_events=old.scale_down_events)
                status["desiredReplicas"] = decision.current_replicas
            else:
                self.context.event(hpa, "SuccessfulRescale", f"New size: {decision.desired_replicas}; reason: "
                                                             f"{decision.rescale_reason}")
                status["lastScaleTime"] = stamp
        self.histories[uid] = history
        status["conditions"] = conditions
        if decision.current_metrics:
            status["currentMetrics"] = [dict(metric) for metric in decision.current_metrics]
        else:
            status.pop("currentMetrics", None)
        self._write_status(hpa, status)

    def _scale(self, target: Target, replicas: int) -> None:
        """What an update of the target's /scale subresource does: its spec.replicas, nothing else."""
        meta = target.obj["metadata"]
        fresh = self.context.store.get(target.kind, meta["namespace"], meta["name"])
        fresh.setdefault("spec", {})["replicas"] = replicas
        self.context.store.replace(target.kind, meta["namespace"], meta["name"], fresh)

    def _write_status(self, hpa: Obj, status: Obj) -> None:
        meta = hpa["metadata"]
        if status != hpa.get("status"):
            self.context.store.replace(self.context.kinds.hpas, meta["namespace"], meta["name"],
                                       {**hpa, "status": status}, "status")
