"""The Kubernetes source: the official ``kubernetes`` client, one list-then-watch per kind.

Each kind is listed once, then watched from the list's resourceVersion (with bookmarks), so a cluster with
thousands of pods costs one open watch per kind, not a poll of everything every second. A watch that ends
is resumed from the last resourceVersion it saw; a 410 Gone (the version was compacted) relists. The client
is blocking, so each kind's loop runs on its own daemon thread and only replaces whole objects in a shared
cache; the console's loop takes a snapshot of that cache at its refresh interval (``KubeSource.snapshot``),
so a burst of events costs one redraw, not one per event.

A kind the cluster does not serve (no Argo Rollouts or KEDA installed: 404) or the user may not list (403) is
reported as absent with the reason; it does not make the whole source DOWN. A context that cannot be reached
is DOWN with the reason, like the other sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from console.sources.poller import Health, Observed, describe

log = logging.getLogger(__name__)
Obj = dict[str, Any]

WATCH_SECONDS = 240  # a real API server ends watches after 5-10 minutes; resume before that
RETRY_MIN_S, RETRY_MAX_S = 0.5, 10.0
ABSENT_RECHECK_S = 30.0  # a kind the cluster lacks is asked for again (a CRD may be installed meanwhile)


class KubeConfigError(Exception):
    """No usable kubeconfig or in-cluster configuration: names the file and context that were tried."""


@dataclass(frozen=True)
class Kind:
    """A kind the console watches: where its list lives in the API."""

    key: str  # "pods", "rollouts"
    group: str  # "" for core
    version: str
    plural: str

    def path(self, namespace: str | None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        return f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.plural}"


KINDS: tuple[Kind, ...] = (
    Kind("pods", "", "v1", "pods"),
    Kind("nodes", "", "v1", "nodes"),
    Kind("events", "", "v1", "events"),
    Kind("deployments", "apps", "v1", "deployments"),
    Kind("statefulsets", "apps", "v1", "statefulsets"),
    Kind("replicasets", "apps", "v1", "replicasets"),
    Kind("hpas", "autoscaling", "v2", "horizontalpodautoscalers"),
    Kind("rollouts", "argoproj.io", "v1alpha1", "rollouts"),
    Kind("analysisruns", "argoproj.io", "v1alpha1", "analysisruns"),
    Kind("scaledobjects", "keda.sh", "v1alpha1", "scaledobjects"),
)
CLUSTER_SCOPED = frozenset({"nodes"})
SIMULATED_HEADER = "x-switchboard-simulated"  # kubesim's mark on every answer


@dataclass(frozen=True)
class KindState:
    """One kind's part of a snapshot: its objects by (namespace, name), or why there are none."""

    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    listed: bool = False  # the first list answered
    absent: str | None = None  # the cluster does not serve this kind, or the user may not list it
    error: str | None = None  # the last failure, while retrying
    failing_since: float | None = None


@dataclass(frozen=True)
class KubeSnapshot:
    context: str
    server: str
    namespace: str | None
    kinds: dict[str, KindState]
    simulated: bool = False

    def objects(self, key: str) -> list[Obj]:
        state = self.kinds.get(key)
        return [] if state is None else [state.objects[k] for k in sorted(state.objects)]


def load_api_client(kubeconfig: str | None, context: str | None) -> tuple[client.ApiClient, str, str]:
    """The client for ``context`` in ``kubeconfig`` (default: $KUBECONFIG or ~/.kube/config), else the in-cluster
    service account. Returns (client, context name, server URL)."""
    # The client reads $KUBECONFIG once, at import; the console's may be set later (``switchboard up``).
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = context or current["name"]
        if chosen not in {c["name"] for c in contexts}:
            known = ", ".join(c["name"] for c in contexts)
            raise KubeConfigError(f"kubeconfig {kubeconfig or '(default)'} has no context '{chosen}'; known: {known}")
        api = config.new_client_from_config(config_file=kubeconfig, context=chosen)
        return api, chosen, api.configuration.host
    except (ConfigException, FileNotFoundError) as exc:
        file_error = exc
    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        raise KubeConfigError(f"no usable kubeconfig ({describe(file_error)}) and not running in a cluster") from None
    return client.ApiClient(configuration), "in-cluster", configuration.host


