"""Jobs -> Pods: keeps up to spec.parallelism pods running until spec.completions have Succeeded. Each pod runs
for the Job's ``kubesim.switchboard/run-seconds`` annotation (a scenario sets it) or the default job time, then
Succeeds; the Job then gets completionTime and the Complete (and SuccessCriteriaMet) conditions. Failed pods are
replaced until more than spec.backoffLimit (6 by default) have failed; then the Job is Failed (BackoffLimitExceeded)."""

from __future__ import annotations

from services.kubesim.controllers.base import RUN_SECONDS, Context, by_controller, pod_from_template, set_condition
from services.kubesim.store import Obj

JOB_NAME_LABELS = ("job-name", "batch.kubernetes.io/job-name")
UID_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid")


class Jobs:
    def __init__(self, context: Context) -> None:
        self.context = context

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        pods = by_controller(store.list(kinds.pods, None, lambda _: True))
        for job in store.list(kinds.jobs, None, lambda _: True):
            self._sync(job, pods.get(job["metadata"]["uid"], []))

    def _sync(self, job: Obj, pods: list[Obj]) -> None:
        store, kinds, meta = self.context.store, self.context.kinds, job["metadata"]
        spec, status = job.get("spec") or {}, dict(job.get("status") or {})
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec.get("parallelism") if spec.get("parallelism") is not None else 1)
        phases = [(pod.get("status") or {}).get("phase") for pod in pods]
        succeeded, failed = phases.count("Succeeded"), phases.count("Failed")
        active = len(pods) - succeeded - failed
        stamp = self.context.timestamp()
        complete = succeeded >= completions
        backoff_limit = int(spec.get("backoffLimit") if spec.get("backoffLimit") is not None else 6)
        gave_up = not complete and failed > backoff_limit
        if gave_up:
            for pod in pods:
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    store.delete(kinds.pods, meta["namespace"], pod["metadata"]["name"])
            active = 0
        elif not complete and not spec.get("suspend"):
            run_seconds = (meta.get("annotations") or {}).get(RUN_SECONDS, str(self.context.settings.job_seconds))
            labels = {label: meta["name"] for label in JOB_NAME_LABELS}
            labels.update({label: meta["uid"] for label in UID_LABELS})
            while active < parallelism and succeeded + active < completions:
                pod = pod_from_template(spec.get("template") or {}, job, labels, annotations={RUN_SECONDS: run_seconds})
                created = store.create(kinds.pods, meta["namespace"], pod)
                self.context.event(job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
                active += 1
        status.setdefault("startTime", stamp)
        status.update(active=active, succeeded=succeeded, failed=failed, ready=0)
        if complete:
            conditions = status.get("conditions") or []
            conditions = set_condition(conditions, "SuccessCriteriaMet", "True", "CompletionsReached",
                                       "Reached expected number of succeeded pods", stamp)
            conditions = set_condition(conditions, "Complete", "True", "CompletionsReached",
                                       "Reached expected number of succeeded pods", stamp)
            status.update(conditions=conditions, active=0)
            if "completionTime" not in status:
                status["completionTime"] = stamp
                self.context.event(job, "Completed", "Job completed")
        if gave_up:
            message = "Job has reached the specified backoff limit"
            conditions = status.get("conditions") or []
            conditions = set_condition(conditions, "FailureTarget", "True", "BackoffLimitExceeded", message, stamp)
            conditions = set_condition(conditions, "Failed", "True", "BackoffLimitExceeded", message, stamp)
            if not any(c.get("type") == "Failed" for c in status.get("conditions") or []):
                self.context.event(job, "BackoffLimitExceeded", message, "Warning")
            status["conditions"] = conditions
        if status != job.get("status"):
            store.replace(kinds.jobs, meta["namespace"], meta["name"], {**job, "status": status}, "status")
