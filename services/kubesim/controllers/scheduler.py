"""The scheduler: binds each unbound pod to the first node (by name) whose labels match its nodeSelector and whose
allocatable cpu, memory and ``nvidia.com/gpu`` still hold its requests; a pod that fits nowhere stays Pending with
PodScheduled=False and a FailedScheduling Event."""

from __future__ import annotations

import logging
from decimal import Decimal

from services.kubesim.controllers.base import Context, is_terminal, set_condition
from services.kubesim.store import Obj
from services.quantity import parse_exact as parse_quantity

LOG = logging.getLogger(__name__)
RESOURCES = ("cpu", "memory", "nvidia.com/gpu")


def requests(pod: Obj) -> dict[str, Decimal]:
    """The pod's summed container requests (a limit with no request counts as the request, as on a real cluster)."""
    total = dict.fromkeys(RESOURCES, Decimal(0))
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name in RESOURCES:
            if name in wanted:
                total[name] += parse_quantity(wanted[name])
    return total


def free(node: Obj, bound: list[Obj]) -> dict[str, Decimal]:
    allocatable = (node.get("status") or {}).get("allocatable") or (node.get("status") or {}).get("capacity") or {}
    room = {name: parse_quantity(allocatable.get(name, 0)) for name in RESOURCES}
    for pod in bound:
        for name, amount in requests(pod).items():
            room[name] -= amount
    return room


def fits(wanted: dict[str, Decimal], selector: dict[str, str], node: Obj, room: dict[str, Decimal]) -> str | None:
    """None when a pod asking ``wanted`` with ``selector`` fits in the node's ``room``, else why not (the
    FailedScheduling wording)."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        return "node(s) didn't match Pod's node affinity/selector"
    if (node.get("spec") or {}).get("unschedulable"):
        return "node(s) were unschedulable"
    for name, amount in wanted.items():
        if amount > room[name]:
            return f"Insufficient {name}"
    return None


class Scheduler:
    def __init__(self, context: Context) -> None:
        self.context = context

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        pods = store.list(kinds.pods, None, lambda _: True)
        pending = [pod for pod in pods if not (pod.get("spec") or {}).get("nodeName") and not is_terminal(pod)]
        if not pending:
            return
        nodes = store.list(kinds.nodes, None, lambda _: True)
        bound: dict[str, list[Obj]] = {node["metadata"]["name"]: [] for node in nodes}
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name in bound and not is_terminal(pod):
                bound[node_name].append(pod)
        rooms: dict[str, dict[str, Decimal]] = {}
        for node in nodes:  # each node's room once a pass, lowered as pods are bound to it
            try:
                rooms[node["metadata"]["name"]] = free(node, bound[node["metadata"]["name"]])
            except ValueError as exc:  # a malformed quantity on the node or a pod bound there: the node takes none
                LOG.warning("kubesim cannot read node %s's room: %s", node["metadata"]["name"], exc)
        for pod in pending:
            try:
                wanted = requests(pod)
            except ValueError as exc:  # a malformed quantity on this pod: skip the pod, not the pass
                LOG.warning("kubesim cannot schedule pod %s: %s", pod["metadata"]["name"], exc)
                continue
            selector = (pod.get("spec") or {}).get("nodeSelector") or {}
            reasons = {node["metadata"]["name"]: fits(wanted, selector, node, rooms[node["metadata"]["name"]])
                       if node["metadata"]["name"] in rooms else "node(s) had malformed capacity" for node in nodes}
            chosen = next((name for name, reason in reasons.items() if reason is None), None)
            if chosen is None:
                self._unschedulable(pod, len(nodes), list(reasons.values()))
                continue
            for name, amount in wanted.items():
                rooms[chosen][name] -= amount
            self._bind(pod, chosen)

    def _bind(self, pod: Obj, node: str) -> None:
        store, kinds, meta = self.context.store, self.context.kinds, pod["metadata"]
        pod["spec"]["nodeName"] = node
        updated = store.replace(kinds.pods, meta["namespace"], meta["name"], pod)
        status = updated.get("status") or {}
        status.setdefault("phase", "Pending")
        status["conditions"] = set_condition(status.get("conditions") or [], "PodScheduled", "True", "", "",
                                             self.context.timestamp())
        updated["status"] = status
        store.replace(kinds.pods, meta["namespace"], meta["name"], updated, "status")
        self.context.event(updated, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")

    def _unschedulable(self, pod: Obj, node_count: int, reasons: list[str | None]) -> None:
        counts: dict[str, int] = {}
        for reason in reasons:
            if reason:
                counts[reason] = counts.get(reason, 0) + 1
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
        message = f"0/{node_count} nodes are available" + (f": {detail}." if detail else ".")
        status = pod.get("status") or {}
        before = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if before and before.get("status") == "False" and before.get("message") == message:
            return  # already reported; the event is only repeated when the reason changes
        status["phase"] = "Pending"
        status["conditions"] = set_condition(status.get("conditions") or [], "PodScheduled", "False", "Unschedulable",
                                             message, self.context.timestamp())
        pod["status"] = status
        meta = pod["metadata"]
        updated = self.context.store.replace(self.context.kinds.pods, meta["namespace"], meta["name"], pod, "status")
        self.context.event(updated, "FailedScheduling", message, "Warning")
