"""Argo Rollouts on Kubernetes: promote, promote --full, abort, retry and undo, exactly as ``kubectl argo rollouts``
sends them (console.sources.rollouts), from the Releases pane's keys and as ``switchboard rollout ...`` verbs.

An action may run when the Argo dashboard would offer it (``refusals``), the user's SelfSubjectAccessReview allows
the patch (``PERMISSIONS``: the status subresource for promote, abort and retry, the rollout itself for undo) and
the controller has observed the last change the console sent (pending). A refused action is greyed with the
reason. The confirm dialog names the object (kube context/namespace/rollout) and shows the exact patches; the
patch is sent off the UI loop; every attempt (sent, refused by the cluster, failed) is recorded in the gateway's
audit log as a ``kind: kubernetes`` entry, so the Audit pane shows gateway and cluster actions in one timeline.
An audit that cannot be written is a warning: the patch stands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from console import rollout_views
from console.actions.base import Action, ActionState, CliVerb, ClusterTarget, ConsoleHost, Danger, say
from console.sources.gateway import AdminError, GatewayClient, SourceDown
from console.sources.kube import Access, KubeSnapshot, Permission
from console.sources.poller import describe
from console.sources.rollouts import (
    GROUP,
    PLURAL,
    VERSION,
    NothingToDo,
    Plan,
    apply,
    plan_abort,
    plan_promote,
    plan_promote_full,
    plan_retry,
    plan_undo,
    refusals,
)
from services.admin_api import ExternalOutcome

Obj = dict[str, Any]
NOTICE_S = 20
STATUS_PATCH = Permission("patch", GROUP, PLURAL, "status")
SPEC_PATCH = Permission("patch", GROUP, PLURAL)
# promote may also unpause the spec; the status patch is what it needs first (as the dashboard asks)
PERMISSIONS: dict[str, Permission] = {"promote": STATUS_PATCH, "promote-full": STATUS_PATCH, "abort": STATUS_PATCH,
                                      "retry": STATUS_PATCH, "undo": SPEC_PATCH}
CHECKING = "checking access (SelfSubjectAccessReview)"
PENDING = "pending: the controller has not observed the last change yet"
NO_ROLLOUT = "select an Argo rollout in the Releases pane"


def plan_for(action: str, rollout: Obj, replicasets: Sequence[Obj], to_revision: int = 0) -> Plan:
    """The plugin's patches for ``action``; raises NothingToDo."""
    if action == "undo":
        return plan_undo(rollout, list(replicasets), to_revision)
    builders: dict[str, Callable[[Obj], Plan]] = {"promote": plan_promote, "promote-full": plan_promote_full,
                                                  "abort": plan_abort, "retry": plan_retry}
    return builders[action](rollout)


def target_name(kube_context: str, rollout: Obj) -> str:
    """``<kube context>/<namespace>/rollouts/<name>``: the audit entry's target and the dialog's first line."""
    meta = rollout.get("metadata") or {}
    return f"{kube_context}/{meta.get('namespace') or ''}/rollouts/{meta.get('name') or ''}"


# ---- sending, and the audit entry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    outcome: ExternalOutcome  # ok, refused (the cluster said 401/403), failed
    detail: list[str]  # the requests sent (ok) or attempted
    problem: str = ""  # why not, as the cluster said it
    reachable: bool = True  # False: no answer from the cluster


