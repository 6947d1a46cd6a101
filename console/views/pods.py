"""The GPU pods pane's view model: a KubeSnapshot's pods as rows grouped by workload, pure and Textual-free.

A pod's workload is its controller owner: a StatefulSet directly, a Deployment or an Argo Rollout through the
ReplicaSet it owns; a pod with no controller is under "(none)". Workloads that request GPUs come first. Rows carry
the words an operator must see without colour (``!`` and the reason): crash-looping, not ready, Pending with the
scheduler's reason, Failed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from console.sources.kube import KubeSnapshot
from services.quantity import parse_quantity

Obj = dict[str, Any]
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
NO_WORKLOAD = "(none)"
CRASH_LOOP = "CrashLoopBackOff"


@dataclass(frozen=True)
class PodRow:
    key: str  # namespace/name: stable across refreshes
    workload: str  # "StatefulSet vllm-server", or NO_WORKLOAD
    name: str
    gpus: int
    node: str  # "" while unscheduled
    gpu_model: str  # the node's nvidia.com/gpu.product label, "" when none
    phase: str
    ready: int
    containers: int
    restarts: int
    created: float | None  # Unix time; the age is drawn against the wall clock of the redraw
    problem: str | None  # CrashLoopBackOff, NotReady, Unschedulable, Failed... : drawn with "!"
    warning: str  # the last Warning event's "Reason: message", or the scheduler's reason while Pending

    def age_s(self, wall_now: float) -> float | None:
        return None if self.created is None else wall_now - self.created

    def matches(self, needle: str) -> bool:
        """The ``/`` filter: a case-insensitive substring of the pod, its workload or its node."""
        needle = needle.lower()
        return any(needle in text.lower() for text in (self.name, self.workload, self.node))


@dataclass(frozen=True)
class WorkloadGroup:
    workload: str
    pods: tuple[PodRow, ...]

    @property
    def gpus(self) -> int:
        return sum(pod.gpus for pod in self.pods)

    @property
    def problems(self) -> int:
        return sum(1 for pod in self.pods if pod.problem)


def timestamp(value: object) -> float | None:
    """An API timestamp (RFC 3339, ``Z``) as Unix seconds; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age_text(seconds: float | None) -> str:
    """kubectl's coarse age: 45s, 12m, 5h, 3d."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def gpus_requested(pod: Obj) -> int:
    """nvidia.com/gpu over the containers, from requests or else limits (extended resources need them equal)."""
    total = 0.0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        amount = (resources.get("requests") or {}).get(GPU_RESOURCE, (resources.get("limits") or {}).get(GPU_RESOURCE))
        if amount is not None:
            try:
                total += parse_quantity(amount)
            except ValueError:
                continue
    return math.ceil(total)


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _controller(obj: Obj) -> Obj | None:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((o for o in owners if o.get("controller")), owners[0] if owners else None)


def workload_of(pod: Obj, replicasets: dict[tuple[str, str], Obj]) -> str:
    owner = _controller(pod)
    if owner is None:
        return NO_WORKLOAD
    kind, name = str(owner.get("kind") or ""), str(owner.get("name") or "")
    if kind == "ReplicaSet":
        above = _controller(replicasets.get((_key(pod)[0], name)) or {})
        if above is not None:
            return f"{above.get('kind')} {above.get('name')}"
    return f"{kind} {name}"


def _event_time(event: Obj) -> float:
    for field in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if (when := timestamp(event.get(field))) is not None:
            return when
    return timestamp((event.get("metadata") or {}).get("creationTimestamp")) or 0.0


def last_warnings(events: Iterable[Obj]) -> dict[tuple[str, str], Obj]:
    """The latest Warning event per pod (namespace, name), by the events' involvedObject."""
    latest: dict[tuple[str, str], Obj] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        if event.get("type") != "Warning" or involved.get("kind") != "Pod":
            continue
        key = (str(involved.get("namespace") or (event.get("metadata") or {}).get("namespace") or ""),
               str(involved.get("name") or ""))
        if key not in latest or _event_time(event) >= _event_time(latest[key]):
            latest[key] = event
    return latest


def _event_text(event: Obj | None) -> str:
    if event is None:
        return ""
    return f"{event.get('reason') or ''}: {event.get('message') or ''}".strip(": ")


