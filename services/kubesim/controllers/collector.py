"""The garbage collector's part: an object whose controlling owner is gone is deleted (background cascading
deletion), so deleting a Deployment takes its ReplicaSets and then their pods with it."""

from __future__ import annotations

from services.kubesim.controllers.base import Context

OWNER_KINDS = {"Deployment", "ReplicaSet", "StatefulSet", "Job", "ScaledObject", "Rollout", "AnalysisRun"}


class Collector:
    def __init__(self, context: Context) -> None:
        self.context = context

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        owners = (kinds.deployments, kinds.replicasets, kinds.statefulsets, kinds.jobs, kinds.scaledobjects,
                  kinds.rollouts, kinds.analysisruns)
        alive = {obj["metadata"]["uid"] for kind in owners for obj in store.list(kind, None, lambda _: True)}
        for kind in (kinds.replicasets, kinds.pods, kinds.hpas, kinds.analysisruns, kinds.jobs):
            for obj in store.list(kind, None, lambda _: True):
                refs = [ref for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("controller")]
                if refs and refs[0].get("kind") in OWNER_KINDS \
                        and refs[0].get("uid") not in alive:
                    store.delete(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
