"""AnalysisRuns: each metric is measured on the runner's clock (initialDelay, interval, count) and assessed as Argo's
``analysis/analysis.go`` does (failureLimit, inconclusiveLimit, consecutiveErrorLimit, consecutiveSuccessLimit,
strictly greater than); the run takes the worst metric phase and completes with a message, a runSummary and
completedAt. ``spec.terminate`` ends it (Successful unless a limit is already violated).

Where a measurement comes from, in order:
1. the run's ``kubesim.switchboard/outcome`` annotation (a scenario's decision, copied from the Rollout): every
   measurement takes that phase, and a metric with no count (which would measure until terminated) takes one;
2. ``provider.prometheus``: an instant query run beside the ticks (``Context.spawn``) whose values are checked with
   the metric's successCondition / failureCondition (services/kubesim/conditions.py); unreachable is an Error;
3. ``provider.job``: a batch/v1 Job the jobs controller runs; Successful when it completes, Failed when it fails;
4. any other provider: an Error measurement, "provider <x> is not simulated"."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from services.kubesim import conditions
from services.kubesim.controllers.base import ANNOTATION_PREFIX, Context, owner_reference
from services.kubesim.errors import ApiError
from services.kubesim.sources.prometheus import QueryFailed, instant_query
from services.kubesim.store import Obj

OUTCOME = ANNOTATION_PREFIX + "outcome"  # Successful | Failed | Inconclusive | Error
OUTCOMES = ("Successful", "Failed", "Inconclusive", "Error")
COMPLETED = frozenset(OUTCOMES)
# Worst last (analysisutil.IsWorse).
ORDER = ("Successful", "Running", "Pending", "Inconclusive", "Error", "Failed")
ERROR_RETRY_S = 10.0  # DefaultErrorRetryInterval
MEASUREMENT_HISTORY_LIMIT = 10  # DefaultMeasurementHistoryLimit: measurements kept per metric
DEFAULT_QUERY_TIMEOUT_S = 30.0
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


def duration_seconds(value: Any) -> float:
    """An Argo DurationString (``10``, ``"10"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1m30s"``) in seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def worse(a: str, b: str) -> bool:
    """Whether phase ``b`` is worse than ``a``."""
    return ORDER.index(b) > ORDER.index(a)


def evaluate_result(metric: Obj, result: Any) -> tuple[str, str]:
    """One measurement's phase from its value (utils/evaluate EvaluateResult; neither condition set: Successful)."""
    success_text, failure_text = metric.get("successCondition") or "", metric.get("failureCondition") or ""
    success = failure = False
    for field, text in (("successCondition", success_text), ("failureCondition", failure_text)):
        if not text:
            continue
        try:
            value = conditions.evaluate(text, result)
        except conditions.ConditionError as exc:
            return "Error", f'could not evaluate {field} "{text}": {exc}'
        if field == "successCondition":
            success = value
        else:
            failure = value
    if not success_text and not failure_text:
        return "Successful", ""
    if success_text and not failure_text:
        failure = not success
    elif failure_text and not success_text:
        success = not failure
    if failure:
        return "Failed", ""
    return ("Successful", "") if success else ("Inconclusive", "")


def _limit(metric: Obj, field: str, default: int) -> int:
    value = metric.get(field)
    return default if value is None else int(value)


def effective_count(metric: Obj) -> int | None:
    """Metric.EffectiveCount: count; 1 when neither interval nor count; None (unbounded) with only interval."""
    if metric.get("count") is not None:
        return int(metric["count"])
    return None if metric.get("interval") else 1


def failure_inconclusive_or_error(metric: Obj, result: Obj) -> tuple[str, str]:
    """assessMetricFailureInconclusiveOrError: the limit a metric's counters violate (the last check wins)."""
    phase = message = ""
    failure_limit = _limit(metric, "failureLimit", 0)
    if failure_limit >= 0 and result.get("failed", 0) > failure_limit:
        phase, message = "Failed", f"failed ({result['failed']}) > failureLimit ({failure_limit})"
    inconclusive_limit = _limit(metric, "inconclusiveLimit", 0)
    if result.get("inconclusive", 0) > inconclusive_limit:
        phase = "Inconclusive"
        message = f"inconclusive ({result['inconclusive']}) > inconclusiveLimit ({inconclusive_limit})"
    error_limit = _limit(metric, "consecutiveErrorLimit", DEFAULT_CONSECUTIVE_ERROR_LIMIT)
    if result.get("consecutiveError", 0) > error_limit:
        phase = "Error"
        message = f"consecutiveErrors ({result['consecutiveError']}) > consecutiveErrorLimit ({error_limit})"
    return phase, message


def assess_metric(metric: Obj, result: Obj, terminating: bool) -> str:
    """assessMetricStatus."""
    if result.get("phase") in COMPLETED:
        return str(result["phase"])
    measurements = result.get("measurements") or []
    if not measurements:
        return "Successful" if terminating else "Pending"
    if measurements[-1].get("phase") not in COMPLETED:
        return "Running"
    phase, _ = failure_inconclusive_or_error(metric, result)
    if phase:
        return phase
    success_limit = _limit(metric, "consecutiveSuccessLimit", 0)
    if success_limit > 0 and result.get("consecutiveSuccess", 0) >= success_limit:
        return "Successful"
    count = effective_count(metric)
    if count is not None and result.get("count", 0) >= count:
        failure_applicable = _limit(metric, "failureLimit", 0) >= 0
        if success_limit > 0:
            return "Inconclusive" if failure_applicable else "Failed"
        return "Successful"
    return "Successful" if terminating else "Running"


def render_args(value: Any, args: dict[str, str | None]) -> Any:
    """``{{args.name}}`` replaced in every string of ``value``; KeyError naming an argument that has no value."""
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            found = args.get(match.group(1))
            if found is None:
                raise KeyError(match.group(0))
            return found

        return _ARG.sub(substitute, value)
    if isinstance(value, list):
        return [render_args(item, args) for item in value]
    if isinstance(value, dict):
        return {key: render_args(item, args) for key, item in value.items()}
    return value


def format_values(values: list[float]) -> str:
    """A vector as Argo's prometheus provider writes a measurement's value (Go's ``%v`` of a []float64)."""
    def number(value: float) -> str:
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text

    return "[" + " ".join(number(value) for value in values) + "]"


@dataclass
class _Answer:
    values: list[float] | None
    error: str = ""


class AnalysisRuns:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.finished_at: dict[tuple[str, str], float] = {}  # (run uid, metric) -> the clock at its last finish
        self.started_at: dict[str, float] = {}  # run uid -> the clock when this controller first ran it
        self.queries: dict[tuple[str, str], _Answer | None] = {}  # in-flight (None) or answered queries

    def tick(self) -> None:
        store, kinds = self.context.store, self.context.kinds
        live = set()  # the runs still measuring
        for run in store.list(kinds.analysisruns, None, lambda _: True):
            if (run.get("status") or {}).get("phase") not in COMPLETED:
                live.add(run["metadata"]["uid"])
                self._sync(run)
        for memory in (self.finished_at, self.queries):
            for key in [key for key in memory if key[0] not in live]:
                del memory[key]
        for uid in [uid for uid in self.started_at if uid not in live]:
            del self.started_at[uid]

    # --- one run ---------------------------------------------------------------------------------------------

    def _sync(self, run: Obj) -> None:
        meta, spec = run["metadata"], run.get("spec") or {}
        status = copy.deepcopy(run.get("status") or {})
        now, stamp = self.context.clock(), self.context.timestamp()
        self.started_at.setdefault(meta["uid"], now)
        status.setdefault("startedAt", stamp)
        metrics = spec.get("metrics") or []
        args = {arg.get("name"): arg.get("value") for arg in spec.get("args") or []}
        try:
            metrics = [{**metric, "provider": render_args(metric.get("provider") or {}, args)} for metric in metrics]
        except KeyError as exc:
            self._finish(run, status, "Error", f"Unable to resolve metric arguments: failed to resolve {exc.args[0]}")
            return
        if (meta.get("annotations") or {}).get(OUTCOME) in OUTCOMES:
            # The scenario decides the run: a metric that would measure until terminated is decided by its first.
            metrics = [metric if metric.get("count") is not None else {**metric, "count": 1} for metric in metrics]
        dry = {entry.get("metricName") for entry in spec.get("dryRun") or []}
        results = {result["name"]: result for result in status.get("metricResults") or []}
        terminating = self._terminating(spec, results, dry)
        for metric in metrics:
            self._measure(run, metric, results, terminating, dry)
        retention = {entry.get("metricName"): int(entry.get("limit") or MEASUREMENT_HISTORY_LIMIT)
                     for entry in spec.get("measurementRetention") or []}
        for name, result in results.items():  # garbageCollectMeasurements: the newest ones are kept
            limit = retention.get(name, MEASUREMENT_HISTORY_LIMIT)
            result["measurements"] = (result.get("measurements") or [])[-limit:]
        status["metricResults"] = [results[metric["name"]] for metric in metrics if metric["name"] in results]
        if not status["metricResults"]:
            del status["metricResults"]
        phase, message = self._assess(run, metrics, results, dry, status)
        if phase in COMPLETED:
            self._finish(run, status, phase, message)
            return
        status.update(phase=phase)
        status.pop("message", None)
        self._write(run, status)

    @staticmethod
    def _terminating(spec: Obj, results: dict[str, Obj], dry: set[Any]) -> bool:
        """analysisutil.IsTerminating: spec.terminate, or a metric (not in dry-run) Failed, Errored or Inconclusive."""
        return bool(spec.get("terminate")) or any(
            result.get("phase") in ("Failed", "Error", "Inconclusive") for name, result in results.items()
            if name not in dry)

    def _measure(self, run: Obj, metric: Obj, results: dict[str, Obj], terminating: bool, dry: set[Any]) -> None:
        name, uid = metric["name"], run["metadata"]["uid"]
        result = results.get(name)
        if result is not None and result.get("phase") in COMPLETED:
            return
        measurements = (result or {}).get("measurements") or []
        last = measurements[-1] if measurements else None
        if last is not None and "finishedAt" not in last:
            measurement = self._resume(run, metric, last, terminating)
            if measurement is None:
                return
            measurements[-1] = measurement
        elif terminating or not self._due(run, metric, result, last):
            return
        else:
            taken = (result or {}).get("count", 0) + (result or {}).get("error", 0)  # every finished measurement
            measurement = self._start(run, metric, taken)
            measurements.append(measurement)
        if result is None:
            result = results[name] = {"name": name, "phase": "Running", "measurements": measurements, "count": 0,
                                      "successful": 0, "failed": 0, "inconclusive": 0, "error": 0,
                                      "consecutiveError": 0, "consecutiveSuccess": 0, "dryRun": name in dry}
        result["measurements"] = measurements
        if measurement.get("phase") in COMPLETED:
            self.finished_at[(uid, name)] = self.context.clock()
            _count(result, measurement["phase"])

    def _due(self, run: Obj, metric: Obj, result: Obj | None, last: Obj | None) -> bool:
        """generateMetricTasks: the first measurement after initialDelay, the next one interval (or, after an
        error, the error retry interval) after the last one finished, until the count is reached."""
        now, uid = self.context.clock(), run["metadata"]["uid"]
        if last is None:
            delay = metric.get("initialDelay")
            return not delay or now >= self.started_at[uid] + duration_seconds(delay)
        count = effective_count(metric)
        if count is not None and (result or {}).get("count", 0) >= count:
            return False
        interval = ERROR_RETRY_S
        if last.get("phase") != "Error" and metric.get("interval"):
            interval = duration_seconds(metric["interval"])
        finished = self.finished_at.get((uid, metric["name"]))
        return finished is None or now >= finished + interval

    def _start(self, run: Obj, metric: Obj, taken: int) -> Obj:
        """A new measurement: completed at once, or Running while a query or a Job is under way."""
        stamp = self.context.timestamp()
        outcome = (run["metadata"].get("annotations") or {}).get(OUTCOME)
        if outcome in OUTCOMES:
            done: Obj = {"phase": outcome, "startedAt": stamp, "finishedAt": stamp, "value": ""}
            if outcome == "Error":
                done["message"] = "the scenario decided this measurement: Error"
            return done
        provider = metric.get("provider") or {}
        if "prometheus" in provider:
            self._query(run, metric)
            return {"phase": "Running", "startedAt": stamp}
        if "job" in provider:
            try:
                job = self._create_job(run, metric, taken)
            except (ApiError, ValueError) as exc:
                return {"phase": "Error", "startedAt": stamp, "finishedAt": stamp, "message": str(exc)}
            return {"phase": "Running", "startedAt": stamp,
                    "metadata": {"job-name": job["metadata"]["name"], "job-namespace": job["metadata"]["namespace"]}}
        kind = next(iter(provider), "none")
        return {"phase": "Error", "startedAt": stamp, "finishedAt": stamp,
                "message": f"provider {kind} is not simulated"}

    def _resume(self, run: Obj, metric: Obj, last: Obj, terminating: bool) -> Obj | None:
        """The in-flight measurement finished (or terminated), or None while it is still under way."""
        stamp, provider = self.context.timestamp(), metric.get("provider") or {}
        key = (run["metadata"]["uid"], metric["name"])
        if "job" in provider:
            return self._resume_job(last, terminating, stamp)
        if "prometheus" in provider:
            answer = self.queries.get(key)
            if key not in self.queries:  # lost (kubesim restarted): ask again
                self._query(run, metric)
                return None
            if answer is None:
                return None
            del self.queries[key]
            if answer.values is None:
                return {**last, "phase": "Error", "finishedAt": stamp, "message": answer.error}
            phase, message = evaluate_result(metric, answer.values)
            done = {**last, "phase": phase, "finishedAt": stamp, "value": format_values(answer.values)}
            if message:
                done["message"] = message
            return done
        return {**last, "phase": "Successful" if terminating else "Error", "finishedAt": stamp,
                "message": "Metric Terminated" if terminating else "the measurement's provider is gone"}

    def _query(self, run: Obj, metric: Obj) -> None:
        key = (run["metadata"]["uid"], metric["name"])
        prometheus = (metric.get("provider") or {}).get("prometheus") or {}
        timeout = float(prometheus.get("timeout") or DEFAULT_QUERY_TIMEOUT_S)
        self.queries[key] = None

        async def ask() -> None:
            try:
                values = await instant_query(str(prometheus.get("address") or ""), str(prometheus.get("query") or ""),
                                             timeout)
            except QueryFailed as exc:
                self.queries[key] = _Answer(None, str(exc))
            else:
                self.queries[key] = _Answer(values)

        work = ask()
        try:
            self.context.spawn(work, f"analysis query {run['metadata']['name']}/{metric['name']}")
        except RuntimeError:  # ticked by hand with no loop running: the query cannot be made
            work.close()
            self.queries[key] = _Answer(None, "kubesim makes Prometheus queries on its event loop; none is running")

    def _create_job(self, run: Obj, metric: Obj, taken: int) -> Obj:
        job_provider = metric["provider"]["job"]
        meta = run["metadata"]
        job_meta = copy.deepcopy(job_provider.get("metadata") or {})
        job_meta.update(name=f"{meta['uid']}.{metric['name']}.{taken + 1}", ownerReferences=[owner_reference(run)])
        job_meta["labels"] = {**(job_meta.get("labels") or {}), "analysisrun.argoproj.io/uid": meta["uid"]}
        job_meta["annotations"] = {**(job_meta.get("annotations") or {}),
                                   "analysisrun.argoproj.io/name": meta["name"],
                                   "analysisrun.argoproj.io/metric-name": metric["name"]}
        spec = job_provider.get("spec")
        if not isinstance(spec, dict):
            raise ValueError("provider.job.spec is missing")
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": copy.deepcopy(spec)}
        return self.context.store.create(self.context.kinds.jobs, meta["namespace"], job)

    def _resume_job(self, last: Obj, terminating: bool, stamp: str) -> Obj | None:
        store, kinds = self.context.store, self.context.kinds
        where = last.get("metadata") or {}
        try:
            job = store.get(kinds.jobs, where.get("job-namespace", ""), where.get("job-name", ""))
        except ApiError:
            return {**last, "phase": "Error", "finishedAt": stamp, "message": "the measurement's Job is gone"}
        states = {c.get("type") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
        if "Complete" in states:
            return {**last, "phase": "Successful", "finishedAt": stamp}
        if "Failed" in states:
            return {**last, "phase": "Failed", "finishedAt": stamp, "message": "Job failed"}
        if terminating:
            store.delete(kinds.jobs, job["metadata"]["namespace"], job["metadata"]["name"])
            return {**last, "phase": "Successful", "finishedAt": stamp, "message": "Metric Terminated"}
        return None

    # --- assessment ------------------------------------------------------------------------------------------

    def _assess(self, run: Obj, metrics: list[Obj], results: dict[str, Obj], dry: set[Any],
                status: Obj) -> tuple[str, str]:
        """assessRunStatus: each metric's phase, then the run's (the worst completed one once all are done)."""
        spec = run.get("spec") or {}
        terminating = self._terminating(spec, results, dry)
        worst, message = "", "Run Terminated" if spec.get("terminate") else ""
        everything_completed = True
        summary = {"count": 0, "successful": 0, "failed": 0, "inconclusive": 0, "error": 0}
        dry_summary = dict(summary)
        for metric in metrics:
            name = metric["name"]
            (dry_summary if name in dry else summary)["count"] += 1
            result = results.get(name)
            if result is None:
                everything_completed = False
                continue
            phase = assess_metric(metric, result, terminating)
            if result.get("phase") != phase:
                last = (result.get("measurements") or [{}])[-1]
                if last.get("message"):
                    result["message"] = last["message"]
                result["phase"] = phase
                if phase in COMPLETED:
                    kind = "Warning" if phase in ("Error", "Failed") else "Normal"
                    self.context.event(run, f"Metric{phase}", f"Metric '{name}' Completed. Result: {phase}", kind)
            if phase not in COMPLETED:
                everything_completed = False
                continue
            limit_phase, limit_message = failure_inconclusive_or_error(metric, result)
            tally = dry_summary if name in dry else summary
            tally[(limit_phase or "Successful").lower()] += 1
            if name in dry:
                worst = worst or "Successful"
                continue
            if not worst or worse(worst, phase):
                worst = phase
                if limit_message:
                    message = f'Metric "{name}" assessed {phase} due to {limit_message}'
                    if result.get("message"):
                        message += f': "Error Message: {result["message"]}"'
        status["runSummary"] = summary
        if dry:
            status["dryRunSummary"] = dry_summary
        if terminating:
            return worst or "Successful", message.strip()
        if not everything_completed or not worst:
            return "Running", ""
        return worst, message.strip()

    def _finish(self, run: Obj, status: Obj, phase: str, message: str) -> None:
        status.update(phase=phase, completedAt=self.context.timestamp())
        if message:
            status["message"] = message
        else:
            status.pop("message", None)
        self.context.event(run, "AnalysisRun" + phase, f"Analysis Completed. Result: {phase}",
                           "Warning" if phase in ("Error", "Failed") else "Normal")
        self._write(run, status)

    def _write(self, run: Obj, status: Obj) -> None:
        if status == run.get("status"):
            return
        meta = run["metadata"]
        body = {**run, "metadata": {key: value for key, value in meta.items() if key != "resourceVersion"},
                "status": status}
        self.context.store.replace(self.context.kinds.analysisruns, meta["namespace"], meta["name"], body, "status")


def _count(result: Obj, phase: str) -> None:
    """A completed measurement's effect on its metric's counters (runMeasurements)."""
    if phase == "Error":
        result["error"] = result.get("error", 0) + 1
        result["consecutiveError"] = result.get("consecutiveError", 0) + 1
        result["consecutiveSuccess"] = 0
        return
    result["count"] = result.get("count", 0) + 1
    result["consecutiveError"] = 0
    if phase == "Successful":
        result["successful"] = result.get("successful", 0) + 1
        result["consecutiveSuccess"] = result.get("consecutiveSuccess", 0) + 1
    else:
        key = "failed" if phase == "Failed" else "inconclusive"
        result[key] = result.get(key, 0) + 1
        result["consecutiveSuccess"] = 0
