"""Server-side printing: the ``meta.k8s.io/v1`` Table that ``kubectl get`` asks for (``Accept: ...;as=Table``),
with the columns a real API server (or a CRD's additionalPrinterColumns) gives each kind kubesim serves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Column = tuple[str, Callable[[Obj], Any]]


def _get(obj: Obj, path: str, default: Any = None) -> Any:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    return default if current is None else current


def age(obj: Obj, now: datetime | None = None) -> str:
    """Kubernetes' HumanDuration, shortened: 45s, 5m, 3h, 12d."""
    created = _get(obj, "metadata.creationTimestamp")
    if not created:
        return "<unknown>"
    then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for limit, unit, size in ((120, "s", 1), (60 * 120, "m", 60), (3600 * 48, "h", 3600)):
        if seconds < limit:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"


def _ready_containers(obj: Obj) -> str:
    statuses = _get(obj, "status.containerStatuses", [])
    total = len(_get(obj, "spec.containers", []))
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _restarts(obj: Obj) -> int:
    return sum(int(s.get("restartCount", 0)) for s in _get(obj, "status.containerStatuses", []))


def _pod_status(obj: Obj) -> str:
    for state in _get(obj, "status.containerStatuses", []):
        waiting = (state.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
    return str(_get(obj, "status.reason") or _get(obj, "status.phase", "Pending"))


def _node_status(obj: Obj) -> str:
    ready = next((c for c in _get(obj, "status.conditions", []) if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    return f"{status},SchedulingDisabled" if _get(obj, "spec.unschedulable") else status


def _hpa_targets(obj: Obj) -> str:
    parts = []
    for index, metric in enumerate(_get(obj, "spec.metrics", [])):
        source = metric.get(metric.get("type", "").lower() if metric.get("type") != "ContainerResource"
                            else "containerResource") or {}
        target = source.get("target") or {}
        wanted = target.get("averageUtilization")
        wanted_text = f"{wanted}%" if wanted is not None else str(target.get("averageValue", target.get("value")))
        current_metrics = _get(obj, "status.currentMetrics", [])
        current = ((current_metrics[index] if index < len(current_metrics) else {}) or {})
        current_source = current.get(current.get("type", "").lower()) or {}
        now = (current_source.get("current") or {})
        now_value = now.get("averageUtilization")
        now_text = (f"{now_value}%" if now_value is not None
                    else str(now.get("averageValue", now.get("value", "<unknown>"))))
        parts.append(f"{now_text}/{wanted_text}")
    return ", ".join(parts) or "<none>"


def _ports(obj: Obj) -> str:
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in _get(obj, "spec.ports", [])) or "<none>"


def _replicas_ready(obj: Obj) -> str:
    return f"{_get(obj, 'status.readyReplicas', 0)}/{_get(obj, 'spec.replicas', 1)}"


NAME: Column = ("Name", lambda o: _get(o, "metadata.name"))
AGE: Column = ("Age", age)

COLUMNS: dict[str, list[Column]] = {
    "Pod": [NAME, ("Ready", _ready_containers), ("Status", _pod_status), ("Restarts", _restarts), AGE],
    "Node": [NAME, ("Status", _node_status), ("Roles", lambda o: "<none>"), AGE,
             ("Version", lambda o: _get(o, "status.nodeInfo.kubeletVersion", ""))],
    "Namespace": [NAME, ("Status", lambda o: _get(o, "status.phase", "Active")), AGE],
    "ConfigMap": [NAME, ("Data", lambda o: len(_get(o, "data", {})) + len(_get(o, "binaryData", {}))), AGE],
    "Service": [NAME, ("Type", lambda o: _get(o, "spec.type", "ClusterIP")),
                ("Cluster-IP", lambda o: _get(o, "spec.clusterIP", "<none>")), ("External-IP", lambda o: "<none>"),
                ("Port(s)", _ports), AGE],
    "Event": [("Last Seen", lambda o: _get(o, "lastTimestamp") or ""), ("Type", lambda o: _get(o, "type", "")),
              ("Reason", lambda o: _get(o, "reason", "")),
              ("Object", lambda o: f"{_get(o, 'involvedObject.kind', '').lower()}/"
                                   f"{_get(o, 'involvedObject.name', '')}"),
              ("Message", lambda o: _get(o, "message", ""))],
    "Deployment": [NAME, ("Ready", _replicas_ready), ("Up-to-date", lambda o: _get(o, "status.updatedReplicas", 0)),
                   ("Available", lambda o: _get(o, "status.availableReplicas", 0)), AGE],
    "StatefulSet": [NAME, ("Ready", _replicas_ready), AGE],
    "ReplicaSet": [NAME, ("Desired", lambda o: _get(o, "spec.replicas", 1)),
                   ("Current", lambda o: _get(o, "status.replicas", 0)),
                   ("Ready", lambda o: _get(o, "status.readyReplicas", 0)), AGE],
    "Job": [NAME, ("Completions", lambda o: f"{_get(o, 'status.succeeded', 0)}/{_get(o, 'spec.completions', 1)}"),
            AGE],
    "HorizontalPodAutoscaler": [
        NAME,
        ("Reference", lambda o: f"{_get(o, 'spec.scaleTargetRef.kind')}/{_get(o, 'spec.scaleTargetRef.name')}"),
        ("Targets", _hpa_targets), ("MinPods", lambda o: _get(o, "spec.minReplicas", 1)),
        ("MaxPods", lambda o: _get(o, "spec.maxReplicas")),
        ("Replicas", lambda o: _get(o, "status.currentReplicas", 0)),
        AGE],
    # The Argo Rollouts and KEDA CRDs' additionalPrinterColumns.
    "Rollout": [NAME, ("Desired", lambda o: _get(o, "spec.replicas")),
                ("Current", lambda o: _get(o, "status.replicas")),
                ("Up-to-date", lambda o: _get(o, "status.updatedReplicas")),
                ("Available", lambda o: _get(o, "status.availableReplicas")), AGE],
    "AnalysisRun": [NAME, ("Status", lambda o: _get(o, "status.phase")), AGE],
    "ScaledObject": [NAME, ("ScaleTargetKind", lambda o: _get(o, "status.scaleTargetKind")),
                     ("ScaleTargetName", lambda o: _get(o, "spec.scaleTargetRef.name")),
                     ("Min", lambda o: _get(o, "spec.minReplicaCount")),
                     ("Max", lambda o: _get(o, "spec.maxReplicaCount")),
                     AGE],
}


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def table(kind: str, objects: list[Obj], resource_version: str, include: str = "Metadata",
          continue_token: str | None = None) -> Obj:
    columns = COLUMNS.get(kind, [NAME, AGE])
    rows = []
    for obj in objects:
        row: Obj = {"cells": [getter(obj) for _, getter in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    metadata: Obj = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [{"name": name, "type": "integer" if name in ("Restarts", "Data") else "string",
                               "format": "name" if name == "Name" else "", "description": name, "priority": 0}
                              for name, _ in columns],
        "rows": rows,
    }
