"""The ``job`` runner: ``vllm bench serve`` in a Kubernetes Job next to the serving pods, through the official client.

The Job's container runs ``vllm bench serve`` with the flags the ``vllm`` runner uses (``bench_args``), then
prints the result file between two marker lines, so the result is read from the pod's log; the log is streamed
into progress as it comes. The key never leaves the cluster: when the spec names a key variable (``api_key_env``),
the pod's OPENAI_API_KEY comes from the Secret ``key_secret`` (default "switchboard-bench"), under a key of that
variable's name, which the operator creates once (``kubectl create secret generic switchboard-bench
--from-literal=SB_KEY=...``); a missing one fails the run at once (CreateContainerConfigError). The Job
(propagationPolicy Background, so its pod goes too) is deleted when the run ends, fails or is cancelled;
``ttlSecondsAfterFinished`` cleans up after a runner that died.

Only the random dataset: a prompts file on this machine is not inside the pod. A local tokenizer is not either,
so the pod tokenizes with the model id the server reports (a Hugging Face id on a real deployment).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.bench.result import BenchResult, ResultError, parse_vllm_result
from services.bench.runner_vllm import OutputWatcher, bench_args
from services.bench.runners import ProgressCallback
from services.bench.spec import BenchSpec, RandomDataset

DEFAULT_IMAGE = "vllm/vllm-openai:v0.32.0"  # the vLLM the GPU backend pins (services/backend/install.py)
CONTAINER = "bench"
RESULT_DIR = "/tmp/switchboard-bench"
BEGIN, END = "=== switchboard bench result begin ===", "=== switchboard bench result end ==="
# The image's entrypoint is `vllm serve`, so the command replaces it; "$@" carries bench_args unquoted by no shell.
SCRIPT = (f'vllm bench serve "$@" || exit $?; echo "{BEGIN}"; tr -d "\\n" < {RESULT_DIR}/result.json; echo; '
          f'echo "{END}"')
LABELS = {"app.kubernetes.io/name": "switchboard-bench", "app.kubernetes.io/managed-by": "switchboard"}
KEY_SECRET = "switchboard-bench"
TTL_AFTER_FINISHED_S = 3600
ACTIVE_DEADLINE_S = 6 * 3600  # vLLM's own session timeout
POLL_S = 1.0
# A pod waiting for one of these will not start without someone changing something: the run fails at once.
STUCK_REASONS = ("ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError")
NAMESPACE_ENV, IMAGE_ENV = "SWITCHBOARD_BENCH_JOB_NAMESPACE", "SWITCHBOARD_BENCH_JOB_IMAGE"
KEY_SECRET_ENV = "SWITCHBOARD_BENCH_JOB_KEY_SECRET"


class JobBenchError(RuntimeError):
    """The Job could not run or printed no result; the message says why, with the log's tail when there is one."""


def job_args(spec: BenchSpec) -> list[str]:
    """``bench_args`` for the pod; refuses what the pod cannot reach (a file dataset)."""
    if not isinstance(spec.dataset, RandomDataset):
        raise JobBenchError(f"the job runner takes the random dataset only: a {spec.dataset.kind} file on this "
                            "machine is not inside the pod (use the vllm or builtin runner)")
    if spec.tokenizer is not None and Path(spec.tokenizer).expanduser().exists():
        spec = spec.model_copy(update={"tokenizer": None})  # a local file: the pod uses the server's model id
    return bench_args(spec, RESULT_DIR)


