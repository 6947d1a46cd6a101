"""What every controller shares: the kinds it touches, its settings, owner references and core/v1 Events."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.kubesim.discovery import Registry, ResourceKind
from services.kubesim.errors import ApiError
from services.kubesim.metrics import MetricBoard
from services.kubesim.store import Obj, Store

LOG = logging.getLogger(__name__)

ANNOTATION_PREFIX = "kubesim.switchboard/"
CRASH_LOOP = ANNOTATION_PREFIX + "crash-loop"  # "true": the pod's containers keep crashing
RUN_SECONDS = ANNOTATION_PREFIX + "run-seconds"  # a Job's (or its pods') run time before they succeed
READY_SECONDS = ANNOTATION_PREFIX + "ready-seconds"  # a pod's own delay from Running to Ready
# On a Rollout, "<prefix><N>: Successful|Failed|Inconclusive|Error" decides the AnalysisRun started at step index N.
ANALYSIS_OUTCOME_PREFIX = ANNOTATION_PREFIX + "analysis-step-"
COMPONENT = "kubesim"


@dataclass(frozen=True)
class Settings:
    """Simulated-cluster timings, in seconds of the runner's clock."""

    tick: float = 1.0  # how often every controller runs
    ready_delay: float = 2.0  # from Running to Ready
    job_seconds: float = 5.0  # a Job pod's run time when its Job names none
    crash_interval: float = 10.0  # between restarts of a crash-looping container
    hpa_sync: float = 15.0  # the HPA controller's --horizontal-pod-autoscaler-sync-period


@dataclass(frozen=True)
class Kinds:
    pods: ResourceKind
    nodes: ResourceKind
    events: ResourceKind
    deployments: ResourceKind
    replicasets: ResourceKind
    statefulsets: ResourceKind
    jobs: ResourceKind
    services: ResourceKind
    configmaps: ResourceKind
    hpas: ResourceKind
    rollouts: ResourceKind
    analysisruns: ResourceKind
    analysistemplates: ResourceKind
    scaledobjects: ResourceKind

    @classmethod
    def of(cls, registry: Registry) -> Kinds:
        def kind(group: str, plural: str, version: str = "v1") -> ResourceKind:
            found = registry.lookup(group, version, plural)
            assert found is not None, f"kubesim's registry lacks {group or 'core'}/{version} {plural}"
            return found

        argo = "argoproj.io"
        return cls(kind("", "pods"), kind("", "nodes"), kind("", "events"), kind("apps", "deployments"),
                   kind("apps", "replicasets"), kind("apps", "statefulsets"), kind("batch", "jobs"),
                   kind("", "services"), kind("", "configmaps"),
                   kind("autoscaling", "horizontalpodautoscalers", "v2"), kind(argo, "rollouts", "v1alpha1"),
                   kind(argo, "analysisruns", "v1alpha1"), kind(argo, "analysistemplates", "v1alpha1"),
                   kind("keda.sh", "scaledobjects", "v1alpha1"))


@dataclass
class Context:
    """What a controller reads and writes through: the store (on the server's loop), the kinds, the clock."""

    store: Store
    kinds: Kinds
    settings: Settings
    clock: Callable[[], float]  # seconds, monotonic: drives the simulated delays
    board: MetricBoard = field(default_factory=MetricBoard)  # the latest metric samples (services/kubesim/metrics.py)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Runs ``work`` on kubesim's loop beside the ticks: a controller's I/O (a Redis read, a Prometheus query)
        must never block a tick. A failure is logged; the runner's stop cancels what is still running."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self.tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                LOG.error("kubesim task %s failed", name, exc_info=finished.exception())

        task.add_done_callback(done)
        return task

    def timestamp(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def event(self, involved: Obj, reason: str, message: str, kind: str = "Normal") -> None:
        """Records a core/v1 Event about ``involved``; a repeat of the same reason and message bumps the existing
        one's count (as the API server's event correlator does: "New size: 7" and "New size: 8" stay two events)."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        name = f"{meta['name']}.{hashlib.sha1((meta['uid'] + reason + message).encode()).hexdigest()[:16]}"
        now = self.timestamp()
        try:
            existing = self.store.get(self.kinds.events, namespace, name)
        except ApiError:  # 404: the first such event
            existing = None
        if existing is not None:
            existing.update(count=int(existing.get("count") or 1) + 1, lastTimestamp=now, message=message)
            self.store.replace(self.kinds.events, namespace, name, existing)
            return
        self.store.create(self.kinds.events, namespace, {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": involved["kind"], "apiVersion": involved["apiVersion"], "name": meta["name"],
                               "namespace": namespace, "uid": meta["uid"],
                               "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason, "message": message, "type": kind, "count": 1, "firstTimestamp": now,
            "lastTimestamp": now, "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT})


def owner_reference(owner: Obj) -> Obj:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def owned_by(obj: Obj, owner: Obj) -> bool:
    return any(ref.get("uid") == owner["metadata"]["uid"] and ref.get("controller")
               for ref in obj["metadata"].get("ownerReferences") or [])


def by_controller(objs: list[Obj]) -> dict[str, list[Obj]]:
    """Objects grouped by their controlling owner's uid: one pass, instead of asking ``owned_by`` of every
    object for every owner (50 ReplicaSets over 1,000 pods was 50,000 checks a tick)."""
    groups: dict[str, list[Obj]] = {}
    for obj in objs:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("controller") and ref.get("uid"):
                groups.setdefault(ref["uid"], []).append(obj)
                break
    return groups


def template_hash(template: Obj) -> str:
    """A short, stable hash of a pod template (the pod-template-hash label's value)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def pod_from_template(template: Obj, owner: Obj, labels: dict[str, str], name: str | None = None,
                      annotations: dict[str, str] | None = None) -> Obj:
    """A Pod built from a workload's pod template, owned by ``owner``."""
    meta = copy.deepcopy(template.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    if annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = f"{owner['metadata']['name']}-"
    meta["ownerReferences"] = [owner_reference(owner)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}


def condition(conditions: list[Obj], kind: str) -> Obj | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def is_ready(pod: Obj) -> bool:
    found = condition((pod.get("status") or {}).get("conditions") or [], "Ready")
    return (pod.get("status") or {}).get("phase") == "Running" and bool(found) and found.get("status") == "True"


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def set_condition(conditions: list[Obj], kind: str, status: str, reason: str, message: str, now: str,
                  update_time: bool = False) -> list[Obj]:
    """Conditions with ``kind`` set; its transition time only moves when its status changes."""
    old = condition(conditions, kind)
    changed = old is None or old.get("status") != status
    entry: Obj = {"type": kind, "status": status, "reason": reason, "message": message,
                  "lastTransitionTime": now if changed else old.get("lastTransitionTime", now)}  # type: ignore[union-attr]
    if update_time:
        same = old is not None and not changed and old.get("reason") == reason
        entry["lastUpdateTime"] = old.get("lastUpdateTime", now) if same else now  # type: ignore[union-attr]
    if old is None:
        return [*conditions, entry]
    return [entry if c.get("type") == kind else c for c in conditions]