def _condition(pod: Obj, type_: str) -> Obj | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def _problem(pod: Obj, phase: str, ready: bool) -> str | None:
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == CRASH_LOOP:
            return CRASH_LOOP
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            return str(scheduled.get("reason") or "Unschedulable")
        return "Pending"
    if phase in ("Failed", "Unknown"):
        return phase
    if phase == "Running" and not ready:
        return "NotReady"
    return None


def pod_row(pod: Obj, workload: str, nodes: dict[str, Obj], warning: Obj | None) -> PodRow:
    namespace, name = _key(pod)
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    containers = len(spec.get("containers") or [])
    statuses = status.get("containerStatuses") or []
    ready_condition = _condition(pod, "Ready")
    ready = ready_condition is not None and ready_condition.get("status") == "True"
    node = str(spec.get("nodeName") or "")
    labels = ((nodes.get(node) or {}).get("metadata") or {}).get("labels") or {}
    created = timestamp((pod.get("metadata") or {}).get("creationTimestamp"))
    text = _event_text(warning)
    if phase == "Pending" and (scheduled := _condition(pod, "PodScheduled")) and scheduled.get("status") == "False":
        if not (warning and warning.get("reason") == "FailedScheduling"):
            text = f"FailedScheduling: {scheduled.get('message') or scheduled.get('reason') or ''}".strip(": ")
    return PodRow(
        key=f"{namespace}/{name}", workload=workload, name=name, gpus=gpus_requested(pod), node=node,
        gpu_model=str(labels.get(GPU_PRODUCT_LABEL) or ""), phase=phase,
        ready=sum(1 for c in statuses if c.get("ready")), containers=containers,
        restarts=sum(int(c.get("restartCount") or 0) for c in statuses),
        created=created, problem=_problem(pod, phase, ready), warning=text)


class PodRowCache:
    """Rows of the last pass, by what they are built from: a pod whose resourceVersion, workload, node model and
    last warning are unchanged keeps its row. On a cluster of thousands of pods a watch event changes a few of
    them, so a redraw costs a dictionary lookup per pod instead of a parse."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, ...], PodRow] = {}
        self._next: dict[tuple[str, ...], PodRow] = {}

    def row(self, pod: Obj, workload: str, nodes: dict[str, Obj], warning: Obj | None) -> PodRow:
        meta = pod.get("metadata") or {}
        version = str(meta.get("resourceVersion") or "")
        if not version:
            return pod_row(pod, workload, nodes, warning)
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        model = str((((nodes.get(node) or {}).get("metadata") or {}).get("labels") or {}).get(GPU_PRODUCT_LABEL) or "")
        identity = (str(meta.get("namespace") or ""), str(meta.get("name") or ""), version, workload, model,
                    _event_text(warning), str((warning or {}).get("reason") or ""))
        row = self._rows.get(identity) or pod_row(pod, workload, nodes, warning)
        self._next[identity] = row
        return row

    def end_pass(self) -> None:
        """Forget the rows of pods not seen in this pass (deleted, or changed since)."""
        self._rows, self._next = self._next, {}


def pod_groups(snapshot: KubeSnapshot, cache: PodRowCache | None = None) -> list[WorkloadGroup]:
    """Every pod, grouped by workload: GPU workloads first, then by name; pods by name within a group."""
    cache = cache or PodRowCache()
    replicasets = {_key(rs): rs for rs in snapshot.objects("replicasets")}
    nodes = {_key(node)[1]: node for node in snapshot.objects("nodes")}
    warnings = last_warnings(snapshot.objects("events"))
    grouped: dict[str, list[PodRow]] = {}
    for pod in snapshot.objects("pods"):
        workload = workload_of(pod, replicasets)
        if snapshot.namespace is None and workload != NO_WORKLOAD:
            workload = f"{_key(pod)[0]}/{workload}"
        grouped.setdefault(workload, []).append(cache.row(pod, workload, nodes, warnings.get(_key(pod))))
    cache.end_pass()
    groups = [WorkloadGroup(name, tuple(sorted(rows, key=lambda r: r.key))) for name, rows in grouped.items()]
    return sorted(groups, key=lambda g: (g.gpus == 0, g.workload == NO_WORKLOAD, g.workload))


def filtered(groups: Sequence[WorkloadGroup], needle: str) -> list[WorkloadGroup]:
    """The groups with only the rows the ``/`` filter matches; groups left empty are dropped."""
    if not needle:
        return list(groups)
    kept = [WorkloadGroup(g.workload, tuple(p for p in g.pods if p.matches(needle))) for g in groups]
    return [g for g in kept if g.pods]