def _api_message(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {exc.status}: {message or exc.reason}"


async def send(api: client.ApiClient | None, plan: Plan) -> Sent:
    """``apply`` on a worker thread (the official client blocks); what went wrong is an outcome, not an exception."""
    if api is None:
        return Sent("failed", plan.describe(), "not connected to the cluster", reachable=False)
    try:
        return Sent("ok", await asyncio.to_thread(apply, api, plan))
    except ApiException as exc:
        outcome: ExternalOutcome = "refused" if exc.status in (401, 403) else "failed"
        return Sent(outcome, plan.describe(), _api_message(exc), reachable=exc.status is not None and exc.status > 0)
    except urllib3.exceptions.HTTPError as exc:
        return Sent("failed", plan.describe(), f"cannot reach the cluster: {describe(exc)}", reachable=False)


async def record(gateway: GatewayClient, target: str, plan: Plan, reason: str, sent: Sent) -> str | None:
    """Writes the attempt to the gateway's audit log; returns a warning when that failed (the patch stands)."""
    detail = sent.detail + ([f"error: {sent.problem}"] if sent.problem else [])
    try:
        await gateway.record_external("kubernetes", f"rollout.{plan.action}", target, reason, detail, sent.outcome)
    except SourceDown as exc:
        return f"not written to the gateway's audit log: {exc}"
    except AdminError as exc:
        return f"not written to the gateway's audit log: refused ({exc.status}): {exc.message}"
    return None


# ---- the console's state: access answers and pending marks ---------------------------------------------------------


@dataclass
class RolloutDesk:
    """Per app: the access review's answers for the cluster shown, and what was sent and not yet observed."""

    access: dict[str, Access] | None = None
    asked_for: str | None = None  # the kube context the answers are for
    marks: dict[str, rollout_views.PendingMark] = field(default_factory=dict)

    def needs_review(self, snapshot: KubeSnapshot | None) -> bool:
        """On the first snapshot of a cluster, and again when the kube context changes: forgets the old answers
        (the actions read "checking access" until ``review`` answers)."""
        if snapshot is None or snapshot.context == self.asked_for:
            return False
        self.asked_for, self.access = snapshot.context, None
        return True

    async def review(self, kube: Any, context: str, then: Callable[[], None]) -> None:
        """Asks the cluster (SelfSubjectAccessReviews, off the UI loop) which actions this user may take."""
        answers = await kube.access(PERMISSIONS)
        if self.asked_for == context:
            self.access = answers
        then()

    def rows(self, snapshot: KubeSnapshot | None) -> list[rollout_views.RolloutRow]:
        if snapshot is None:
            return []
        found = rollout_views.rows(snapshot.objects("rollouts"), snapshot.objects("analysisruns"),
                                   snapshot.objects("replicasets"), self.marks)
        for item in found:  # a settled mark is forgotten
            if not item.pending:
                self.marks.pop(item.key, None)
        return found

    def blocked(self, rollout: Obj) -> tuple[tuple[str, str], ...]:
        """(action, why not) for each action that may not run on ``rollout`` now: access first, then Argo's rules."""
        rules = refusals(rollout)
        out = []
        for action in PERMISSIONS:
            answer = None if self.access is None else self.access.get(action)
            why = CHECKING if answer is None else (None if answer.allowed else answer.reason)
            why = why or rules.get(action)
            if why:
                out.append((action, why))
        return tuple(out)

    def state_fields(self, rollout: Obj | None, snapshot: KubeSnapshot | None) -> dict[str, Any]:
        """The ActionState fields for the selected rollout (none selected: the defaults)."""
        if rollout is None:
            return {}
        meta = rollout.get("metadata") or {}
        key = rollout_views.rollout_key(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        view = rollout_views.row(rollout, [], [], self.marks.get(key))  # phase and pending need no runs or sets
        return {"rollout_phase": view.phase, "rollout_aborted": view.aborted, "rollout_pending": view.pending,
                "rollout_refusals": self.blocked(rollout)}


def find_rollout(snapshot: KubeSnapshot | None, key: str | None) -> Obj | None:
    """The Rollout a Releases row's key names (``rollout:<namespace>/<name>``), looked up, not searched: the
    key bar asks for every binding on every refresh."""
    if snapshot is None or not key or not key.startswith("rollout:") or "rollouts" not in snapshot.kinds:
        return None
    namespace, _, name = key.removeprefix("rollout:").partition("/")
    return snapshot.kinds["rollouts"].objects.get((namespace, name))


# ---- preconditions -----------------------------------------------------------------------------------------------


def _precondition(action: str) -> Callable[[ActionState], str | None]:
    def check(state: ActionState) -> str | None:
        if state.rollout_phase is None:
            return NO_ROLLOUT
        if state.rollout_pending:
            return PENDING
        return dict(state.rollout_refusals).get(action)

    return check


# ---- the console's flow --------------------------------------------------------------------------------------------


def _confirm(host: ConsoleHost, entry: Action, action: str) -> None:
    picked = host.selected_rollout()
    if picked is None:
        return
    rollout, snapshot = picked
    try:
        plan = plan_for(action, rollout, snapshot.objects("replicasets"))
    except NothingToDo as exc:
        host.notify(f"{exc}: nothing sent", title=entry.description, severity="warning")
        return
    target = target_name(snapshot.context, rollout)
    change = "\n".join([f"{target}: {plan.summary}", *plan.describe()])
    kube, desk, gateway = host.kube, host.rollouts, host.gateway

    def confirmed(reason: str | None) -> None:
        if reason is None:
            host.notify("cancelled: nothing changed", title=entry.description)
            return
        host.run_write(_write(host, kube, desk, gateway, plan, rollout, target, reason, entry))

    warning = "Traffic goes back to stable; the canary is scaled down." if plan.action == "abort" else ""
    host.ask_confirmation(entry.description, change, entry.danger, plan.name, confirmed, warning)


async def _write(host: ConsoleHost, kube: Any, desk: RolloutDesk, gateway: GatewayClient, plan: Plan, rollout: Obj,
                 target: str, reason: str, entry: Action) -> None:
    sent = await send(getattr(kube, "api", None), plan)
    if sent.outcome == "ok":
        desk.marks[rollout_views.rollout_key(plan.namespace, plan.name)] = rollout_views.mark(
            plan.action, rollout, spec_patched=plan.spec is not None)
        host.notify(f"{target}: {plan.summary}", title="Sent: pending until the controller observes it")
    else:
        title = "Refused by the cluster: nothing changed" if sent.outcome == "refused" else "Failed"
        host.notify(f"{target}: {sent.problem}", title=title, severity="error", timeout=NOTICE_S)
    warning = await record(gateway, target, plan, reason, sent)
    if warning:
        host.notify(warning, title="Audit", severity="warning", timeout=NOTICE_S)


def _perform(action: str) -> Callable[[ConsoleHost], None]:
    def perform(host: ConsoleHost) -> None:
        _confirm(host, ENTRIES[action], action)

    return perform


# ---- the CLI verbs ------------------------------------------------------------------------------------------------


def _read(api: client.ApiClient, namespace: str, name: str, with_replicasets: bool) -> tuple[Obj, list[Obj]]:
    rollout = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    replicasets: list[Obj] = []
    if with_replicasets:
        answer = client.AppsV1Api(api).list_namespaced_replica_set(namespace, _preload_content=False)
        replicasets = json.loads(answer.data).get("items") or []
    return rollout, replicasets


def _arguments(action: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", metavar="NAME", help="the Rollout's name")
        parser.add_argument("--namespace", "-n", help="default: the context's namespace, else 'default'")
        if action == "promote":
            parser.add_argument("--full", action="store_true", help="skip every remaining step and analysis")
        if action == "undo":
            parser.add_argument("--to-revision", type=int, default=0, metavar="N",
                                help="the revision to go back to (default: the previous one)")

    return add


def _cli(verb: str) -> CliVerb:
    async def run(args: argparse.Namespace, gateway: GatewayClient) -> int:
        cluster: ClusterTarget = args.cluster
        action = "promote-full" if verb == "promote" and args.full else verb
        namespace = args.namespace or cluster.namespace or "default"
        try:
            rollout, replicasets = await asyncio.to_thread(_read, cluster.api, namespace, args.name, action == "undo")
        except ApiException as exc:
            what = "no such rollout" if exc.status == 404 else _api_message(exc)
            say(f"switchboard: rollout {namespace}/{args.name} in {cluster.context}: {what}; nothing sent", err=True)
            return 1
        except urllib3.exceptions.HTTPError as exc:
            say(f"switchboard: cannot reach the cluster of {cluster.context}: {describe(exc)}", err=True)
            return 2
        refusal = refusals(rollout)[action]
        if refusal:
            say(f"switchboard: cannot {action} rollout {args.name}: {refusal}; nothing sent", err=True)
            return 1
        try:
            plan = plan_for(action, rollout, replicasets, getattr(args, "to_revision", 0) or 0)
        except NothingToDo as exc:
            say(f"switchboard: {exc}; nothing sent", err=True)
            return 1
        target = target_name(cluster.context, rollout)
        say(f"{target}: {plan.summary}")
        sent = await send(cluster.api, plan)
        for line in sent.detail if sent.outcome == "ok" else []:
            say(f"sent {line}")
        warning = await record(gateway, target, plan, args.reason, sent)
        if warning:
            say(f"switchboard: warning: the patch was {'sent' if sent.outcome == 'ok' else 'not sent'}, "
                f"but it is {warning}", err=True)
        if sent.outcome == "ok":
            return 0
        say(f"switchboard: {'refused' if sent.outcome == 'refused' else 'failed'}: {sent.problem}; nothing changed",
            err=True)
        return 1 if sent.reachable else 2

    return CliVerb(f"rollout {verb}", f"{HELP[verb]} (--reason required)", run, _arguments(verb), cluster=True)


# ---- the entries --------------------------------------------------------------------------------------------------

HELP = {
    "promote": "promote an Argo Rollout to its next step, as `kubectl argo rollouts promote` (--full: skip every step)",
    "abort": "abort an Argo Rollout: traffic back to stable, the canary scaled down",
    "retry": "retry an aborted (Degraded) Argo Rollout from its first step",
    "undo": "roll an Argo Rollout back to the previous revision (or --to-revision N)",
}


def _entry(action: str, description: str, key: str, label: str, danger: Danger = Danger.WRITE,
           cli: bool = True) -> Action:
    return Action(f"rollout_{action.replace('-', '_')}", description, key=key, label=label, danger=danger,
                  precondition=_precondition(action), perform=_perform(action), cli=_cli(action) if cli else None)


# Keys of their own (a key runs one action): O promote, L full, X abort, T retry, U undo; greyed unless an Argo
# rollout is selected, and the key bar drops greyed hints first when it is narrow.
ENTRIES: dict[str, Action] = {
    "promote": _entry("promote", "Promote the selected Argo rollout to its next step", "O", "Promote"),
    "promote-full": _entry("promote-full", "Promote the selected Argo rollout fully (skips steps and analysis)",
                           "L", "Full", cli=False),
    "abort": _entry("abort", "Abort the selected Argo rollout (traffic back to stable)", "X", "Abort",
                    Danger.DESTRUCTIVE),
    "retry": _entry("retry", "Retry the selected aborted Argo rollout", "T", "Retry"),
    "undo": _entry("undo", "Undo the selected Argo rollout to its previous revision", "U", "Undo"),
}

ACTIONS: Sequence[Action] = tuple(ENTRIES.values())
