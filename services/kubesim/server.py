"""kubesim's HTTP face: the Kubernetes REST layout (/api/v1/..., /apis/{group}/{version}/...) served by aiohttp on
loopback, with bearer-token roles, Status error bodies, list paging, watch streams and the /status and /scale
subresources. ``KubeSim`` runs it on its own thread so a synchronous client in the same process never blocks it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

from services.kubesim import patch as patches
from services.kubesim import tables
from services.kubesim.controllers.base import Settings as ControllerSettings
from services.kubesim.controllers.kubelet import Kubelet
from services.kubesim.controllers.runner import Controllers, ExtraController, Source
from services.kubesim.discovery import KUBE_VERSION, READ_VERBS, Registry, ResourceKind
from services.kubesim.errors import ApiError, failure_status
from services.kubesim.openapi import OpenApi
from services.kubesim.selectors import field_selector, label_selector
from services.kubesim.store import SYSTEM_NAMESPACES, Obj, Store, WatchEvent
from services.kubesim.tls import self_signed
from services.kubesim.validation import validate_schema

LOG = logging.getLogger(__name__)
SIMULATED_HEADER = "x-switchboard-simulated"
SIMULATED_CONFIGMAP = ("kube-public", "switchboard-simulated")  # (namespace, name): a double announces itself
ADMIN, VIEWER = "admin", "viewer"
DEFAULT_WATCH_TIMEOUT = 1800.0
MAX_BODY = 3 * 1024 * 1024  # a real API server refuses request bodies over 3 MiB
TRUE_WORDS = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool, which the API server uses


@dataclass(frozen=True)
class Target:
    """What a resource URL names."""

    kind: ResourceKind
    namespace: str | None
    name: str | None
    subresource: str | None


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


class KubeApi:
    """The request handling, independent of how the server is run."""

    def __init__(self, tokens: dict[str, str], store: Store | None = None, registry: Registry | None = None,
                 bookmark_interval: float = 60.0) -> None:
        self.tokens = tokens
        self.store = store or Store(validators=[validate_schema])
        self.registry = registry or Registry()
        self.openapi = OpenApi(self.registry)
        self.bookmark_interval = bookmark_interval
        self.pod_logs: dict[tuple[str, str], list[str]] = {}  # (namespace, pod) -> lines; controllers append
        self._seed()

    def _seed(self) -> None:
        namespaces = self.registry.lookup("", "v1", "namespaces")
        configmaps = self.registry.lookup("", "v1", "configmaps")
        assert namespaces and configmaps
        for name in SYSTEM_NAMESPACES:
            self.store.create(namespaces, "", {"metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]},
                                                "status": {"phase": "Active"}})
        namespace, name = SIMULATED_CONFIGMAP
        self.store.create(configmaps, namespace, {"metadata": {"name": name}, "data": {"simulated": "true"}})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_BODY)
        app.on_response_prepare.append(self._mark_simulated)
        app.on_shutdown.append(self._end_watches)
        app.router.add_route("*", "/{tail:.*}", self._route)
        return app

    async def _end_watches(self, app: web.Application) -> None:
        self.store.end_watches()

    @staticmethod
    async def _mark_simulated(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[SIMULATED_HEADER] = "true"

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        except web.HTTPException:
            raise
        except Exception as exc:
            LOG.exception("kubesim failed on %s %s", request.method, request.path)
            return _json(failure_status(500, "InternalError", f"an error on the server: {type(exc).__name__}"), 500)

    # --- routing ---------------------------------------------------------------------------------------------

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [part for part in request.path.split("/") if part]
        if parts in (["version"], ["healthz"], ["readyz"], ["livez"]):
            return _json(KUBE_VERSION) if parts == ["version"] else web.Response(text="ok")
        role = self._role(request)
        if parts[:2] == ["openapi", "v3"]:
            document = self.openapi.index() if len(parts) == 2 else self.openapi.document("/".join(parts[2:]))
            if document is None:
                raise ApiError(404, "the server could not find the requested resource")
            return _json(document)
        if parts == ["api"]:
            return _json(self.registry.api_versions())
        if parts == ["apis"]:
            return _json(self.registry.api_group_list())
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 2:
            if len(parts) == 2:
                if parts[1] not in self.registry.groups():
                    raise ApiError(404, "the server could not find the requested resource")
                return _json(self.registry.api_group(parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        if not rest:
            listing = self.registry.resource_list(group, version)
            if listing is None:
                raise ApiError(404, "the server could not find the requested resource")
            return _json(listing)
        target = self._target(group, version, rest)
        return await self._serve(request, role, target)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        namespaced = (self.registry.lookup(group, version, rest[2]) if len(rest) >= 3 and rest[0] == "namespaces"
                      else None)
        if namespaced is not None and namespaced.namespaced:
            namespace, plural, tail = rest[1], rest[2], rest[3:]
        else:
            namespace, plural, tail = None, rest[0], rest[1:]
        kind = self.registry.lookup(group, version, plural)
        if kind is None or len(tail) > 2:
            raise ApiError(404, "the server could not find the requested resource")
        name = tail[0] if tail else None
        subresource = tail[1] if len(tail) > 1 else None
        if subresource and not ((subresource == "status" and kind.status) or (subresource == "scale" and kind.scale)
                                or (subresource == "log" and kind.log)):
            raise ApiError(404, "the server could not find the requested resource")
        if kind.namespaced and name is not None and namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        return Target(kind, namespace if kind.namespaced else None, name, subresource)

    def _role(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        role = self.tokens.get(token)
        if role is None:
            raise ApiError(401, "Unauthorized")
        return role

    @staticmethod
    def _verb(request: web.Request, target: Target) -> str:
        if request.method == "GET":
            if target.name is not None:
                return "get"
            return "watch" if request.query.get("watch") in TRUE_WORDS else "list"
        if request.method == "DELETE" and target.name is None:
            return "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method, "")

    async def _serve(self, request: web.Request, role: str, target: Target) -> web.StreamResponse:
        verb = self._verb(request, target)
        kind = target.kind
        if verb not in kind.verbs or (verb == "create" and target.name is not None) or (
                verb in ("update", "patch", "delete") and target.name is None):
            raise ApiError(405, f"the server does not allow this method on the requested resource ({verb})")
        if kind.plural == "selfsubjectaccessreviews":
            return _json(self._access_review(role, await self._body(request)), 201)
        if role != ADMIN and verb not in READ_VERBS:
            raise ApiError(403, f'{kind.plural}{"." + kind.group if kind.group else ""} is forbidden: '
                                f'role "{role}" cannot {verb} resource "{kind.plural}"',
                           details={"group": kind.group, "kind": kind.plural, "name": target.name or ""})
        namespace = target.namespace or ""
        if verb == "watch":
            return await self._watch(request, target)
        if verb == "list":
            listed = self._list(request, target)
            if tables.wants_table(request.headers.get("Accept", "")):
                return _json(tables.table(kind.kind, listed["items"], listed["metadata"]["resourceVersion"],
                                          request.query.get("includeObject", "Metadata"),
                                          listed["metadata"].get("continue")))
            return _json(listed)
        if verb == "deletecollection":
            for obj in self.store.list(kind, target.namespace, self._matcher(request, kind)):
                self.store.delete(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        assert target.name is not None or verb == "create"
        if target.subresource == "log":
            if verb != "get":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return self._log(request, namespace, target.name or "")
        if verb == "get":
            obj = self.store.get(kind, namespace, target.name or "")
            if target.subresource == "scale":
                return _json(self._scale(kind, obj))
            if tables.wants_table(request.headers.get("Accept", "")):
                return _json(tables.table(kind.kind, [obj], obj["metadata"]["resourceVersion"],
                                          request.query.get("includeObject", "Metadata")))
            return _json(obj)
        if verb == "create":
            return _json(self.store.create(kind, namespace, await self._body(request)), 201)
        if verb == "delete":
            options = await self._body(request) if await request.read() else {}
            deleted = self.store.delete(kind, namespace, target.name or "", options.get("preconditions") or {})
            if kind.plural == "pods":
                return _json(deleted)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": target.name, "group": kind.group, "kind": kind.plural,
                                      "uid": deleted["metadata"]["uid"]}})
        current = self.store.get(kind, namespace, target.name or "")
        if verb == "update":
            body = await self._body(request)
        else:
            base = self._scale(kind, current) if target.subresource == "scale" else current
            body = patches.apply_patch(request.content_type, base, await request.read(), kind.builtin)
        return _json(self._write(target, current, body))

    def _write(self, target: Target, current: Obj, body: Obj) -> Obj:
        kind, namespace, name = target.kind, target.namespace or "", target.name or ""
        if target.subresource != "scale":
            return self.store.replace(kind, namespace, name, body, target.subresource)
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                                f"{replicas!r}: must be greater than or equal to 0",
                           details={"name": name, "group": "autoscaling", "kind": "Scale",
                                    "causes": [{"field": "spec.replicas", "reason": "FieldValueInvalid",
                                                "message": "must be greater than or equal to 0"}]})
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        updated = {**current, "spec": {**(current.get("spec") or {}), "replicas": replicas}}
        updated["metadata"] = {**current["metadata"], "resourceVersion": wanted or current["metadata"][
            "resourceVersion"]}
        return self._scale(kind, self.store.replace(kind, namespace, name, updated))

    @staticmethod
    def _scale(kind: ResourceKind, obj: Obj) -> Obj:
        """The autoscaling/v1 Scale view of a scalable object."""
        meta = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        selector = status.get("selector")
        if selector is None and kind.builtin:
            match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))
        # A custom resource's Scale reads its CRD's scale paths (Argo's Rollout: .status.HPAReplicas, .status.selector)
        replicas = status.get("replicas" if kind.builtin else "HPAReplicas", 0)
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion",
                                                        "creationTimestamp") if key in meta},
                "spec": {"replicas": spec.get("replicas", 1)},
                "status": {"replicas": replicas, **({"selector": selector} if selector else {})}}

    def write_log(self, namespace: str, pod: str, line: str) -> None:
        """Appends a line to a pod's log (what its container would print)."""
        self.pod_logs.setdefault((namespace, pod), []).append(line)

    def _log(self, request: web.Request, namespace: str, name: str) -> web.Response:
        kind = self.registry.lookup("", "v1", "pods")
        assert kind is not None
        obj = self.store.get(kind, namespace, name)
        containers = [c.get("name") for c in (obj.get("spec") or {}).get("containers") or []]
        container = request.query.get("container")
        if container is not None and container not in containers:
            raise ApiError(400, f"container {container} is not valid for pod {name}")
        if container is None and len(containers) > 1:
            raise ApiError(400, f"a container name must be specified for pod {name}, choose one of: {containers}")
        lines = self.pod_logs.get((namespace, name), [])
        tail = _int_query(request, "tailLines")
        if tail is not None:
            lines = lines[-tail:] if tail else []
        return web.Response(text="".join(f"{line}\n" for line in lines), content_type="text/plain")

    @staticmethod
    def _access_review(role: str, review: Obj) -> Obj:
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        allowed = role == ADMIN or attributes.get("verb") in READ_VERBS
        return {**review, "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": review.get("metadata") or {},
                "status": {"allowed": allowed, "reason": f'kubesim role "{role}"'}}

    @staticmethod
    async def _body(request: web.Request) -> Obj:
        if request.content_type not in ("application/json", "application/octet-stream", ""):
            # kubesim speaks JSON only: a client set to send protobuf (client-go can be) is told so with a 415.
            raise ApiError(415, f"the body of the request was in an unknown format ({request.content_type}); "
                                "kubesim accepts application/json")
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise ApiError(400, f"the body of the request could not be decoded as JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        return body

    # --- list and watch --------------------------------------------------------------------------------------

    def _matcher(self, request: web.Request, kind: ResourceKind) -> Callable[[Obj], bool]:
        labels = label_selector(request.query.get("labelSelector"))
        fields = field_selector(request.query.get("fieldSelector"), kind.kind)
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, request: web.Request, target: Target) -> Obj:
        """One page. Later pages read the store as it is now, not as it was at the first page (a real server
        serves them from the first page's snapshot); a token older than the retained history is 410 Expired."""
        kind = target.kind
        items = self.store.list(kind, target.namespace, self._matcher(request, kind))
        token = _decode_continue(request.query.get("continue"))
        if token is not None:
            issued_at, start = token
            if issued_at < self.store.compacted:
                raise ApiError(410, "The provided continue parameter is too old to display a consistent list result. "
                                    "You can start a new list without the continue parameter.", reason="Expired")
            items = [item for item in items if _sort_key(item) > start]
        limit = _int_query(request, "limit")
        metadata: Obj = {"resourceVersion": str(self.store.revision)}
        if limit and len(items) > limit:
            issued_at = token[0] if token else self.store.revision
            metadata["continue"] = _encode_continue(issued_at, _sort_key(items[limit - 1]))
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": metadata, "items": items}

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        timeout = _int_query(request, "timeoutSeconds")
        bookmarks = request.query.get("allowWatchBookmarks") in TRUE_WORDS
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        matches = self._matcher(request, target.kind)
        encode = self._event_encoder(request)

        def drop() -> None:
            if request.transport is not None:
                request.transport.close()

        try:
            backlog, watcher = self.store.watch(target.kind, target.namespace, matches,
                                                request.query.get("resourceVersion"), drop)
        except ApiError as exc:
            if exc.code != 410:
                raise
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            return response
        try:
            await response.prepare(request)
            for event in backlog:
                await response.write(encode(event))
            await self._stream(response, watcher.queue, float(timeout or DEFAULT_WATCH_TIMEOUT), bookmarks, target,
                               encode)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
        return response

    @staticmethod
    def _event_encoder(request: web.Request) -> Callable[[WatchEvent], bytes]:
        """Watch events as NDJSON lines; as one-row Tables when the client asked for Tables (``kubectl get -w``)."""
        if not tables.wants_table(request.headers.get("Accept", "")):
            return WatchEvent.line
        include = request.query.get("includeObject", "Metadata")

        def as_table(event: WatchEvent) -> bytes:
            obj = tables.table(event.kind.kind, [event.obj], str(event.rv), include)
            return json.dumps({"type": event.type, "object": obj}).encode() + b"\n"

        return as_table

    async def _stream(self, response: web.StreamResponse, queue: asyncio.Queue[WatchEvent | None], seconds: float,
                      bookmarks: bool, target: Target, encode: Callable[[WatchEvent], bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancel that meets an arrival
                async with asyncio.timeout(wait):
                    event = await queue.get()
            except TimeoutError:
                if bookmarks:
                    await response.write(self._bookmark(target.kind))
                continue
            if event is None:  # dropped for falling behind
                return
            await response.write(encode(event))

    def _bookmark(self, kind: ResourceKind) -> bytes:
        obj = {"kind": kind.kind, "apiVersion": kind.api_version,
               "metadata": {"resourceVersion": str(self.store.revision)}}
        return json.dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"


def _sort_key(obj: Obj) -> list[str]:
    return [obj["metadata"].get("namespace", ""), obj["metadata"]["name"]]


def _encode_continue(issued_at: int, key: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps([issued_at, key]).encode()).decode()


def _decode_continue(token: str | None) -> tuple[int, list[str]] | None:
    """(the resourceVersion of the list's first page, the last key served)."""
    if not token:
        return None
    try:
        issued_at, key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ApiError(400, "continue key is not valid") from exc
    if not (isinstance(issued_at, int) and isinstance(key, list) and len(key) == 2
            and all(isinstance(part, str) for part in key)):
        raise ApiError(400, "continue key is not valid")
    return issued_at, key


def _int_query(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text in (None, ""):
        return None
    try:
        value = int(text)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ApiError(400, f"invalid {name}: {text!r}") from exc
    if value < 0:
        raise ApiError(400, f"invalid {name}: must not be negative")
    return value


class KubeSim:
    """kubesim on a free (or given) loopback port, served from a daemon thread: ``start``/``stop`` or ``with``."""

    def __init__(self, tokens: dict[str, str], port: int = 0, host: str = "127.0.0.1", tls: bool = True,
                 controllers: ControllerSettings | None = None, sources: tuple[Source, ...] = (),
                 clock: Callable[[], float] = time.monotonic, extra: tuple[ExtraController, ...] = (),
                 **api_options: Any) -> None:
        self.host, self.port = host, port
        self.extra = extra  # controllers added to the built-in ones (a scenario's timeline)
        self.controller_settings = controllers  # None: no controllers (a bare API server)
        self.sources, self.clock = sources, clock  # metric sources and the controllers' clock (with controllers)
        self.controllers: Controllers | None = None
        self.certificate = self_signed() if tls else None
        self._options = {"tokens": tokens, **api_options}
        self.api: KubeApi | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kubesim", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.certificate else 'http'}://{self.host}:{self.port}"

    @property
    def ca_pem(self) -> bytes | None:
        """The PEM certificate clients should trust (None when serving plain HTTP)."""
        return self.certificate.cert_pem if self.certificate else None

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        self.api = KubeApi(**self._options)
        if self.controller_settings is not None:
            self.controllers = Controllers(self.api.store, self.api.registry, self.controller_settings,
                                           clock=self.clock, sources=self.sources, extra=self.extra)
            for controller in self.controllers.controllers:
                if isinstance(controller, Kubelet):
                    controller.write_log = self.api.write_log
            self.controllers.start()
        self._runner = web.AppRunner(self.api.app(), access_log=None, handler_cancellation=True,
                                    shutdown_timeout=2.0)
        await self._runner.setup()
        context = self.certificate.server_context() if self.certificate else None
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs ``fn`` on the server's loop (the store is only touched there) and returns its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self.controllers is not None:
            self._loop.call_soon_threadsafe(self.controllers.stop)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
