"""Deployments -> ReplicaSets -> Pods and StatefulSets -> Pods.

A Deployment owns one ReplicaSet per pod-template hash (``<deployment>-<hash>``, labelled pod-template-hash).
A template change rolls as the real controller does in outline: RollingUpdate grows the new ReplicaSet while the
total stays within spec.replicas + maxSurge and shrinks the old ones (oldest first, their unavailable pods first)
while the available count stays at least spec.replicas - maxUnavailable (both default to 25%, surge rounded up and
unavailable down); Recreate scales the old ones to 0 and starts the new one once their pods are gone.
A StatefulSet creates ``<name>-0`` .. ``<name>-N-1`` in order, each once the one before it is Running and Ready
(OrderedReady; all at once with podManagementPolicy Parallel), and removes the highest ordinal first."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

from services.kubesim.controllers.base import (
    Context,
    by_controller,
    is_ready,
    is_terminal,
    owner_reference,
    pod_from_template,
    set_condition,
    template_hash,
)
from services.kubesim.store import Obj

HASH_LABEL = "pod-template-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"


def _replicas(obj: Obj) -> int:
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def _available(replicaset: Obj) -> int:
    return int((replicaset.get("status") or {}).get("availableReplicas") or 0)


def _rolling_bound(deployment: Obj, field: str, replicas: int, rounding: Callable[[float], int]) -> int:
    """strategy.rollingUpdate.maxSurge or maxUnavailable as a pod count: 25% by default, a percentage rounded
    as the real controller rounds it (surge up, unavailable down)."""
    rolling = ((deployment.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    value = rolling.get(field, "25%")
    if isinstance(value, str) and value.endswith("%"):
        return rounding(replicas * int(value[:-1]) / 100)
    return int(value)


def _max_unavailable(deployment: Obj, replicas: int) -> int:
    return _rolling_bound(deployment, "maxUnavailable", replicas, math.floor)


class ReplicaSets:
    """Keeps each ReplicaSet's live pods at spec.replicas and its status current."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        pods = by_controller(store.list(kinds.pods, None, lambda _: True))
        for replicaset in store.list(kinds.replicasets, None, lambda _: True):
            mine = [pod for pod in pods.get(replicaset["metadata"]["uid"], []) if not is_terminal(pod)]
            self._scale(replicaset, mine)

    def _scale(self, replicaset: Obj, pods: list[Obj]) -> None:
        store, kinds, meta = self.context.store, self.context.kinds, replicaset["metadata"]
        wanted = _replicas(replicaset)
        template = (replicaset.get("spec") or {}).get("template") or {}
        for _ in range(wanted - len(pods)):
            pods.append(store.create(kinds.pods, meta["namespace"], pod_from_template(template, replicaset, {})))
            self.context.event(replicaset, "SuccessfulCreate", f"Created pod: {pods[-1]['metadata']['name']}")
        if len(pods) > wanted:
            doomed = sorted(pods, key=lambda pod: (is_ready(pod), pod["metadata"]["creationTimestamp"]))
            for pod in doomed[: len(pods) - wanted]:
                store.delete(kinds.pods, meta["namespace"], pod["metadata"]["name"])
                self.context.event(replicaset, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")
            pods = doomed[len(pods) - wanted:]
        ready = sum(is_ready(pod) for pod in pods)
        labels = (template.get("metadata") or {}).get("labels") or {}
        fully_labeled = sum(all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
                            for pod in pods)
        status = {"replicas": len(pods), "fullyLabeledReplicas": fully_labeled, "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": meta["generation"]}
        if replicaset.get("status") != status:
            store.replace(kinds.replicasets, meta["namespace"], meta["name"], {**replicaset, "status": status},
                          "status")


class Deployments:
    def __init__(self, context: Context) -> None:
        self.context = context

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        replicasets = by_controller(store.list(kinds.replicasets, None, lambda _: True))
        for deployment in store.list(kinds.deployments, None, lambda _: True):
            self._sync(deployment, replicasets.get(deployment["metadata"]["uid"], []))

    def _sync(self, deployment: Obj, owned: list[Obj]) -> None:
        store, kinds, meta = self.context.store, self.context.kinds, deployment["metadata"]
        spec = deployment.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        digest = template_hash(template)
        wanted = _replicas(deployment)
        new = next((rs for rs in owned if (rs["metadata"].get("labels") or {}).get(HASH_LABEL) == digest), None)
        if new is None:
            new = store.create(kinds.replicasets, meta["namespace"], self._replicaset(deployment, template, digest))
        old = [rs for rs in owned if rs["metadata"]["uid"] != new["metadata"]["uid"]]
        old = sorted(old, key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"]))
        if not any(_replicas(rs) for rs in old):
            new = self._resize(deployment, new, wanted)
        elif (spec.get("strategy") or {}).get("type") == "Recreate":
            for replicaset in old:
                self._resize(deployment, replicaset, 0)
        else:
            new = self._roll(deployment, new, old, wanted)
        self._status(deployment, new, old)

    def _roll(self, deployment: Obj, new: Obj, old: list[Obj], wanted: int) -> Obj:
        surge = _rolling_bound(deployment, "maxSurge", wanted, math.ceil)
        unavailable = _rolling_bound(deployment, "maxUnavailable", wanted, math.floor)
        if surge == 0 and unavailable == 0:
            unavailable = 1  # the API refuses both at 0; be safe with objects stored before validation
        total = sum(_replicas(rs) for rs in [new, *old])
        grow = max(0, wanted + surge - total)
        new = self._resize(deployment, new, min(wanted, _replicas(new) + grow))
        # As the real controller: unhealthy old pods go first, within what the new set's unready pods leave room
        # for; then healthy ones while enough stay available.
        minimum = wanted - unavailable
        cleanup = sum(_replicas(rs) for rs in [new, *old]) - minimum - max(0, _replicas(new) - _available(new))
        sizes = {rs["metadata"]["uid"]: _replicas(rs) for rs in old}
        for replicaset in old:
            uid = replicaset["metadata"]["uid"]
            cut = max(0, min(cleanup, sizes[uid] - _available(replicaset)))
            sizes[uid] -= cut
            cleanup -= cut
        removable = sum(_available(rs) for rs in [new, *old]) - minimum
        for replicaset in old:
            uid = replicaset["metadata"]["uid"]
            cut = max(0, min(removable, sizes[uid]))
            sizes[uid] -= cut
            removable -= cut
            self._resize(deployment, replicaset, sizes[uid])
        return new

    def _replicaset(self, deployment: Obj, template: Obj, digest: str) -> Obj:
        spec = deployment.get("spec") or {}
        labels = {**((template.get("metadata") or {}).get("labels") or {}), HASH_LABEL: digest}
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: digest}
        name = deployment["metadata"]["name"]
        return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{name}-{digest}", "labels": labels,
                             "annotations": {"deployment.kubernetes.io/desired-replicas": str(_replicas(deployment))},
                             "ownerReferences": [owner_reference(deployment)]},
                "spec": {"replicas": 0, "selector": selector, "template": template,
                         "minReadySeconds": spec.get("minReadySeconds", 0)}}

    def _resize(self, deployment: Obj, replicaset: Obj, replicas: int) -> Obj:
        before = _replicas(replicaset)
        if before == replicas:
            return replicaset
        meta = replicaset["metadata"]
        replicaset = self.context.store.get(self.context.kinds.replicasets, meta["namespace"], meta["name"])
        replicaset["spec"]["replicas"] = replicas
        resized = self.context.store.replace(self.context.kinds.replicasets, meta["namespace"], meta["name"],
                                             replicaset)
        direction = "up" if replicas > before else "down"
        self.context.event(deployment, "ScalingReplicaSet",
                           f"Scaled {direction} replica set {meta['name']} from {before} to {replicas}")
        return resized

    def _status(self, deployment: Obj, new: Obj, old: list[Obj]) -> None:
        def count(field: str, sets: list[Obj]) -> int:
            return sum(int((rs.get("status") or {}).get(field) or 0) for rs in sets)

        meta, wanted = deployment["metadata"], _replicas(deployment)
        every = [new, *old]
        replicas, available = count("replicas", every), count("availableReplicas", every)
        updated = count("replicas", [new])
        stamp = self.context.timestamp()
        status = deployment.get("status") or {}
        conditions = status.get("conditions") or []
        if available >= wanted - _max_unavailable(deployment, wanted):
            conditions = set_condition(conditions, "Available", "True", "MinimumReplicasAvailable",
                                       "Deployment has minimum availability.", stamp, update_time=True)
        else:
            conditions = set_condition(conditions, "Available", "False", "MinimumReplicasUnavailable",
                                       "Deployment does not have minimum availability.", stamp, update_time=True)
        rs_name = new["metadata"]["name"]
        done = updated == wanted and count("availableReplicas", [new]) == wanted and replicas == wanted
        message = f'ReplicaSet "{rs_name}" ' + ("has successfully progressed." if done else "is progressing.")
        conditions = set_condition(conditions, "Progressing", "True",
                                   "NewReplicaSetAvailable" if done else "ReplicaSetUpdated", message, stamp,
                                   update_time=True)
        fresh = {"observedGeneration": meta["generation"], "replicas": replicas, "updatedReplicas": updated,
                 "readyReplicas": count("readyReplicas", every), "availableReplicas": available,
                 "unavailableReplicas": max(0, wanted - available), "conditions": conditions}
        if fresh != status:
            self.context.store.replace(self.context.kinds.deployments, meta["namespace"], meta["name"],
                                       {**deployment, "status": fresh}, "status")