def job_manifest(spec: BenchSpec, name: str, image: str = DEFAULT_IMAGE, key_secret: str = KEY_SECRET) -> dict:
    """The Job that runs one benchmark. Pure."""
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"},
                                 {"name": "VLLM_NO_USAGE_STATS", "value": "1"}]
    if spec.api_key_env is not None:
        env.append({"name": "OPENAI_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": key_secret, "key": spec.api_key_env}}})
    container = {
        "name": CONTAINER, "image": image, "command": ["/bin/sh", "-c", SCRIPT, "vllm-bench", *job_args(spec)],
        "env": env, "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
    }  # fmt: skip
    labels = {**LABELS, "switchboard.dev/bench-run": name}
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a second attempt would be another run, not this one
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_S,
            "template": {"metadata": {"labels": labels},
                         "spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }  # fmt: skip


def result_from_log(text: str) -> dict[str, Any]:
    """The result JSON the Job printed between the markers (the last block, should there be several)."""
    lines = text.splitlines()
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    if not begins:
        raise ResultError("the log has no result: vllm bench serve did not finish")
    body = []
    for line in lines[begins[-1] + 1 :]:
        if line.strip() == END:
            break
        body.append(line)
    else:
        raise ResultError("the log's result is cut short (no end marker)")
    try:
        data = json.loads("".join(body))
    except ValueError as exc:
        raise ResultError(f"the log's result is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultError("the log's result is not a JSON object")
    return data


class _LogCapture:
    """Each log line once: the result block is kept aside; every other line goes to the watcher (progress)."""

    def __init__(self, watcher: OutputWatcher) -> None:
        self.watcher = watcher
        self.lines: list[str] = []
        self.in_result = False

    def line(self, line: str) -> None:
        self.lines.append(line)
        stripped = line.strip()
        if stripped == BEGIN:
            self.in_result = True
        elif stripped == END:
            self.in_result = False
        elif not self.in_result:
            self.watcher.feed(line + "\n")


class JobRunner:
    """Runs the benchmark as a Job in ``namespace`` (``$SWITCHBOARD_BENCH_JOB_NAMESPACE``, else "default") with
    ``image`` (``$SWITCHBOARD_BENCH_JOB_IMAGE``, else ``DEFAULT_IMAGE``) and the key from the Secret ``key_secret``
    (``$SWITCHBOARD_BENCH_JOB_KEY_SECRET``, else "switchboard-bench"); ``api_client`` defaults to the current
    kubeconfig context (or the in-cluster config)."""

    name = "job"

    def __init__(self, api_client: Any = None, namespace: str | None = None, image: str | None = None,
                 key_secret: str | None = None, poll_s: float = POLL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api_client = api_client
        self.namespace = namespace or os.environ.get(NAMESPACE_ENV) or "default"
        self.image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        self.key_secret = key_secret or os.environ.get(KEY_SECRET_ENV) or KEY_SECRET
        self.poll_s, self.clock = poll_s, clock
        self.job_name: str | None = None  # the Job of the run in progress

    def _client(self) -> Any:
        if self._api_client is None:
            from kubernetes import config

            try:
                self._api_client = config.new_client_from_config()
            except config.ConfigException:
                config.load_incluster_config()
                from kubernetes import client

                self._api_client = client.ApiClient()
        return self._api_client

    async def run(self, spec: BenchSpec, progress: ProgressCallback | None = None,
                  cancel: asyncio.Event | None = None) -> BenchResult:
        name = f"switchboard-bench-{uuid.uuid4().hex[:10]}"
        manifest = job_manifest(spec, name, self.image, self.key_secret)
        watcher = OutputWatcher(spec, progress, self.clock)
        capture = _LogCapture(watcher)
        say = watcher.line
        api = _Api(self._client(), self.namespace)
        self.job_name = name
        try:
            await asyncio.to_thread(api.create, manifest)
            say(f"job {self.namespace}/{name} created ({self.image})")
            pod = await self._wait_for_pod(api, name, cancel)
            if pod is None:
                return self._cancelled(spec, watcher)
            say(f"pod {pod} started; its log follows")
            stop = threading.Event()
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def follow() -> None:
                try:
                    api.follow_log(pod, lambda line: loop.call_soon_threadsafe(capture.line, line), stop, self.poll_s)
                    loop.call_soon_threadsafe(_settle, done, None)
                except Exception as exc:  # handed to the event loop, raised there
                    loop.call_soon_threadsafe(_settle, done, exc)

            threading.Thread(target=follow, name=f"log-{name}", daemon=True).start()
            waiting = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
            try:
                await asyncio.wait({done, *([waiting] if waiting else [])}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if waiting is not None:
                    waiting.cancel()
            if not done.done():
                stop.set()
                return self._cancelled(spec, watcher)
            await done  # raises what the log reader met
            watcher.close()
            failure = await asyncio.to_thread(api.failure, name)
            text = "\n".join(capture.lines)
            try:
                data = result_from_log(text)
            except ResultError as exc:
                tail = "\n".join(list(watcher.lines)[-30:])
                raise JobBenchError(f"job {name} {failure or 'ended'}; {exc}. Its log ended:\n{tail}") from None
            result = parse_vllm_result(data, spec=spec, runner=self.name, base_url=spec.base_url)
            return result.model_copy(update={"log": watcher.log()})
        finally:
            self.job_name = None
            await asyncio.to_thread(api.delete, name)

    async def _wait_for_pod(self, api: _Api, name: str, cancel: asyncio.Event | None) -> str | None:
        """The Job's pod once it has left Pending (its log can be read), or None when cancelled first."""
        while True:
            found = await asyncio.to_thread(api.started_pod, name)
            if found is not None:
                return found
            failure = await asyncio.to_thread(api.failure, name)
            if failure is not None:
                raise JobBenchError(f"job {name} {failure} before its pod started")
            stuck = await asyncio.to_thread(api.stuck, name)
            if stuck is not None:
                raise JobBenchError(f"job {name}'s pod cannot start: {stuck}")
            if cancel is not None:
                try:
                    await asyncio.wait_for(cancel.wait(), self.poll_s)
                    return None
                except TimeoutError:
                    continue
            await asyncio.sleep(self.poll_s)

    def _cancelled(self, spec: BenchSpec, watcher: OutputWatcher) -> BenchResult:
        return BenchResult(spec=spec, runner=self.name, cancelled=True, log=watcher.log(),
                           metrics={"completed": watcher.done, "failed": 0})


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class _Api:
    """The Kubernetes calls of one run (blocking; the runner calls them from threads)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.client, self.namespace = client, namespace
        self.core, self.batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)

    def create(self, manifest: dict) -> None:
        self.batch.create_namespaced_job(self.namespace, manifest)

    def _pods(self, name: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items)

    def started_pod(self, name: str) -> str | None:
        for pod in self._pods(name):
            if pod.status is not None and pod.status.phase in ("Running", "Succeeded", "Failed"):
                return str(pod.metadata.name)
        return None

    def stuck(self, name: str) -> str | None:
        """Why the Job's pod cannot start ("ImagePullBackOff: ..."), or None."""
        for pod in self._pods(name):
            for status in (pod.status and pod.status.container_statuses) or []:
                waiting = status.state and status.state.waiting
                if waiting is not None and waiting.reason in STUCK_REASONS:
                    return f"{waiting.reason}: {waiting.message or ''}".rstrip(": ")
        return None

    def finished(self, pod: str) -> bool:
        found = self.core.read_namespaced_pod(pod, self.namespace)
        return found.status is not None and found.status.phase in ("Succeeded", "Failed")

    def failure(self, name: str) -> str | None:
        """Why the Job failed ("failed: BackoffLimitExceeded: ..."), or None."""
        status = self.batch.read_namespaced_job_status(name, self.namespace).status
        for condition in (status and status.conditions) or []:
            if condition.type == "Failed" and condition.status == "True":
                return f"failed: {condition.reason}: {condition.message}"
        return None

    def follow_log(self, pod: str, on_line: Callable[[str], None], stop: threading.Event, poll_s: float) -> None:
        """Every line of the container's log once, as it comes, until the pod has finished.

        A follow stream ends when the container does, or earlier (a server that closes it, a dropped connection);
        then the log is read again and the lines already seen skipped, until a read made after the pod finished.
        """
        seen = 0
        while True:
            finished = self.finished(pod)
            response = self.core.read_namespaced_pod_log(pod, self.namespace, container=CONTAINER,
                                                         follow=not finished, _preload_content=False)
            count, partial = 0, ""
            try:
                for chunk in response.stream(4096):
                    pieces = (partial + chunk.decode(errors="replace")).split("\n")
                    partial = pieces.pop()
                    for line in pieces:
                        count += 1
                        if count > seen:
                            on_line(line)
                            seen = count
                    if stop.is_set():
                        return
            finally:
                response.release_conn()
            if finished:
                if partial:
                    on_line(partial)
                return
            if stop.wait(poll_s):
                return

    def delete(self, name: str) -> None:
        """propagationPolicy Background: the Job goes at once, its pod after it (a 404 is fine: already gone)."""
        from kubernetes.client.rest import ApiException

        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise
