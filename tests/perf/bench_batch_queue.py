"""Batch queue benchmark: requests per second through one and two ``switchboard worker`` processes, and the queue's
own cost per request.

Setup, each part its own process on loopback: a redis-server (append-only, ``appendfsync always`` as the tests run
it), a stand-in OpenAI upstream that answers at once (``python -m tests.standins``), and a gateway
(``switchboard gateway``, open mode, the batch queue on that Redis, a worker token).

Measured:

* ``queue``: the Redis work of one request without HTTP, in this process on one connection pool: the batch is
  queued through the store (XADD), then 16 coroutines read entries (XREADGROUP) and for each do what a worker does
  around its HTTP call: ``batch_status``, ``attempt``, ``record_result``, XACK + XDEL, ``maybe_finalize``. Printed as
  microseconds per request, the rate that allows, and the CPU of this process and of Redis per request; XADD is
  timed on its own too. Once with ``appendfsync always`` (what the tests run) and once with ``everysec`` (Redis's
  default, what a deployment runs).
* ``worker_inproc``: the real ``Worker`` loop with an in-process HTTP transport that answers 200 at once
  (httpx.MockTransport): the worker's whole cost with no network and no gateway.
* ``workers_1`` and ``workers_2``: a batch through the gateway with one, then two worker processes (concurrency 16
  each); requests/s from the first worker's start to the batch's completion, and the CPU each process used per
  request.

The 2-core machine is shared: the gateway, the stand-in, Redis and the workers compete for the same cores, so
``workers_2`` shows whether the queue or the rest is the limit rather than a scaling law. It prints the figures and
ratios (no pass/fail) and writes ``tests/perf/results/batch-queue-<UTC time>.json`` and ``batch-queue-latest.json``::

    python tests/perf/bench_batch_queue.py            # about 1 minute
    python tests/perf/bench_batch_queue.py --quick    # fewer requests, rough figures
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RESULTS_DIR = HERE / "results"
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402
import yaml  # noqa: E402

from services.batch.store import GROUP, BatchStore, QueuedRequest  # noqa: E402
from services.gateway.config import parse_config  # noqa: E402
from services.worker.loop import Worker, WorkerOptions  # noqa: E402
from services.worker.metrics import WorkerMetrics  # noqa: E402
from tests.batch_workers import WORKER_TOKEN, WORKER_TOKEN_ENV, batch_config  # noqa: E402
from tests.perf.procstat import cpu_seconds, machine_info, ratio, save_result  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.server_process import free_port  # noqa: E402

CHAT = "/v1/chat/completions"
CONCURRENCY = 16
COMPLETION = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def requests(n: int) -> list[QueuedRequest]:
    return [QueuedRequest(f"r{i}", json.dumps({"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}))
            for i in range(n)]


async def enqueue(store: BatchStore, n: int) -> tuple[str, float]:
    began = time.perf_counter()
    batch = await store.enqueue(owner="", owner_name=None, input_file_id="file-bench", endpoint=CHAT,
                                requests=requests(n))
    return str(batch["id"]), time.perf_counter() - began


async def queue_only(settings: Any, n: int, redis_pid: int, fsync: str) -> dict[str, Any]:
    """The Redis work per request a worker does, without HTTP, with Redis's AOF fsync policy set to ``fsync``."""
    store = BatchStore.from_url(settings.redis_url, settings)
    await store.redis.config_set("appendfsync", fsync)
    batch_id, xadd_s = await enqueue(store, n)
    stream = store.stream_key("chat")
    left = [n]

    async def consumer(name: str) -> None:
        while left[0] > 0:
            reply = await store.redis.xreadgroup(GROUP, name, {stream: ">"}, count=8, block=100)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    custom_id = fields[b"custom_id"].decode()
                    await store.batch_status(batch_id)
                    await store.attempt(batch_id, custom_id)
                    line = {"id": "x", "custom_id": custom_id, "response": {"status_code": 200, "body": COMPLETION},
                            "error": None}
                    await store.record_result(batch_id, custom_id, line, True)
                    async with store.redis.pipeline(transaction=True) as pipe:
                        pipe.xack(stream, GROUP, entry_id)
                        pipe.xdel(stream, entry_id)
                        await pipe.execute()
                    await store.maybe_finalize(batch_id)
                    left[0] -= 1

    began, cpu_before, redis_before = time.perf_counter(), time.process_time(), cpu_seconds(redis_pid)
    await asyncio.gather(*(consumer(f"c{i}") for i in range(CONCURRENCY)))
    elapsed = time.perf_counter() - began
    client_cpu, redis_cpu = time.process_time() - cpu_before, cpu_seconds(redis_pid) - redis_before
    status = await store.batch_status(batch_id)
    await store.redis.config_set("appendfsync", "always")
    await store.aclose()
    assert status == "completed", status
    return {"requests": n, "appendfsync": fsync, "xadd_us_per_request": round(xadd_s / n * 1e6, 1),
            "process_us_per_request": round(elapsed / n * 1e6, 1), "requests_per_s": round(n / elapsed, 1),
            "client_cpu_us_per_request": round(client_cpu / n * 1e6, 1),
            "redis_cpu_us_per_request": round(redis_cpu / n * 1e6, 1)}


async def worker_inproc(settings: Any, n: int) -> dict[str, Any]:
    """The Worker loop itself with an HTTP transport that answers at once in this process."""
    store = BatchStore.from_url(settings.redis_url, settings)
    batch_id, _ = await enqueue(store, n)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=COMPLETION))
    async with httpx.AsyncClient(transport=transport) as http:
        options = WorkerOptions(name="inproc", concurrency=CONCURRENCY, block_ms=100)
        worker = Worker(store, settings, http, "http://gateway.invalid", WORKER_TOKEN, options, WorkerMetrics())
        began = time.perf_counter()
        task = asyncio.create_task(worker.run())
        while True:  # the store has no completion event to wait on: poll it
            if await store.batch_status(batch_id) == "completed":
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - began
        worker.stop.set()
        await task
    await store.aclose()
    return {"requests": n, "us_per_request": round(elapsed / n * 1e6, 1), "requests_per_s": round(n / elapsed, 1)}


def through_gateway(cfg_path: Path, gateway_url: str, settings: Any, n: int, workers: int,
                    workdir: Path, pids: dict[str, int]) -> dict[str, Any]:
    store_client = redis.Redis.from_url(settings.redis_url)
    batch_id = asyncio.run(_enqueue_once(settings, n))
    executable = shutil.which("switchboard", path=os.path.dirname(sys.executable))
    assert executable, "the switchboard console script is missing: pip install -e ."
    procs = []
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.perf_counter()
    for i in range(workers):
        log = open(workdir / f"worker-{workers}-{i}.log", "ab")
        procs.append(subprocess.Popen([executable, "worker", "--config", str(cfg_path), "--gateway-url", gateway_url,
                                       "--token-env", WORKER_TOKEN_ENV, "--name", f"bench-{workers}-{i}",
                                       "--concurrency", str(CONCURRENCY)], stdout=log, stderr=subprocess.STDOUT))
    key = f"{settings.prefix}:batch:{batch_id}"
    while store_client.hget(key, "status") != b"completed":
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a worker exited; see {workdir}")
        time.sleep(0.01)
    elapsed = time.perf_counter() - began
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    worker_cpu = sum(cpu_seconds(p.pid) for p in procs)
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=60)
    store_client.close()
    per_request = {name: round(seconds / n * 1e3, 3) for name, seconds in used.items()}
    per_request["workers"] = round(worker_cpu / n * 1e3, 3)
    return {"requests": n, "workers": workers, "elapsed_s": round(elapsed, 2), "requests_per_s": round(n / elapsed, 1),
            "cpu_ms_per_request": per_request}