class StatefulSets:
    def __init__(self, context: Context) -> None:
        self.context = context

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        pods = by_controller(store.list(kinds.pods, None, lambda _: True))
        for statefulset in store.list(kinds.statefulsets, None, lambda _: True):
            mine = pods.get(statefulset["metadata"]["uid"], [])
            self._sync(statefulset, {pod["metadata"]["name"]: pod for pod in mine})

    def _sync(self, statefulset: Obj, pods: dict[str, Obj]) -> None:
        store, kinds, meta = self.context.store, self.context.kinds, statefulset["metadata"]
        name, wanted = meta["name"], _replicas(statefulset)
        spec = statefulset.get("spec") or {}
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        for ordinal in range(wanted):
            pod_name = f"{name}-{ordinal}"
            if pod_name not in pods:
                pod = pod_from_template(spec.get("template") or {}, statefulset, {POD_NAME_LABEL: pod_name},
                                        name=pod_name)
                pod["spec"].update(hostname=pod_name, subdomain=spec.get("serviceName", name))
                pods[pod_name] = store.create(kinds.pods, meta["namespace"], pod)
                self.context.event(statefulset, "SuccessfulCreate",
                                   f"create Pod {pod_name} in StatefulSet {name} successful")
            if ordered and not is_ready(pods[pod_name]):
                break  # OrderedReady: the next one waits until this one is Running and Ready
        extra = sorted((pod for pod_name, pod in pods.items() if _ordinal(pod_name, name) >= wanted),
                       key=lambda pod: _ordinal(pod["metadata"]["name"], name), reverse=True)
        if extra:
            store.delete(kinds.pods, meta["namespace"], extra[0]["metadata"]["name"])
            self.context.event(statefulset, "SuccessfulDelete",
                               f"delete Pod {extra[0]['metadata']['name']} in StatefulSet {name} successful")
            del pods[extra[0]["metadata"]["name"]]
        live = [pod for pod in pods.values() if not is_terminal(pod)]
        ready = sum(is_ready(pod) for pod in live)
        status = {**(statefulset.get("status") or {}), "observedGeneration": meta["generation"],
                  "replicas": len(live), "readyReplicas": ready, "currentReplicas": len(live),
                  "updatedReplicas": len(live), "availableReplicas": ready}
        if status != statefulset.get("status"):
            store.replace(kinds.statefulsets, meta["namespace"], name, {**statefulset, "status": status}, "status")


def _ordinal(pod_name: str, statefulset: str) -> int:
    tail = pod_name[len(statefulset) + 1:]
    return int(tail) if tail.isdigit() else -1
