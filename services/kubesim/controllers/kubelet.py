"""The kubelet's part: a bound pod goes Pending -> Running, turns Ready ``ready_delay`` seconds later (or after its
own ``kubesim.switchboard/ready-seconds``), and a pod with a run time (Job pods) Succeeds when it is up.
A pod annotated ``kubesim.switchboard/crash-loop: "true"`` instead restarts every ``crash_interval`` seconds, waits
in CrashLoopBackOff and gets a BackOff warning Event (or, with restartPolicy Never, simply Fails)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.kubesim.controllers.base import (
    CRASH_LOOP,
    READY_SECONDS,
    RUN_SECONDS,
    Context,
    is_terminal,
    set_condition,
)
from services.kubesim.store import Obj

LOG = logging.getLogger(__name__)


class Kubelet:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.started: dict[str, float] = {}  # pod uid -> when its containers started (runner clock)
        self.crashed: dict[str, float] = {}  # pod uid -> when its containers last crashed
        # (namespace, pod, line) -> None: where a container's output goes (KubeSim points it at the pod log API)
        self.write_log: Callable[[str, str, str], None] = lambda namespace, pod, line: None

    def tick(self) -> None:
        pods = self.context.store.list(self.context.kinds.pods, None, lambda _: True)
        alive = {pod["metadata"]["uid"] for pod in pods}
        for memory in (self.started, self.crashed):
            for uid in set(memory) - alive:
                del memory[uid]
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") and not is_terminal(pod):
                try:
                    self._sync(pod)
                except ValueError as exc:  # a malformed kubesim annotation: skip this pod, not the others
                    LOG.warning("kubesim cannot run pod %s: %s", pod["metadata"]["name"], exc)

    def _sync(self, pod: Obj) -> None:
        uid, now = pod["metadata"]["uid"], self.context.clock()
        if uid not in self.started:
            self.started[uid] = now
            for container in pod["spec"].get("containers") or []:
                self.write_log(pod["metadata"]["namespace"], pod["metadata"]["name"],
                               f"kubesim: container {container.get('name')} started ({container.get('image', '')})")
        started = self.started[uid]
        annotations = pod["metadata"].get("annotations") or {}
        status = pod.get("status") or {}
        if annotations.get(CRASH_LOOP) == "true" and pod["spec"].get("restartPolicy") == "Never":
            self._write(pod, self._finished(pod, status, failed=True))  # nothing restarts it: the pod fails
            return
        if annotations.get(CRASH_LOOP) == "true":
            self._crash_loop(pod, status, now)
            return
        run_seconds = annotations.get(RUN_SECONDS)
        if run_seconds is not None and now - started >= float(run_seconds):
            self._write(pod, self._finished(pod, status))
            return
        ready = now - started >= float(annotations.get(READY_SECONDS, self.context.settings.ready_delay))
        self._write(pod, self._running(pod, status, ready))

    def _running(self, pod: Obj, status: Obj, ready: bool, restarts: int = 0, waiting: bool = False) -> Obj:
        stamp = self.context.timestamp()
        previous = {c.get("name"): c for c in status.get("containerStatuses") or []}
        containers = []
        for spec in pod["spec"].get("containers") or []:
            old = previous.get(spec["name"]) or {}
            started_at = ((old.get("state") or {}).get("running") or {}).get("startedAt", stamp)
            state = ({"waiting": {"reason": "CrashLoopBackOff",
                                  "message": f"back-off restarting failed container {spec['name']}"}}
                     if waiting else {"running": {"startedAt": started_at}})
            entry = {"name": spec["name"], "image": spec.get("image", ""), "imageID": "", "ready": ready,
                     "started": not waiting, "restartCount": restarts, "state": state}
            if waiting:
                entry["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": stamp,
                                                     "finishedAt": stamp}}
            containers.append(entry)
        conditions = status.get("conditions") or []
        word = "True" if ready else "False"
        reason = "" if ready else "ContainersNotReady"
        conditions = set_condition(conditions, "Initialized", "True", "", "", stamp)
        conditions = set_condition(conditions, "Ready", word, reason, "", stamp)
        conditions = set_condition(conditions, "ContainersReady", word, reason, "", stamp)
        return {**status, "phase": "Running", "conditions": conditions, "containerStatuses": containers,
                "hostIP": status.get("hostIP", "10.0.0.1"), "podIP": status.get("podIP") or _pod_ip(pod),
                "startTime": status.get("startTime", stamp), "qosClass": status.get("qosClass", "BestEffort")}

    def _finished(self, pod: Obj, status: Obj, failed: bool = False) -> Obj:
        stamp = self.context.timestamp()
        running = self._running(pod, status, ready=False)
        exit_code, reason = (1, "Error") if failed else (0, "Completed")
        for entry in running["containerStatuses"]:
            entry.update(started=False, state={"terminated": {"exitCode": exit_code, "reason": reason,
                                                              "startedAt": stamp, "finishedAt": stamp}})
        why = "PodFailed" if failed else "PodCompleted"
        conditions = set_condition(running["conditions"], "Ready", "False", why, "", stamp)
        conditions = set_condition(conditions, "ContainersReady", "False", why, "", stamp)
        return {**running, "phase": "Failed" if failed else "Succeeded", "conditions": conditions}

    def _crash_loop(self, pod: Obj, status: Obj, now: float) -> None:
        uid = pod["metadata"]["uid"]
        restarts = max((c.get("restartCount", 0) for c in status.get("containerStatuses") or []), default=0)
        last = self.crashed.get(uid)
        if last is None or now - last >= self.context.settings.crash_interval:
            self.crashed[uid] = now
            restarts += 1
            updated = self._write(pod, self._running(pod, status, False, restarts, waiting=True))
            name = (pod["spec"].get("containers") or [{}])[0].get("name", "")
            self.context.event(updated, "BackOff", f"Back-off restarting failed container {name} in pod "
                                                   f"{pod['metadata']['name']}", "Warning")

    def _write(self, pod: Obj, status: Obj) -> Obj:
        if status == pod.get("status"):
            return pod  # nothing changed (most pods, most ticks): skip the store's copy and compare
        meta = pod["metadata"]
        return self.context.store.replace(self.context.kinds.pods, meta["namespace"], meta["name"],
                                          {**pod, "status": status}, "status")


def _pod_ip(pod: Obj) -> str:
    number = int(pod["metadata"]["uid"].replace("-", "")[:6], 16)
    return f"10.244.{(number >> 8) % 256}.{number % 254 + 1}"
