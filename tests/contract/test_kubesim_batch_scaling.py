"""The shipped batch-worker Deployment and KEDA ScaledObject (services/worker/*.yaml): valid against the KEDA CRD in
../shared/crds, and in kubesim, whose KEDA controller reads the real Redis the batch queue is on, the Deployment
scales up on 500 queued requests and back down to its minimum once a real ``switchboard worker`` has drained them
and the stabilization window has passed (kubesim's clock is stepped; the worker and Redis run in real time)."""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

import services.worker
from services.batch.store import BatchStore, QueuedRequest
from services.kubesim.validation import CRD_FILES, crd_text
from tests.batch_workers import WorkerProcess, batch_config
from tests.contract.conftest import NAMESPACE, Cluster
from tests.contract.test_kubesim_keda import Sim
from tests.gateway_harness import RunningGateway
from tests.redis_server import RedisServer
from tests.waiting import wait_for

pytestmark = pytest.mark.kubesim_only(reason="steps kubesim's KEDA and HPA controllers on an injected clock")
SHARED_CRDS = Path(__file__).resolve().parents[2].parent / "shared" / "crds"
KEDA_CRD = CRD_FILES[("keda.sh", "scaledobjects")]
WORKER_DIR = Path(services.worker.__file__).parent


def shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKER_DIR / name).read_text())


def keda_schema() -> dict[str, Any]:
    """The ScaledObject schema from ../shared/crds (the packaged copy equals it; a test of its own checks that)."""
    path = SHARED_CRDS / KEDA_CRD
    crd = yaml.safe_load(path.read_text() if path.is_file() else crd_text(KEDA_CRD))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


def test_the_shipped_scaledobject_is_valid_against_the_keda_crd() -> None:
    scaled = shipped("keda-scaledobject.yaml")
    validator = jsonschema.Draft7Validator(keda_schema())
    assert list(validator.iter_errors(scaled)) == []
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == shipped("worker-deployment.yaml")["metadata"]["name"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 20)  # the seed's ai-api HPA
    assert spec["cooldownPeriod"] > 0
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    streams = {t["metadata"]["stream"] for t in spec["triggers"]}
    assert streams == {"switchboard:batch:stream:chat", "switchboard:batch:stream:completions"}
    assert all(t["type"] == "redis-streams" and "streamLength" in t["metadata"] and "consumerGroup" not in
               t["metadata"] for t in spec["triggers"])
    broken = copy.deepcopy(scaled)
    broken["spec"]["minReplicaCount"] = "two"
    assert list(validator.iter_errors(broken))  # the check can fail


@pytest.fixture
def sim(kube: Callable[..., Cluster]) -> Sim:
    return Sim(kube)


def in_test(redis_server: RedisServer, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shipped objects in the test's namespace, the triggers pointed at the test's Redis and prefix."""
    deployment, scaled = shipped("worker-deployment.yaml"), shipped("keda-scaledobject.yaml")
    for obj in (deployment, scaled):
        obj["metadata"]["namespace"] = NAMESPACE
    for trigger in scaled["spec"]["triggers"]:
        trigger["metadata"]["address"] = f"127.0.0.1:{redis_server.port}"
        trigger["metadata"]["stream"] = trigger["metadata"]["stream"].replace("switchboard:batch", prefix)
    return deployment, scaled


def queue(gw: RunningGateway, n: int) -> str:
    async def main() -> str:
        settings = gw.config.batch
        assert settings.redis_url
        store = BatchStore.from_url(settings.redis_url, settings)
        try:
            requests = [QueuedRequest(f"req-{i}", json.dumps({"model": "m", "messages": [
                {"role": "user", "content": f"q{i}"}]})) for i in range(n)]
            batch = await store.enqueue(owner="", owner_name=None, input_file_id="file-test",
                                        endpoint="/v1/chat/completions", requests=requests)
            return str(batch["id"])
        finally:
            await store.aclose()

    return asyncio.run(main())


def test_the_workers_scale_up_on_the_backlog_and_back_down_once_it_is_drained(
        sim: Sim, redis_server: RedisServer, standin, gateway, tmp_path: Path) -> None:
    prefix = "keda" + secrets.token_hex(3) + ":batch"
    up = standin(name="up")
    config = batch_config(up.url, redis_server.url, batch={"prefix": prefix})
    gw = gateway(config)
    deployment, scaled = in_test(redis_server, prefix)
    sim.cluster.apps.create_namespaced_deployment(NAMESPACE, deployment)
    assert sim.replicas("batch-worker") == 2
    batch_id = queue(gw, 500)
    stream = f"{prefix}:stream:chat"
    assert redis.Redis.from_url(redis_server.url).xlen(stream) == 500

    sim.create(scaled)
    sim.settle(lambda: sim.scaled("batch-worker").get("status", {}).get("hpaName") == "keda-hpa-batch-worker",
               "the generated HPA")
    chat_metric = sim.hpa("keda-hpa-batch-worker").spec.metrics[0].external.metric.name
    sim.settle(lambda: sim.value(chat_metric) == 500, "the stream's length on the board")
    sync = sim.cluster.sim.controller_settings.hpa_sync  # type: ignore[union-attr]
    for _ in range(3):  # the shipped scale-up: +100% or +4 pods per 15 s, whichever is more: 2 -> 6 -> 10
        sim.tick(sync)
    sim.settle(lambda: sim.replicas("batch-worker") == 10, "ceil(500 / 50) = 10 workers")

    worker = WorkerProcess(config, gw.url, str(tmp_path), concurrency=16)
    worker.start()
    try:
        wait_for("the backlog drained by a real worker", lambda: redis.Redis.from_url(redis_server.url).xlen(stream)
                 == 0 or not worker.alive, within_s=300)
        assert worker.alive, worker.log()[-2000:]
        assert worker.terminate() == 0
    finally:
        worker.close()
    assert len(up.requests) >= 500
    status = redis.Redis.from_url(redis_server.url).hget(f"{prefix}:batch:{batch_id}", "status")
    assert status == b"completed"

    sim.tick(scaled["spec"]["pollingInterval"])
    sim.settle(lambda: sim.value(chat_metric) == 0, "the empty stream on the board")
    sim.tick(sync)
    assert sim.replicas("batch-worker") == 10  # inside the stabilization window the HPA holds
    for _ in range(12):  # past the 300 s window, then 4 pods a minute: 10 -> 6 -> 2
        sim.tick(60)
    sim.settle(lambda: sim.replicas("batch-worker") == 2, "the scale-down to minReplicaCount")
