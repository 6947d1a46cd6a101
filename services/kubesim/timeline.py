"""A scenario's timeline as a controller: each tick fires the events whose time (seconds after the runner started
it, on the runner's clock) has come, in order. An event whose object does not exist yet (a StatefulSet's pod not
yet created) stays due and is tried again on the next tick, so a timeline never depends on controller ordering."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services.kubesim.controllers.base import ANALYSIS_OUTCOME_PREFIX, CRASH_LOOP, Context
from services.kubesim.discovery import ResourceKind
from services.kubesim.errors import ApiError
from services.kubesim.metrics import Series
from services.kubesim.scenario import Event

LOG = logging.getLogger(__name__)
SOURCE = "timeline"


class Timeline:
    def __init__(self, context: Context, events: tuple[Event, ...]) -> None:
        self.context = context
        self.start = context.clock()
        self.pending = sorted(events, key=lambda event: event.at)  # stable: same-time events keep file order
        self.fired: list[Event] = []
        self._waiting: set[str] = set()  # events already logged as waiting for their object

    @classmethod
    def of(cls, events: tuple[Event, ...]) -> Callable[[Context], Timeline]:
        """What ``KubeSim(extra=...)`` takes: builds the timeline on the runner's context."""
        return lambda context: cls(context, events)

    def tick(self) -> None:
        elapsed = self.context.clock() - self.start
        later: list[Event] = []
        for event in self.pending:
            if event.at > elapsed:
                later.append(event)
                continue
            try:
                self._fire(event)
            except ApiError as exc:
                if exc.code != 404:
                    raise
                if event.where not in self._waiting:
                    self._waiting.add(event.where)
                    LOG.info("kubesim %s (%s) waits: %s", event.where, event.action, exc.message)
                later.append(event)
                continue
            self.fired.append(event)
        self.pending = later

    def _fire(self, event: Event) -> None:
        fields, store, kinds = event.fields, self.context.store, self.context.kinds
        if event.action == "metric":
            series = Series(fields["namespace"], fields["name"], fields["workload"])
            self.context.board.set(series, fields["value"], self.context.clock(), SOURCE)
        elif event.action == "crash_loop":
            self._annotate(kinds.pods, fields["namespace"], fields["pod"], CRASH_LOOP,
                           "true" if fields["crashing"] else None)
        elif event.action == "analysis":
            self._annotate(kinds.rollouts, fields["namespace"], fields["rollout"],
                           f"{ANALYSIS_OUTCOME_PREFIX}{fields['step']}", fields["outcome"])
        else:
            kind = {"Deployment": kinds.deployments, "StatefulSet": kinds.statefulsets,
                    "ReplicaSet": kinds.replicasets, "Rollout": kinds.rollouts}[fields["kind"]]
            obj = store.get(kind, fields["namespace"], fields["name"])
            obj.setdefault("spec", {})["replicas"] = fields["replicas"]
            store.replace(kind, fields["namespace"], fields["name"], obj)

    def _annotate(self, kind: ResourceKind, namespace: str, name: str, key: str, value: str | None) -> None:
        obj: dict[str, Any] = self.context.store.get(kind, namespace, name)
        annotations = obj["metadata"].setdefault("annotations", {})
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
        self.context.store.replace(kind, namespace, name, obj)