@dataclass(frozen=True)
class Access:
    allowed: bool
    reason: str  # why not (or the authorizer's reason when allowed), shown beside a disabled action


@dataclass(frozen=True)
class Permission:
    """What an action needs, as a SelfSubjectAccessReview's resourceAttributes."""

    verb: str
    group: str
    resource: str
    subresource: str = ""


def review_access(api: client.ApiClient, namespace: str | None,
                  wanted: dict[str, Permission]) -> dict[str, Access]:
    """One SelfSubjectAccessReview per action (blocking; run it off the UI loop)."""
    authorization = client.AuthorizationV1Api(api)
    answers: dict[str, Access] = {}
    for action, need in wanted.items():
        attributes = {"verb": need.verb, "group": need.group, "resource": need.resource}
        if need.subresource:
            attributes["subresource"] = need.subresource
        if namespace:
            attributes["namespace"] = namespace
        try:
            review = authorization.create_self_subject_access_review(
                {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                 "spec": {"resourceAttributes": attributes}})
        except ApiException as exc:
            answers[action] = Access(False, f"access review failed: HTTP {exc.status} {exc.reason}")
            continue
        except Exception as exc:
            answers[action] = Access(False, f"access review failed: {describe(exc)}")
            continue
        status = review.status
        allowed = bool(status and status.allowed)
        what = f"{need.verb} {need.resource}{'/' + need.subresource if need.subresource else ''}"
        said = status.reason if status and status.reason else ""
        reason = (said or "allowed") if allowed else f"not allowed to {what}" + (f" ({said})" if said else "")
        answers[action] = Access(allowed, reason)
    return answers


class KindWatch:
    """List, then watch, one kind on a daemon thread, keeping its objects in ``state``."""

    def __init__(self, api: client.ApiClient, kind: Kind, namespace: str | None, on_change: Callable[[], None],
                 timeout_s: float, watch_seconds: int = WATCH_SECONDS) -> None:
        self.api, self.kind, self.namespace = api, kind, None if kind.key in CLUSTER_SCOPED else namespace
        self.on_change, self.timeout_s, self.watch_seconds = on_change, timeout_s, watch_seconds
        self.state = KindState()
        self.lists = 0  # how many times the kind was listed: once, then once per 410 Gone
        self._version: str | None = None
        self._objects: dict[tuple[str, str], Obj] = {}
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"kube-{kind.key}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def _list(self) -> None:
        list_call = _watch_call(self.api, self.kind, self.namespace)
        response = list_call(_preload_content=False, _request_timeout=self.timeout_s)
        body = json.loads(response.data)
        self.lists += 1
        self._objects = {_key(obj): obj for obj in body.get("items") or []}
        self._version = str(body["metadata"]["resourceVersion"])
        self._publish(listed=True)

    def _follow(self) -> None:
        """Follows events from ``_version`` until the server ends the watch, moving ``_version`` along (bookmarks
        too). Raises ApiException(410) when the version is too old."""
        self._watch = watch.Watch(return_type="object")  # objects stay the server's JSON: no model building
        list_call = _watch_call(self.api, self.kind, self.namespace)
        for event in self._watch.stream(list_call, resource_version=self._version, allow_watch_bookmarks=True,
                                        timeout_seconds=self.watch_seconds,
                                        _request_timeout=(self.timeout_s, self.watch_seconds + self.timeout_s)):
            if self._stopped.is_set():
                break
            kind, obj = event["type"], event["raw_object"]
            self._version = str((obj.get("metadata") or {}).get("resourceVersion") or self._version)
            if kind in ("ADDED", "MODIFIED"):
                self._objects[_key(obj)] = obj
            elif kind == "DELETED":
                self._objects.pop(_key(obj), None)
            else:
                continue  # BOOKMARK: only the version moves
            self._publish()

    def _run(self) -> None:
        """The reflector's loop: a watch that ends or breaks resumes from the last version at once; a second
        failure in a row is shown and retried with backoff; only 410 Gone (or no version yet) lists again."""
        backoff, failures = RETRY_MIN_S, 0
        while not self._stopped.is_set():
            try:
                if self._version is None:
                    self._list()
                self._follow()
            except ApiException as exc:
                if exc.status == 410:
                    self._version = None
                    continue
                if exc.status in (403, 404):
                    reason = "not served by this cluster" if exc.status == 404 else "forbidden for this user"
                    self._objects, self._version = {}, None
                    self._publish(listed=True, absent=f"{self.kind.plural}.{self.kind.group or 'core'}: {reason}")
                    self._stopped.wait(ABSENT_RECHECK_S)
                    continue
                failure = f"{self.kind.plural}: HTTP {exc.status} {exc.reason}"
            except urllib3.exceptions.HTTPError as exc:  # unreachable, timed out, cut off: the same for every kind
                failure = f"cannot reach {self.api.configuration.host}: {_connection_problem(exc)}"
            except Exception as exc:  # a malformed answer
                failure = f"{self.kind.plural}: {describe(exc)}"
            else:
                backoff, failures = RETRY_MIN_S, 0
                if self.state.error:
                    self._publish()
                continue
            failures += 1
            if failures == 1:
                continue  # a dropped stream: resume from the last version at once, as client-go does
            self._publish(error=failure)
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)

    def _publish(self, listed: bool | None = None, absent: str | None = None, error: str | None = None) -> None:
        """Replaces ``state`` (read by the console's loop) as a whole; an error keeps the time failures began."""
        current = self.state
        since = (current.failing_since or time.monotonic()) if error else None
        self.state = KindState(dict(self._objects), current.listed if listed is None else listed, absent, error, since)
        self.on_change()


