"""``kubectl apply -k manifests/overlays/dev`` against kubesim, as the README shows it: every object is created,
then kubesim's controllers run it on a stepped clock (three CPU nodes and one 4-GPU node): the Rollout's pods, the
batch workers, Redis and vLLM come up, KEDA makes an HPA per ScaledObject, the gateway's HPA reads its CPU and
request rate and scales the Rollout with the seed's scale-up policy, the Rollout reports Healthy, and the console's
Kubernetes source (read-only context) sees all of it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client, config

from console.sources.kube import KubeSource
from console.sources.poller import Health
from services.kubesim.controllers.base import Settings
from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.metrics import Series
from services.kubesim.server import KubeSim
from tests.contract.conftest import TOKENS, add_ready_node, node
from tests.deploy.manifests import MANIFESTS, built, kubectl
from tests.waiting import until

NAMESPACE = "ai-prod"
START = 1_000.0
DEADLINE_S = 120.0
WALK_S = 600.0  # the whole canary, about 40 minutes of the cluster's clock, each second a controller pass
RPS = "switchboard_requests_per_second"


class SteppedCluster:
    """kubesim with its controllers ticked by the test on an injected clock, reached through the official client."""

    def __init__(self, tmp_path: Path) -> None:
        self.now = START
        self.sim = KubeSim(TOKENS, controllers=Settings(tick=3600.0, ready_delay=1.0, hpa_sync=15.0),
                           clock=lambda: self.now).start()
        self.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", self.sim.url, TOKENS, self.sim.ca_pem)
        self.admin = config.new_client_from_config(config_file=str(self.kubeconfig), context="kubesim")
        self.core = client.CoreV1Api(self.admin)  # what add_ready_node writes nodes through

    def advance(self, seconds: int) -> None:
        controllers = self.sim.controllers
        assert controllers is not None

        def steps() -> None:
            for _ in range(seconds):
                self.now += 1.0
                controllers.tick()

        self.sim.call(steps)

    def until(self, what: str, check: Callable[[], Any], every_s: int = 1, within_s: float = DEADLINE_S) -> Any:
        """Advances the clock (the controllers tick each second) until ``check``, asked every ``every_s`` seconds of
        that clock, answers something true."""
        deadline = time.monotonic() + within_s
        while not (found := check()):
            assert time.monotonic() < deadline, f"kubesim never reached: {what}"
            self.advance(every_s)
        return found

    def load(self, workload: str, **totals: float) -> None:
        """The workload's totals on the metrics board, as metrics-server and prometheus-adapter would serve them."""
        controllers = self.sim.controllers
        assert controllers is not None
        self.sim.call(lambda: [controllers.board.set(Series(NAMESPACE, metric, workload), value, self.now, "test")
                               for metric, value in totals.items()])

    def rollout(self) -> dict[str, Any]:
        return client.CustomObjectsApi(self.admin).get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", "ai-gateway")

    def ready_pods(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pod in client.CoreV1Api(self.admin).list_namespaced_pod(NAMESPACE).items:
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if pod.status.phase == "Running" and ready:
                app = pod.metadata.labels.get("app", "")
                counts[app] = counts.get(app, 0) + 1
        return counts


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SteppedCluster]:
    made = SteppedCluster(tmp_path)
    try:
        for name in ("cpu-1", "cpu-2", "cpu-3"):
            add_ready_node(made, node(name, cpu="16", memory="64Gi"))  # type: ignore[arg-type]
        add_ready_node(made, node("gpu-1", cpu="96", memory="1Ti", gpus=4,  # type: ignore[arg-type]
                                  product="NVIDIA-A100-SXM4-80GB"))
        yield made
    finally:
        made.sim.stop()


