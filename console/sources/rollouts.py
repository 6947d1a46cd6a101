"""Argo Rollouts actions exactly as `kubectl argo rollouts` sends them (pkg/kubectl-argo-rollouts/cmd/*).

``plan_*`` are pure: given the Rollout (and, for undo, its ReplicaSets) as the server's JSON, they return the
patches the plugin would send, or say why it would send nothing. ``apply`` sends a plan through the official
client: the status patch to the ``/status`` subresource first (a JSON merge patch), falling back to the main
resource with the unified patch when ``/status`` answers 404 (a CRD without the status subresource), then the
spec patch. Undo is a JSON patch (``application/json-patch+json``) replacing ``/spec/template``.

``refusals`` holds the Argo dashboard's preconditions (rollout-actions.tsx), with the one the plugin lacks and
the community asked for: promote is refused while aborted (the patch would succeed but traffic would not move).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

Obj = dict[str, Any]
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
REVISION_ANNOTATION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"
ACTIONS = ("promote", "promote-full", "abort", "retry", "undo")


class NothingToDo(Exception):
    """The plugin would send nothing (e.g. undo to the template already running); the message says why."""


@dataclass(frozen=True)
class Patch:
    subresource: str  # "status" or "" (the main resource)
    content_type: str
    body: Any

    def describe(self, namespace: str, name: str) -> str:
        """``PATCH rollouts/ai-api/status (merge): {...}``: what the confirm dialog and the audit entry show."""
        path = f"rollouts/{name}" + (f"/{self.subresource}" if self.subresource else "")
        kind = "json-patch" if self.content_type == JSON_PATCH else "merge"
        return f"PATCH {namespace}/{path} ({kind}): {json.dumps(self.body, sort_keys=True)}"


@dataclass(frozen=True)
class Plan:
    action: str
    namespace: str
    name: str
    status: Patch | None = None  # sent first, to /status
    unified: Patch | None = None  # sent instead of status + spec when /status is 404
    spec: Patch | None = None  # sent after the status patch
    summary: str = ""  # one line for the confirm dialog ("undo to revision 3")

    @property
    def patches(self) -> list[Patch]:
        """What is sent when ``/status`` exists, in order."""
        return [p for p in (self.status, self.spec) if p is not None]

    def describe(self) -> list[str]:
        return [patch.describe(self.namespace, self.name) for patch in self.patches]


def _meta(rollout: Obj) -> tuple[str, str]:
    meta = rollout.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _steps(rollout: Obj) -> list[Obj]:
    return ((rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []


def _is_canary(rollout: Obj) -> bool:
    return "canary" in ((rollout.get("spec") or {}).get("strategy") or {})


def plan_promote(rollout: Obj) -> Plan:
    """promote (no flags): unpause the spec, and one status change by the plugin's rules."""
    namespace, name = _meta(rollout)
    spec, status = rollout.get("spec") or {}, rollout.get("status") or {}
    spec_patch = Patch("", MERGE_PATCH, {"spec": {"paused": False}}) if spec.get("paused") else None
    index = int(status.get("currentStepIndex") or 0)
    next_index = min(index + 1, len(_steps(rollout)))
    analysis = ((status.get("canary") or {}).get("currentStepAnalysisRunStatus") or {}).get("status")
    pauses = bool(status.get("pauseConditions"))
    if _is_canary(rollout) and analysis == "Inconclusive" and pauses and status.get("controllerPause"):
        change: Obj = {"pauseConditions": None, "controllerPause": False, "currentStepIndex": next_index}
        summary = f"promote past the inconclusive analysis to step {next_index}"
    elif pauses:
        change = {"pauseConditions": None}
        summary = "promote: clear the pause"
    elif _is_canary(rollout):
        change = {"pauseConditions": None, "currentStepIndex": next_index}
        summary = f"promote to step {next_index}"
    else:
        change = {}
        summary = "promote: unpause"
    status_patch = Patch("status", MERGE_PATCH, {"status": change}) if change else None
    unified_body: Obj = {**({"spec": {"paused": False}} if spec_patch else {}),
                         **({"status": change} if change else {})}
    return Plan("promote", namespace, name, status_patch, Patch("", MERGE_PATCH, unified_body), spec_patch, summary)


