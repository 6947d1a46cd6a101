"""kubesim's AnalysisRun controller through the official client, stepped by hand on an injected clock: Argo's limits
(failureLimit and inconclusiveLimit strictly greater, the 5th consecutive error, count reached), initialDelay,
terminate, the scenario's outcome annotation, a real Prometheus queried beside the ticks, and a Job provider."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from services.kubesim.controllers.analysis import OUTCOME
from services.kubesim.controllers.base import CRASH_LOOP, RUN_SECONDS, Settings
from services.kubesim.controllers.runner import Controllers
from services.kubesim.server import KubeApi
from tests.contract.conftest import NAMESPACE, Cluster
from tests.contract.test_kubesim_rollouts import ARGO, Sim, start_sim
from tests.prometheus_server import GaugeExporter, PrometheusServer

pytestmark = pytest.mark.kubesim_only(reason="steps kubesim's controllers by hand on an injected clock")
DEADLINE_S = 30.0
WEB = {"web": {"url": "http://127.0.0.1:9/"}}  # a provider kubesim does not simulate


@pytest.fixture
def sim(kube: Callable[..., Cluster]) -> Sim:
    return start_sim(kube)


def analysis_run(metric: dict[str, Any], outcome: str | None = None, name: str = "check",
                 **spec: Any) -> dict[str, Any]:
    annotations = {OUTCOME: outcome} if outcome else {}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"metrics": [{"name": "m", **metric}], **spec}}


def create(sim: Sim, body: dict[str, Any]) -> None:
    sim.create("analysisruns", body)


def status(sim: Sim, name: str = "check") -> dict[str, Any]:
    return sim.run_named(name).get("status") or {}


def metric_result(sim: Sim, name: str = "check") -> dict[str, Any]:
    return status(sim, name)["metricResults"][0]


def test_failure_limit_1_fails_the_metric_on_the_second_failure(sim: Sim) -> None:
    create(sim, analysis_run({"interval": "10s", "count": 5, "failureLimit": 1,
                              "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "up"}}},
                             outcome="Failed"))
    sim.tick(0.1)
    assert (status(sim)["phase"], metric_result(sim)["failed"]) == ("Running", 1)
    sim.tick(5.0)
    assert len(metric_result(sim)["measurements"]) == 1  # the interval has not passed
    sim.tick(5.5)
    found = status(sim)
    assert (found["phase"], metric_result(sim)["failed"], metric_result(sim)["phase"]) == ("Failed", 2, "Failed")
    assert found["message"] == 'Metric "m" assessed Failed due to failed (2) > failureLimit (1)'
    assert found["runSummary"] == {"count": 1, "successful": 0, "failed": 1, "inconclusive": 0, "error": 0}
    assert found["startedAt"] and found["completedAt"]
    assert [m["phase"] for m in metric_result(sim)["measurements"]] == ["Failed", "Failed"]


def test_the_fifth_consecutive_error_is_an_error(sim: Sim) -> None:
    create(sim, analysis_run({"provider": WEB}))
    sim.tick(0.1)
    for errors in range(1, 5):
        assert (status(sim)["phase"], metric_result(sim)["consecutiveError"]) == ("Running", errors)
        sim.tick(10.5)  # an errored measurement is retried after 10 s
    found, result = status(sim), metric_result(sim)
    assert (found["phase"], result["consecutiveError"], result["error"], result["count"]) == ("Error", 5, 5, 0)
    assert found["message"] == ('Metric "m" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): '
                                '"Error Message: provider web is not simulated"')
    assert result["measurements"][-1]["message"] == "provider web is not simulated"


def test_reaching_the_count_is_successful(sim: Sim) -> None:
    create(sim, analysis_run({"interval": "5s", "count": 3, "provider": WEB}, outcome="Successful"))
    sim.tick(0.1)
    sim.tick(5.5)
    assert (status(sim)["phase"], metric_result(sim)["count"]) == ("Running", 2)
    sim.tick(5.5)
    found, result = status(sim), metric_result(sim)
    assert (found["phase"], result["phase"], result["count"], result["successful"]) == ("Successful", "Successful",
                                                                                         3, 3)
    assert result["consecutiveSuccess"] == 3 and "message" not in found
    assert found["runSummary"] == {"count": 1, "successful": 1, "failed": 0, "inconclusive": 0, "error": 0}
    sim.tick(60.0)
    assert len(metric_result(sim)["measurements"]) == 3  # a completed run takes no more


def test_a_metric_that_runs_until_terminated_keeps_its_last_ten_measurements(sim: Sim) -> None:
    create(sim, analysis_run({"interval": "1s", "consecutiveErrorLimit": 100, "provider": WEB}))
    for _ in range(14):
        sim.tick(10.5)
    result = metric_result(sim)
    assert (status(sim)["phase"], result["error"], len(result["measurements"])) == ("Running", 14, 10)


def test_inconclusive_past_its_limit_is_inconclusive(sim: Sim) -> None:
    create(sim, analysis_run({"interval": "1s", "count": 5, "inconclusiveLimit": 1, "provider": WEB},
                             outcome="Inconclusive"))
    sim.tick(0.1)
    assert status(sim)["phase"] == "Running"
    sim.tick(1.5)
    found = status(sim)
    assert found["phase"] == "Inconclusive"
    assert found["message"] == 'Metric "m" assessed Inconclusive due to inconclusive (2) > inconclusiveLimit (1)'


def test_the_first_measurement_waits_for_the_initial_delay(sim: Sim) -> None:
    create(sim, analysis_run({"initialDelay": "30s", "provider": WEB}, outcome="Successful"))
    sim.tick(0.1)
    sim.tick(20.0)
    assert (status(sim)["phase"], status(sim).get("metricResults")) == ("Running", None)
    sim.tick(10.5)
    assert status(sim)["phase"] == "Successful"


def test_terminate_ends_a_run_that_measures_until_stopped(sim: Sim) -> None:
    create(sim, analysis_run({"interval": "1m", "successCondition": "result[0] < 1", "provider": WEB},
                             outcome="Successful", name="open"))
    create(sim, analysis_run({"interval": "1m", "provider": WEB}, name="endless"))
    sim.tick(0.1)
    sim.custom.patch_namespaced_custom_object(*ARGO, NAMESPACE, "analysisruns", "endless",
                                              {"spec": {"terminate": True}})
    sim.tick(0.1)
    assert (status(sim, "endless")["phase"], status(sim, "endless")["message"]) == ("Successful", "Run Terminated")
    # the scenario's outcome decides a metric with only an interval at its first measurement
    assert status(sim, "open")["phase"] == "Successful"


def test_an_argument_with_no_value_is_an_error(sim: Sim) -> None:
    create(sim, analysis_run({"provider": {"prometheus": {"address": "http://127.0.0.1:9",
                                                          "query": "up{job='{{args.job}}'}"}}},
                             args=[{"name": "job"}]))
    sim.tick(0.1)
    found = status(sim)
    assert (found["phase"], found["message"]) == ("Error",
                                                  "Unable to resolve metric arguments: failed to resolve {{args.job}}")


def test_a_job_metric_is_successful_when_its_job_completes(sim: Sim) -> None:
    job = {"metadata": {"annotations": {RUN_SECONDS: "3"}},
           "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never",
                                                             "containers": [{"name": "check", "image": "q:1"}]}}}}
    create(sim, analysis_run({"provider": {"job": job}}))
    sim.tick(0.1)
    assert metric_result(sim)["measurements"][0]["phase"] == "Running"
    found = _jobs(sim)
    assert len(found) == 1 and found[0]["metadata"]["ownerReferences"][0]["kind"] == "AnalysisRun"
    sim.tick(1.1, times=5)
    assert status(sim)["phase"] == "Successful"


def test_a_job_metric_fails_when_its_job_fails_and_a_terminated_one_deletes_its_job(sim: Sim) -> None:
    failing = {"spec": {"backoffLimit": 0, "template": {
        "metadata": {"annotations": {CRASH_LOOP: "true"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "check", "image": "q:1"}]}}}}
    create(sim, analysis_run({"provider": {"job": failing}}))
    slow = {"metadata": {"annotations": {RUN_SECONDS: "600"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "q:1"}]}}}}
    create(sim, analysis_run({"provider": {"job": slow}}, name="slow"))
    sim.tick(1.1, times=5)
    found = status(sim)
    assert (found["phase"], metric_result(sim)["measurements"][0]["message"]) == ("Failed", "Job failed")
    assert len(_jobs(sim)) == 2
    sim.custom.patch_namespaced_custom_object(*ARGO, NAMESPACE, "analysisruns", "slow", {"spec": {"terminate": True}})
    sim.tick()
    measurement = metric_result(sim, "slow")["measurements"][0]
    assert (status(sim, "slow")["phase"], measurement["phase"], measurement["message"]) == (
        "Successful", "Successful", "Metric Terminated")
    assert len(_jobs(sim)) == 1


def _jobs(sim: Sim) -> list[dict[str, Any]]:
    batch = client.BatchV1Api(sim.cluster.admin)
    return [sim.cluster.admin.sanitize_for_serialization(item) for item in batch.list_namespaced_job(NAMESPACE).items]


def test_a_query_with_no_loop_running_is_an_error_measurement_not_a_failed_tick() -> None:
    """Controllers ticked by hand outside kubesim's loop (as a unit test or a scenario check does)."""
    now = [0.0]
    api = KubeApi({})
    runner = Controllers(api.store, api.registry, Settings(), clock=lambda: now[0])
    api.store.create(runner.context.kinds.analysisruns, "default", analysis_run(
        {"provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "up"}}}))
    runner.tick()
    runner.tick()
    found = api.store.get(runner.context.kinds.analysisruns, "default", "check")["status"]["metricResults"][0]
    assert found["measurements"][0]["phase"] == "Error"
    assert "none is running" in found["measurements"][0]["message"]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[tuple[GaugeExporter, PrometheusServer]]:
    with GaugeExporter() as gauges:
        gauges.set("queue_depth", 7)
        with PrometheusServer([gauges.target], scrape_interval_s=0.5) as running:
            running.wait_for("queue_depth", lambda values: values == [7.0])
            yield gauges, running


def tick_until(sim: Sim, done: Any, what: str) -> None:
    """Ticks (a query runs beside the ticks on kubesim's loop) until ``done()`` holds or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        sim.tick(0.1)
        time.sleep(0.05)


def test_a_prometheus_metric_is_measured_from_a_real_query(sim: Sim,
                                                           prometheus: tuple[GaugeExporter, PrometheusServer]) -> None:
    _, server = prometheus
    metric = {"successCondition": "result[0] < 10", "failureCondition": "result[0] > 50",
              "provider": {"prometheus": {"address": server.url, "query": "{{args.gauge}}"}}}
    create(sim, analysis_run(metric, args=[{"name": "gauge", "value": "queue_depth"}]))
    tick_until(sim, lambda: status(sim).get("phase") == "Successful", "a Successful run")
    measurement = metric_result(sim)["measurements"][0]
    assert (measurement["phase"], measurement["value"]) == ("Successful", "[7]")
    unreachable = {"provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "queue_depth"}}}
    create(sim, analysis_run(unreachable, name="down"))
    tick_until(sim, lambda: bool(status(sim, "down").get("metricResults", [{}])[0].get("error")), "an error")
    measurement = metric_result(sim, "down")["measurements"][0]
    assert measurement["phase"] == "Error" and "cannot reach Prometheus at http://127.0.0.1:9" in measurement["message"]