def _watch_call(api: client.ApiClient, kind: Kind, namespace: str | None) -> Callable[..., Any]:
    """The official client's list method for ``kind`` (what ``watch.Watch.stream`` drives)."""
    if kind.group not in ("", "apps", "autoscaling"):  # custom resources
        custom = client.CustomObjectsApi(api)

        def list_custom(**kwargs: Any) -> Any:
            if namespace:
                return custom.list_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, **kwargs)
            return custom.list_cluster_custom_object(kind.group, kind.version, kind.plural, **kwargs)

        return list_custom
    apis = {"": client.CoreV1Api, "apps": client.AppsV1Api, "autoscaling": client.AutoscalingV2Api}
    typed: Any = apis[kind.group](api)
    singular = {"pods": "pod", "nodes": "node", "events": "event", "deployments": "deployment",
                "statefulsets": "stateful_set", "replicasets": "replica_set",
                "horizontalpodautoscalers": "horizontal_pod_autoscaler"}[kind.plural]
    if kind.key in CLUSTER_SCOPED:
        return getattr(typed, f"list_{singular}")  # type: ignore[no-any-return]
    if namespace:
        namespaced = getattr(typed, f"list_namespaced_{singular}")

        def list_in_namespace(**kwargs: Any) -> Any:
            return namespaced(namespace, **kwargs)

        return list_in_namespace
    return getattr(typed, f"list_{singular}_for_all_namespaces")  # type: ignore[no-any-return]