def apply_dev(cluster: SteppedCluster) -> list[str]:
    result = subprocess.run([kubectl(), "--kubeconfig", str(cluster.kubeconfig), "apply", "-k",
                             str(MANIFESTS / "overlays" / "dev")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl apply -k manifests/overlays/dev:\n{result.stderr}"
    return result.stdout.splitlines()


def test_kubectl_apply_k_dev_runs_on_kubesim_and_the_console_sees_it(cluster: SteppedCluster) -> None:
    lines = apply_dev(cluster)
    objects = built("overlays/dev")
    assert len(lines) == len(objects) and all(line.endswith(" created") for line in lines), "\n".join(lines)
    assert "rollout.argoproj.io/ai-gateway created" in lines

    # The pods come up: the Rollout's three gateway pods, two batch workers, Redis, and vLLM on the GPU node.
    cluster.until("every pod Running and Ready",
                  lambda: cluster.ready_pods() == {"ai-gateway": 3, "batch-worker": 2, "redis": 1, "vllm": 1})
    vllm = client.CoreV1Api(cluster.admin).read_namespaced_pod("vllm-0", NAMESPACE)
    assert vllm.spec.node_name == "gpu-1"

    rollout = cluster.until("the Rollout Healthy", lambda: (r := cluster.rollout()).get("status", {}).get(
        "phase") == "Healthy" and r)
    assert rollout["status"]["availableReplicas"] == 3 and rollout["status"]["stableRS"]

    # The HPA reads CPU (60% of requests) and 300 requests/s per pod: the request rate asks for 9 pods; the seed's
    # scale-up policy allows max(+100%, +4 pods) = 7 in the first 15 s.
    cluster.load("ai-gateway", cpu=0.9, **{RPS: 900.0})
    autoscaling = client.AutoscalingV2Api(cluster.admin)
    hpa = cluster.until("the HPA rescaled", lambda: (h := autoscaling.read_namespaced_horizontal_pod_autoscaler(
        "ai-gateway", NAMESPACE)).status.desired_replicas == 7 and h)
    conditions = {c.type: (c.status, c.reason) for c in hpa.status.conditions}
    assert conditions["ScalingActive"] == ("True", "ValidMetricFound")
    assert conditions["ScalingLimited"] == ("True", "ScaleUpLimit")
    assert cluster.rollout()["spec"]["replicas"] == 7
    cluster.until("the Rollout at 7 pods", lambda: cluster.rollout().get("status", {}).get("availableReplicas") == 7)

    async def console_view() -> None:
        source = KubeSource(str(cluster.kubeconfig), "kubesim-viewer", NAMESPACE, lambda _: None, interval_s=0.05)
        source.start()
        try:
            snapshot = await until("the console's LIVE snapshot", lambda: (
                s := source.snapshot()).health == Health.LIVE and s)
            assert source.simulated
            data = snapshot.data
            assert data is not None
            await until("every kind listed", lambda: all(state.listed for state in data.kinds.values()))

            def names(key: str) -> set[str]:
                return {obj["metadata"]["name"] for obj in source.snapshot().data.objects(key)}  # type: ignore[union-attr]

            hpas = {"ai-gateway", "keda-hpa-batch-worker", "keda-hpa-vllm"}
            await until("the console sees the manifests", lambda: names("rollouts") == {"ai-gateway"}
                        and names("hpas") == hpas and names("statefulsets") == {"redis", "vllm"}
                        and names("scaledobjects") == {"batch-worker", "vllm"}
                        and len([n for n in names("pods") if n.startswith("ai-gateway-")]) == 7)
            seen = {h["metadata"]["name"]: h for h in source.snapshot().data.objects("hpas")}  # type: ignore[union-attr]
            assert seen["ai-gateway"]["status"]["desiredReplicas"] == 7
        finally:
            await source.stop()

    asyncio.run(console_view())


class StandInPrometheus:
    """Prometheus's instant-query API (GET /api/v1/query) on loopback, answering every query with one sample: the
    error rate or the p99 in milliseconds given. It records the queries, as rendered by the AnalysisRun."""

    def __init__(self, error_rate: float, p99_ms: float) -> None:
        self.queries: list[str] = []
        answers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                answers.queries.append(query)
                value = p99_ms if query.startswith("histogram_quantile") else error_rate
                body = {"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [time.time(), str(value)]}]}}
                if url.path != "/api/v1/query":
                    body, code = {"status": "error", "error": "not found"}, 404
                else:
                    code = 200
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def point_analysis_at(cluster: SteppedCluster, address: str) -> None:
    """The AnalysisTemplates' Prometheus address replaced by ``address`` (in a cluster, prometheus-operated)."""
    custom = client.CustomObjectsApi(cluster.admin)
    for name in ("gateway-error-rate", "gateway-latency-p99"):
        template = custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "analysistemplates", name)
        for metric in template["spec"]["metrics"]:
            metric["provider"]["prometheus"]["address"] = address
        custom.replace_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "analysistemplates", name,
                                                template)


@pytest.mark.parametrize(("error_rate", "promoted"), [(0.002, True), (0.05, False)])
def test_a_new_gateway_version_walks_the_dev_canary(cluster: SteppedCluster, error_rate: float,
                                                     promoted: bool) -> None:
    """A new image walks the dev overlay's steps (1%, 10%, 50% with 1, 2 and 4 minute holds): each analysis queries
    the stand-in Prometheus for the canary's pod template hash, and the quality gate's Job runs at 10% and 50%.
    Under 1% errors and a p99 under 3 s the canary becomes stable at 100%; at 5% errors the first analysis fails
    and the Rollout aborts, keeping the old version stable."""
    prometheus = StandInPrometheus(error_rate, p99_ms=850.0)
    try:
        apply_dev(cluster)
        point_analysis_at(cluster, prometheus.address)
        stable = cluster.until("the first revision stable", lambda: (r := cluster.rollout()).get("status", {}).get(
            "phase") == "Healthy" and r["status"]["stableRS"])
        custom = client.CustomObjectsApi(cluster.admin)
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "gateway", "image": "ghcr.io/switchboard-dev/switchboard:0.1.1"}]}}}}
        custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "rollouts", "ai-gateway", patch)
        held = cluster.until("the 1% step's hold", lambda: (r := cluster.rollout()).get("status", {}).get(
            "currentStepIndex") == 1 and r)
        canary = held["status"]["currentPodHash"]
        assert canary != stable
        if promoted:
            done = cluster.until("the canary promoted", lambda: (r := cluster.rollout())["status"].get(
                "stableRS") == canary and r["status"].get("phase") == "Healthy" and r, every_s=10, within_s=WALK_S)
            assert done["status"]["currentStepIndex"] == len(done["spec"]["strategy"]["canary"]["steps"])
            jobs = client.BatchV1Api(cluster.admin).list_namespaced_job(NAMESPACE).items
            assert len(jobs) == 2 and all(job.status.succeeded == 1 for job in jobs)  # the quality gate at 10%, 50%
            assert jobs[0].spec.template.spec.containers[0].command[:4] == ["switchboard", "judge", "--release",
                                                                            "gateway"]
        else:
            aborted = cluster.until("the Rollout aborted", lambda: (r := cluster.rollout())["status"].get(
                "abort") and r, every_s=10)
            assert aborted["status"]["stableRS"] == stable and aborted["status"]["phase"] == "Degraded"
        hashed = f'rollouts_pod_template_hash="{canary}"'
        assert prometheus.queries and all(hashed in query for query in prometheus.queries)
        assert {query.startswith("histogram_quantile") for query in prometheus.queries} == {True, False}
    finally:
        prometheus.close()
