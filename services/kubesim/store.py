"""The object store: every object of every kind in memory, one global resourceVersion counter, and a bounded
history of watch events (older versions are compacted away, so a watch from before them gets 410 Gone).

All methods run on the server's event loop thread; none of them awaits, so each write and each watch
registration is atomic with respect to the others."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.kubesim.discovery import ResourceKind
from services.kubesim.errors import ApiError, already_exists, conflict, not_found

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]
# A validator sees the kind, the object about to be stored and the stored one (None on create); it raises
# ApiError(422) to refuse the write. Schema validation plugs in here.
Validator = Callable[[ResourceKind, Obj, Obj | None], None]

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # RFC 1123 subdomain
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apiserver's names.SimpleNameGenerator
GENERATE_NAME_TRIES = 8
DEFAULT_HISTORY = 1000
DEFAULT_WATCH_QUEUE = 1000
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Fields of an object that are not its "spec" for the purpose of bumping metadata.generation.
NON_SPEC_FIELDS = ("metadata", "status", "kind", "apiVersion")


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    kind: ResourceKind
    namespace: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    previous: Obj | None = None  # the object before a MODIFIED write (for selector transitions)

    def line(self) -> bytes:
        return json.dumps({"type": self.type, "object": self.obj}, separators=(",", ":")).encode() + b"\n"


@dataclass(eq=False)
class Watcher:
    """One open watch. Its queue is bounded: a watcher that falls that far behind is dropped (``on_drop``)."""

    kind: ResourceKind
    namespace: str | None
    matches: Predicate
    queue: asyncio.Queue[WatchEvent | None]
    on_drop: Callable[[], None] = lambda: None
    dropped: bool = False

    def view(self, event: WatchEvent) -> WatchEvent | None:
        """The event as this watcher sees it, or None. As on a real API server, an object that starts matching
        the selector arrives as ADDED and one that stops matching leaves as DELETED."""
        if event.kind != self.kind or (self.namespace is not None and event.namespace != self.namespace):
            return None
        now = self.matches(event.obj)
        if event.type != "MODIFIED" or event.previous is None:
            return event if now else None
        before = self.matches(event.previous)
        if now and before:
            return event
        if now:
            return WatchEvent(event.rv, event.kind, event.namespace, "ADDED", event.obj)
        if before:
            return WatchEvent(event.rv, event.kind, event.namespace, "DELETED", event.obj)
        return None


@dataclass
class Store:
    history: int = DEFAULT_HISTORY
    watch_queue: int = DEFAULT_WATCH_QUEUE
    validators: list[Validator] = field(default_factory=list)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.revision = 0
        self.compacted = 0  # the newest resourceVersion no longer in the event history
        self.objects: dict[ResourceKind, dict[tuple[str, str], Obj]] = {}
        self.events: deque[WatchEvent] = deque()
        self.watchers: set[Watcher] = set()

    # --- reads -----------------------------------------------------------------------------------------------

    def get(self, kind: ResourceKind, namespace: str, name: str) -> Obj:
        obj = self.objects.get(kind, {}).get((namespace, name))
        if obj is None:
            raise not_found(kind.group, kind.plural, name)
        return clone(obj)

    def list(self, kind: ResourceKind, namespace: str | None, matches: Predicate) -> list[Obj]:
        """Matching objects in (namespace, name) order: the order ``continue`` tokens walk."""
        found = self.objects.get(kind, {})
        keys = sorted(key for key in found if namespace is None or key[0] == namespace)
        return [clone(found[key]) for key in keys if matches(found[key])]

    # --- writes ----------------------------------------------------------------------------------------------

    def create(self, kind: ResourceKind, namespace: str, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(kind, namespace, str(meta["generateName"]))
        name = meta.get("name")
        if isinstance(name, str) and name and not (len(name) <= 253 and NAME.match(name)):
            raise ApiError(422, f'{kind.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase '
                                "RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                                "and must start and end with an alphanumeric character",
                           details={"name": name, "group": kind.group, "kind": kind.kind,
                                    "causes": [{"field": "metadata.name", "reason": "FieldValueInvalid",
                                                "message": "a lowercase RFC 1123 subdomain"}]})
        if not name or not isinstance(name, str):
            raise ApiError(422, "metadata.name: Required value: name or generateName is required",
                           details={"kind": kind.kind, "causes": [{"field": "metadata.name",
                                                                    "reason": "FieldValueRequired",
                                                                    "message": "Required value"}]})
        if kind.namespaced:
            self._require_namespace(namespace)
        if (namespace, name) in self.objects.get(kind, {}):
            raise already_exists(kind.group, kind.plural, name)
        stored = clone(obj)
        if kind.status:
            stored.pop("status", None)  # a real server ignores .status on create when it has a status subresource
        stored["kind"], stored["apiVersion"] = kind.kind, kind.api_version
        meta = stored["metadata"]
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=self._now(), generation=1)
        if kind.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        self._validate(kind, stored, None)
        return self._commit(kind, namespace, name, stored, "ADDED")

    def replace(self, kind: ResourceKind, namespace: str, name: str, obj: Obj, subresource: str | None = None) -> Obj:
        """PUT (and the end of PATCH): 409 when the body names a resourceVersion that is no longer current."""
        current = self.get(kind, namespace, name)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if meta.get("name", name) != name:
            raise ApiError(400, f'the name of the object ({meta.get("name")}) does not match the name on the URL '
                                f"({name})")
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(kind.group, kind.plural, name)
        if subresource == "status":
            stored = clone(current)
            if "status" in obj:
                stored["status"] = clone(obj["status"])
            else:
                stored.pop("status", None)
        else:
            stored = clone(obj)
            stored["metadata"] = {**clone(meta), **{
                key: current["metadata"][key] for key in ("uid", "creationTimestamp", "generation")}}
            if kind.status:
                stored.pop("status", None)
                if "status" in current:
                    stored["status"] = current["status"]
            if self._spec(stored) != self._spec(current):
                stored["metadata"]["generation"] = current["metadata"]["generation"] + 1
        stored["kind"], stored["apiVersion"] = kind.kind, kind.api_version
        stored["metadata"]["name"] = name
        if kind.namespaced:
            stored["metadata"]["namespace"] = namespace
        if _without_version(stored) == _without_version(current):
            return current  # a no-op write does not bump the resourceVersion, as on a real server
        self._validate(kind, stored, current)
        return self._commit(kind, namespace, name, stored, "MODIFIED")

    def delete(self, kind: ResourceKind, namespace: str, name: str, preconditions: Obj | None = None) -> Obj:
        """Deletes at once (no finalizers or grace periods); DeleteOptions preconditions that fail are a 409."""
        current = self.get(kind, namespace, name)
        for field_name in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(field_name)
            if wanted and wanted != current["metadata"][field_name]:
                raise ApiError(409, f"Precondition failed: {field_name} in precondition: {wanted}, {field_name} in "
                                    f"object meta: {current['metadata'][field_name]}", reason="Conflict",
                               details={"name": name, "group": kind.group, "kind": kind.plural})
        del self.objects[kind][(namespace, name)]
        self.revision += 1
        current["metadata"]["resourceVersion"] = str(self.revision)
        self._publish(WatchEvent(self.revision, kind, namespace, "DELETED", current))
        return clone(current)

    # --- watch -----------------------------------------------------------------------------------------------

    def watch(self, kind: ResourceKind, namespace: str | None, matches: Predicate, since: str | None,
              on_drop: Callable[[], None] = lambda: None) -> tuple[list[WatchEvent], Watcher]:
        """The events to send first and the registered watcher for what follows.

        No resourceVersion (or "0"): every matching object as ADDED, then changes. A resourceVersion: the
        retained events after it, or ApiError(410) when it is older than the history holds."""
        if since in (None, "", "0"):
            backlog = [WatchEvent(self.revision, kind, obj["metadata"].get("namespace", ""), "ADDED", obj)
                       for obj in self.list(kind, namespace, matches)]
        else:
            try:
                after = int(since)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ApiError(400, f"invalid resource version: {since!r}") from exc
            if after < self.compacted:
                raise ApiError(410, f"too old resource version: {after} ({self.compacted + 1})", reason="Expired")
            backlog = []
        watcher = Watcher(kind, namespace, matches, asyncio.Queue(self.watch_queue), on_drop)
        if since not in (None, "", "0"):
            backlog = [seen for event in self.events if event.rv > after and (seen := watcher.view(event))]
        self.watchers.add(watcher)
        return backlog, watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def end_watches(self) -> None:
        """Ends every open watch (at shutdown): each stream finishes and its client re-watches elsewhere."""
        for watcher in list(self.watchers):
            self.watchers.discard(watcher)
            try:
                watcher.queue.put_nowait(None)
            except asyncio.QueueFull:
                self._drop(watcher)

    # --- internals -------------------------------------------------------------------------------------------

    def _commit(self, kind: ResourceKind, namespace: str, name: str, stored: Obj, event_type: str) -> Obj:
        self.revision += 1
        stored["metadata"]["resourceVersion"] = str(self.revision)
        previous = self.objects.setdefault(kind, {}).get((namespace, name))
        self.objects[kind][(namespace, name)] = stored
        self._publish(WatchEvent(self.revision, kind, namespace, event_type, clone(stored), previous))
        return clone(stored)

    def _publish(self, event: WatchEvent) -> None:
        if len(self.events) >= self.history:
            self.compacted = self.events.popleft().rv
        self.events.append(event)
        for watcher in list(self.watchers):
            seen = watcher.view(event)
            if seen is None:
                continue
            try:
                watcher.queue.put_nowait(seen)
            except asyncio.QueueFull:
                self._drop(watcher)

    def _drop(self, watcher: Watcher) -> None:
        """A watcher too far behind: forget its queue and close its connection rather than buffer without bound."""
        watcher.dropped = True
        self.watchers.discard(watcher)
        while not watcher.queue.empty():
            watcher.queue.get_nowait()
        watcher.queue.put_nowait(None)
        watcher.on_drop()

    def _validate(self, kind: ResourceKind, obj: Obj, old: Obj | None) -> None:
        for validator in self.validators:
            validator(kind, obj, old)

    def _generate_name(self, kind: ResourceKind, namespace: str, prefix: str) -> str:
        """Five characters from the API server's alphabet; like a 1.30+ server, a name taken is drawn again."""
        taken = self.objects.get(kind, {})
        for _ in range(GENERATE_NAME_TRIES):
            name = prefix + "".join(secrets.choice(GENERATE_NAME_ALPHABET) for _ in range(5))
            if (namespace, name) not in taken:
                return name
        return name  # every draw taken: the create answers 409 AlreadyExists, as the API server would

    def _require_namespace(self, namespace: str) -> None:
        if not any(kind.plural == "namespaces" and ("", namespace) in objs for kind, objs in self.objects.items()):
            raise ApiError(404, f'namespaces "{namespace}" not found',
                           details={"name": namespace, "kind": "namespaces"})

    def _now(self) -> str:
        return self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _spec(obj: Obj) -> Obj:
        return {key: value for key, value in obj.items() if key not in NON_SPEC_FIELDS}


def clone(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, scalars): a third of ``copy.deepcopy``'s time, which
    dominated every controller pass over a thousand pods. A tuple becomes a list, as JSON would make it."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clone(item) for item in value]
    return value


def _without_version(obj: Obj) -> Obj:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}