def _connection_problem(exc: urllib3.exceptions.HTTPError) -> str:
    """urllib3's message names the pool, the URL and the retries; the on-call needs the cause only."""
    cause: BaseException = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        cause = exc.reason
    if isinstance(cause, urllib3.exceptions.NewConnectionError):  # before TimeoutError: urllib3 derives it from that
        text = str(cause)
        return "connection refused" if "refused" in text.lower() else text.split(": ", 1)[-1]
    if isinstance(cause, urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(cause, urllib3.exceptions.SSLError):
        return "TLS failed (is the kubeconfig's certificate authority right?)"
    if isinstance(cause, urllib3.exceptions.ProtocolError):
        return "the connection broke"
    return describe(cause)


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class KubeSource:
    """Every kind's watch, seen from the console's loop as one source: ``snapshot()`` at any time, and
    ``on_update`` once per refresh interval while something changed (never from a watch thread)."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None,
                 on_update: Callable[[Observed[KubeSnapshot]], None], interval_s: float = 1.0,
                 timeout_s: float = 5.0, down_after_s: float = 10.0, kinds: tuple[Kind, ...] = KINDS,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self.kubeconfig, self.context, self.namespace = kubeconfig, context, namespace
        self.watch_seconds = watch_seconds
        self.on_update, self.interval_s, self.timeout_s = on_update, interval_s, timeout_s
        self.down_after_s, self.kinds = down_after_s, kinds
        self.api: client.ApiClient | None = None
        self.server = ""
        self.simulated = False
        self.watches: list[KindWatch] = []
        self._changed = threading.Event()
        self._identified = threading.Event()  # the server has said whether it is kubesim (or could not say)
        self._config_error: str | None = None
        self._last: Observed[KubeSnapshot] = Observed("kubernetes")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Loads the configuration (a failure is a DOWN snapshot, not an exception) and starts every watch."""
        try:
            self.api, self.context, self.server = load_api_client(self.kubeconfig, self.context)
        except KubeConfigError as exc:
            self._config_error = str(exc)
        else:
            self.watches = [KindWatch(self.api, kind, self.namespace, self._changed.set, self.timeout_s,
                                      self.watch_seconds) for kind in self.kinds]
            for kind_watch in self.watches:
                kind_watch.start()
        self._changed.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kube-source")

    async def stop(self) -> None:
        for kind_watch in self.watches:
            kind_watch.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def access(self, wanted: dict[str, Permission]) -> dict[str, Access]:
        """The user's access for each action (asked again on a context change)."""
        if self.api is None:
            reason = self._config_error or "not connected"
            return {action: Access(False, reason) for action in wanted}
        return await asyncio.to_thread(review_access, self.api, self.namespace, wanted)

    def snapshot(self, now: float | None = None) -> Observed[KubeSnapshot]:
        now = time.monotonic() if now is None else now
        if self._config_error is not None:
            return Observed("kubernetes", None, None, Health.DOWN, self._config_error)
        if not self._identified.is_set():  # LIVE data must not call a simulated cluster real, even for a moment
            return Observed("kubernetes", None, None, Health.WAITING, None)
        states = {w.kind.key: w.state for w in self.watches}
        data = KubeSnapshot(self.context or "", self.server, self.namespace, states, self.simulated)
        failing = [s for s in states.values() if s.error and s.failing_since is not None]
        if not any(s.listed for s in states.values()):
            health = Health.DOWN if failing else Health.WAITING
            return Observed("kubernetes", None, None, health, failing[0].error if failing else None)
        if not failing and not all(s.listed for s in states.values()):
            return Observed("kubernetes", data, None, Health.WAITING, None)  # the first lists are still coming
        if failing:
            oldest = min(s.failing_since for s in failing if s.failing_since is not None)
            health = Health.DOWN if now - oldest >= self.down_after_s else Health.STALE
            return Observed("kubernetes", data, self._last.fetched_at, health, failing[0].error)
        return Observed("kubernetes", data, now, Health.LIVE, None)

    async def _run(self) -> None:
        await asyncio.to_thread(self._detect_simulated)
        while True:
            if self._changed.is_set():
                self._changed.clear()
                self._last = self.snapshot()
                try:
                    self.on_update(self._last)
                except Exception:
                    log.exception("kubernetes: showing a snapshot failed")
            await asyncio.sleep(self.interval_s)

    def _detect_simulated(self) -> None:
        """kubesim marks every answer; the header then shows SIMULATED so nobody mistakes it for production."""
        try:
            if self.api is not None:
                with contextlib.suppress(Exception):  # the watches report the failure
                    response = client.VersionApi(self.api).get_code(_preload_content=False,
                                                                     _request_timeout=self.timeout_s)
                    self.simulated = response.headers.get(SIMULATED_HEADER, "").lower() == "true"
        finally:
            self._identified.set()