async def _enqueue_once(settings: Any, n: int) -> str:
    store = BatchStore.from_url(settings.redis_url, settings)
    try:
        return (await enqueue(store, n))[0]
    finally:
        await store.aclose()


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer at {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests: rough figures")
    parser.add_argument("--requests", type=int, default=None, help="requests per measurement")
    args = parser.parse_args()
    n = args.requests or (500 if args.quick else 2000)
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-batch-"))
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"utc": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), "machine": machine_info()}
    with RedisServer() as redis_server:
        try:
            up_port, gw_port = free_port(), free_port()
            standin = start([sys.executable, "-m", "tests.standins", "--kind", "openai", "--port", str(up_port),
                             "--name", "bench"], workdir / "standin.log")
            procs.append(standin)
            up_url = f"http://127.0.0.1:{up_port}"
            wait_http(up_url + "/v1/models", standin, "the stand-in")
            cfg = batch_config(up_url, redis_server.url, batch={"prefix": "bench:batch"},
                               server={"port": gw_port, "log_level": "warning"})
            cfg_path = workdir / "gateway.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            settings = parse_config(cfg, str(cfg_path)).batch
            executable = shutil.which("switchboard", path=os.path.dirname(sys.executable))
            assert executable, "the switchboard console script is missing: pip install -e ."
            gateway = start([executable, "gateway", "--config", str(cfg_path)], workdir / "gateway.log")
            procs.append(gateway)
            gateway_url = f"http://127.0.0.1:{gw_port}"
            wait_http(gateway_url + "/health", gateway, "the gateway")
            assert redis_server.proc is not None
            pids = {"gateway": gateway.pid, "standin": standin.pid, "redis": redis_server.proc.pid}

            result["queue"] = asyncio.run(queue_only(settings, n, redis_server.proc.pid, "always"))
            result["queue_everysec"] = asyncio.run(queue_only(settings, n, redis_server.proc.pid, "everysec"))
            result["worker_inproc"] = asyncio.run(worker_inproc(settings, n))
            result["workers_1"] = through_gateway(cfg_path, gateway_url, settings, n, 1, workdir, pids)
            result["workers_2"] = through_gateway(cfg_path, gateway_url, settings, n, 2, workdir, pids)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
    report(result)
    save_result(RESULTS_DIR, "batch-queue", result)
    return 0


def report(result: dict[str, Any]) -> None:
    queue, inproc, one, two = result["queue"], result["worker_inproc"], result["workers_1"], result["workers_2"]
    for row in (queue, result["queue_everysec"]):
        print(f"queue only (Redis, no HTTP, appendfsync {row['appendfsync']}): {row['process_us_per_request']} "
              f"us/request wall ({row['requests_per_s']} requests/s from one process, 16 at a time); CPU "
              f"{row['client_cpu_us_per_request']} us client + {row['redis_cpu_us_per_request']} us redis; XADD "
              f"{row['xadd_us_per_request']} us/request")
    print(f"worker loop, in-process HTTP: {inproc['us_per_request']} us/request "
          f"({inproc['requests_per_s']} requests/s)")
    for row in (one, two):
        cpu = ", ".join(f"{name} {ms} ms" for name, ms in row["cpu_ms_per_request"].items())
        print(f"{row['workers']} worker(s) through the gateway: {row['requests_per_s']} requests/s "
              f"({row['requests']} in {row['elapsed_s']} s); CPU per request: {cpu}")
    print(f"two workers vs one: {ratio(two['requests_per_s'], one['requests_per_s'])}")
    print(f"queue alone vs one worker through the gateway: {ratio(queue['requests_per_s'], one['requests_per_s'])}")
    print(f"worker loop alone vs through the gateway: {ratio(inproc['requests_per_s'], one['requests_per_s'])}")


if __name__ == "__main__":
    sys.exit(main())