def plan_promote_full(rollout: Obj) -> Plan:
    namespace, name = _meta(rollout)
    spec, status = rollout.get("spec") or {}, rollout.get("status") or {}
    spec_patch = Patch("", MERGE_PATCH, {"spec": {"paused": False}}) if spec.get("paused") else None
    updating = status.get("currentPodHash") != status.get("stableRS")
    status_patch = Patch("status", MERGE_PATCH, {"status": {"promoteFull": True}}) if updating else None
    if spec_patch is None and status_patch is None:
        raise NothingToDo(f"rollout {name} is fully promoted already")
    unified = Patch("", MERGE_PATCH, {"spec": {"paused": False}, "status": {"promoteFull": True}})
    return Plan("promote-full", namespace, name, status_patch, unified, spec_patch, "promote fully: skip every step")


def plan_abort(rollout: Obj) -> Plan:
    namespace, name = _meta(rollout)
    body = {"status": {"abort": True}}
    return Plan("abort", namespace, name, Patch("status", MERGE_PATCH, body), Patch("", MERGE_PATCH, body),
                summary="abort: traffic back to stable, the canary scaled down")


def plan_retry(rollout: Obj) -> Plan:
    namespace, name = _meta(rollout)
    body = {"status": {"abort": False}}
    return Plan("retry", namespace, name, Patch("status", MERGE_PATCH, body), Patch("", MERGE_PATCH, body),
                summary="retry: start the steps again")


def revision(replicaset: Obj) -> int | None:
    raw = ((replicaset.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def owned_replicasets(rollout: Obj, replicasets: list[Obj]) -> list[Obj]:
    """The ReplicaSets whose controller is this Rollout, newest revision first."""
    uid = (rollout.get("metadata") or {}).get("uid")
    owned = [rs for rs in replicasets
             if any(ref.get("controller") and ref.get("uid") == uid
                    for ref in (rs.get("metadata") or {}).get("ownerReferences") or [])
             and revision(rs) is not None]
    return sorted(owned, key=lambda rs: revision(rs) or 0, reverse=True)


def _without_hash(template: Obj) -> Obj:
    template = copy.deepcopy(template)
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return template


def plan_undo(rollout: Obj, replicasets: list[Obj], to_revision: int = 0) -> Plan:
    """undo [--to-revision N]: the second-newest revision by default."""
    namespace, name = _meta(rollout)
    history = owned_replicasets(rollout, replicasets)
    if to_revision == 0:
        if len(history) < 2:
            raise NothingToDo(f"rollout {name} has no previous revision to go back to")
        chosen = history[1]
    else:
        found = [rs for rs in history if revision(rs) == to_revision]
        if not found:
            raise NothingToDo(f"unable to find specified revision {to_revision} in history")
        chosen = found[0]
    number = revision(chosen)
    template = _without_hash((chosen.get("spec") or {}).get("template") or {})
    if _without_hash((rollout.get("spec") or {}).get("template") or {}) == template:
        raise NothingToDo(f"skipped rollback (current template already matches revision {number})")
    patch = Patch("", JSON_PATCH, [{"op": "replace", "path": "/spec/template", "value": template}])
    return Plan("undo", namespace, name, spec=patch, summary=f"undo to revision {number}")


def refusals(rollout: Obj) -> dict[str, str | None]:
    """Why each action may not run now (None: it may), by the Argo dashboard's rules."""
    status = rollout.get("status") or {}
    phase = status.get("phase") or "Progressing"
    moving = phase in ("Progressing", "Paused")
    aborted = bool(status.get("abort"))
    while_moving = None if moving else f"only while Progressing or Paused (it is {phase})"
    return {
        "promote": "aborted: retry it first" if aborted and moving else while_moving,
        "promote-full": "aborted: retry it first" if aborted and moving else while_moving,
        "abort": while_moving,
        "retry": None if phase == "Degraded" else f"only when Degraded (it is {phase})",
        "undo": None,
    }


def apply(api: client.ApiClient, plan: Plan) -> list[str]:
    """Sends ``plan`` as the plugin does; returns what was sent, for the audit entry. Raises ApiException."""
    custom = client.CustomObjectsApi(api)
    sent: list[str] = []
    spec_patch = plan.spec
    if plan.status is not None:
        try:
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, plan.namespace, PLURAL, plan.name,
                                                         plan.status.body)
            sent.append(plan.status.describe(plan.namespace, plan.name))
        except ApiException as exc:
            if exc.status != 404 or plan.unified is None:
                raise
            spec_patch = plan.unified  # an old CRD without /status: the unified patch to the main resource
    if spec_patch is not None:
        custom.patch_namespaced_custom_object(GROUP, VERSION, plan.namespace, PLURAL, plan.name, spec_patch.body,
                                              _content_type=spec_patch.content_type)
        sent.append(spec_patch.describe(plan.namespace, plan.name))
    return sent
