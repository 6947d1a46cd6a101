"""kubesim benchmark: a simulated cluster of the console's size, and what serving it costs.

Setup: kubesim runs as its own process (so its CPU and memory are its alone) with every controller on at a 1 s
tick and ``Settings(hpa_sync=1.0)``, fed a steady CPU figure per Deployment (exactly the HPAs' 70% target, so they
compute every second but hold). Through the API the benchmark creates, in namespace ``bench``: 20 Nodes, 50
Deployments of 19 replicas (100m CPU each) with an HPA each (CPU 70%, 19..40), and 10 Rollouts of 5 replicas; the
controllers make the 1,000 pods and run them.

Measured:

* ``load_s``: creating those objects, and ``settle_s``: until every pod is Running.
* ``list``: p50/p95 of listing every pod in ``bench``, and of a label selector that matches one Deployment's
  pods, through the official ``kubernetes`` client and through raw httpx (JSON only: the gap is the client's
  deserialisation into model objects).
* ``watch``: 10 pod watchers (raw httpx streams, one thread each); each write patches an annotation of a probe pod,
  and the figure is the time from sending the write to the 10th watcher reading its event (p50/p95).
* ``cpu``: kubesim's user+system CPU seconds per wall second (``/proc/<pid>/stat``) with no client traffic, as the
  controllers tick and the HPAs sync; and its RSS, empty and holding the cluster.

It prints the figures (no pass/fail) and writes ``tests/perf/results/kubesim-<UTC time>.json`` and
``kubesim-latest.json``. Run from the repository root with the project's Python::

    python tests/perf/bench_kubesim.py           # about 2 minutes
    python tests/perf/bench_kubesim.py --quick   # under a minute, rough figures
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RESULTS_DIR = HERE / "results"
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import kubernetes  # noqa: E402
import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402

from services.kubesim.controllers.base import Settings  # noqa: E402
from services.kubesim.kubeconfig import new_tokens, write_kubeconfig  # noqa: E402
from services.kubesim.metrics import MetricBoard, Series  # noqa: E402
from services.kubesim.server import KubeSim  # noqa: E402
from tests.perf.procstat import cpu_share, machine_info, ratio, rss_mib, save_result  # noqa: E402

NAMESPACE = "bench"
NODES, DEPLOYMENTS, REPLICAS, ROLLOUTS, ROLLOUT_REPLICAS = 20, 50, 19, 10, 5
POD_CPU = 0.1  # cores requested by each pod
TARGET_UTILIZATION = 70
WATCHERS = 10
SETTLE_DEADLINE_S = 600.0
EVENT_DEADLINE_S = 30.0
SEQ_ANNOTATION = "bench.switchboard/seq"


# --- the kubesim process -------------------------------------------------------------------------------------------

class SteadyCpu:
    """Keeps each Deployment's CPU total at its HPA's target, so every sync computes and holds."""

    name = "bench steady cpu"

    async def run(self, board: MetricBoard, clock: Callable[[], float]) -> None:
        total = REPLICAS * POD_CPU * TARGET_UTILIZATION / 100
        while True:
            for index in range(DEPLOYMENTS):
                board.set(Series(NAMESPACE, "cpu", f"web-{index}"), total, clock(), "bench")
            await asyncio.sleep(1.0)


def serve(kubeconfig: Path) -> int:
    """The child: kubesim with every controller at a 1 s tick until its stdin closes."""
    tokens = new_tokens()
    sim = KubeSim(tokens, controllers=Settings(tick=1.0, hpa_sync=1.0), sources=(SteadyCpu(),)).start()
    write_kubeconfig(kubeconfig, sim.url, tokens, sim.ca_pem)
    print("READY", flush=True)
    sys.stdin.read()
    sim.stop()
    return 0


class KubeSimProcess:
    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve",
                                         str(self.kubeconfig)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=REPO_ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "READY":
            raise SystemExit(f"bench_kubesim: kubesim did not start (said {line!r})")
        loaded = yaml.safe_load(self.kubeconfig.read_text())
        cluster = loaded["clusters"][0]["cluster"]
        self.url = cluster["server"]
        self.ca_file = workdir / "ca.pem"
        self.ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        self.token = next(user["user"]["token"] for user in loaded["users"] if user["name"] == "kubesim-admin")

    @property
    def pid(self) -> int:
        return self.process.pid

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=str(self.ca_file), timeout=60.0,
                            headers={"Authorization": f"Bearer {self.token}"})

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- the cluster ---------------------------------------------------------------------------------------------------

def pod_template(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels}, "spec": {"containers": [{
        "name": "main", "image": "registry.local/app:1",
        "resources": {"requests": {"cpu": f"{int(POD_CPU * 1000)}m", "memory": "64Mi"}}}]}}


def load(api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    autoscaling, custom = client.AutoscalingV2Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    for index in range(NODES):
        capacity = {"cpu": "64", "memory": "512Gi", "pods": "110"}
        node = {"metadata": {"name": f"node-{index}", "labels": {"kubernetes.io/hostname": f"node-{index}"}},
                "status": {"capacity": capacity, "allocatable": capacity,
                           "conditions": [{"type": "Ready", "status": "True"}]}}
        made = core.create_node(node)
        core.replace_node_status(made.metadata.name, {**node, "metadata": {
            "name": made.metadata.name, "resourceVersion": made.metadata.resource_version}})
    for index in range(DEPLOYMENTS):
        name, labels = f"web-{index}", {"app": f"web-{index}"}
        apps.create_namespaced_deployment(NAMESPACE, {"metadata": {"name": name, "labels": labels}, "spec": {
            "replicas": REPLICAS, "selector": {"matchLabels": labels}, "template": pod_template(labels)}})
        autoscaling.create_namespaced_horizontal_pod_autoscaler(NAMESPACE, {"metadata": {"name": name}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": REPLICAS, "maxReplicas": 40, "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": TARGET_UTILIZATION}}}]}})
    for index in range(ROLLOUTS):
        name, labels = f"canary-{index}", {"app": f"canary-{index}"}
        custom.create_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "rollouts", {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
            "spec": {"replicas": ROLLOUT_REPLICAS, "selector": {"matchLabels": labels},
                     "template": pod_template(labels),
                     "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}}})


def pod_phases(http: httpx.Client) -> dict[str, int]:
    phases: dict[str, int] = {}
    for item in http.get(f"/api/v1/namespaces/{NAMESPACE}/pods").json()["items"]:
        phase = (item.get("status") or {}).get("phase", "Pending")
        phases[phase] = phases.get(phase, 0) + 1
    return phases


def settle(http: httpx.Client, expected: int) -> tuple[float, dict[str, int]]:
    """Seconds until ``expected`` pods are Running (or the deadline), and the phases seen last."""
    began = time.monotonic()
    phases: dict[str, int] = {}
    while time.monotonic() - began < SETTLE_DEADLINE_S:
        phases = pod_phases(http)
        if phases.get("Running", 0) >= expected:
            break
        time.sleep(1.0)
    return time.monotonic() - began, phases


# --- measurements --------------------------------------------------------------------------------------------------

def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "n": len(ordered)}


def timed(call: Callable[[], object], repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return percentiles(samples)


def list_latency(api: client.ApiClient, http: httpx.Client, repeat: int) -> dict[str, dict[str, float]]:
    core = client.CoreV1Api(api)
    selector = "app=web-7"
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"

    def raw(params: dict[str, str]) -> None:
        response = http.get(path, params=params)
        response.raise_for_status()
        response.json()

    return {
        "official_all": timed(lambda: core.list_namespaced_pod(NAMESPACE), repeat),
        "official_selector": timed(lambda: core.list_namespaced_pod(NAMESPACE, label_selector=selector), repeat),
        "httpx_all": timed(lambda: raw({}), repeat),
        "httpx_selector": timed(lambda: raw({"labelSelector": selector}), repeat),
    }


class Watchers:
    """``count`` raw pod watches; ``seen(seq)`` is set once every one of them has read the write numbered seq."""

    def __init__(self, sim: KubeSimProcess, count: int, since: str) -> None:
        self.count, self.lock, self.closing = count, threading.Lock(), threading.Event()
        self.arrivals: dict[int, list[float]] = {}
        self.done: dict[int, threading.Event] = {}
        self.ready = threading.Barrier(count + 1)
        self.clients = [sim.http() for _ in range(count)]
        self.threads = [threading.Thread(target=self._watch, args=(http, since), daemon=True)
                        for http in self.clients]
        for thread in self.threads:
            thread.start()
        self.ready.wait(timeout=60)

    def expect(self, seq: int) -> threading.Event:
        with self.lock:
            return self.done.setdefault(seq, threading.Event())

    def _watch(self, http: httpx.Client, since: str) -> None:
        params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "3600"}
        try:
            with http.stream("GET", f"/api/v1/namespaces/{NAMESPACE}/pods", params=params,
                             timeout=httpx.Timeout(60.0, read=None)) as response:
                self.ready.wait(timeout=60)
                for line in response.iter_lines():
                    if SEQ_ANNOTATION in line:
                        self._arrived(line, time.perf_counter())
        except (httpx.HTTPError, RuntimeError):
            if not self.closing.is_set():
                raise

    def _arrived(self, line: str, at: float) -> None:
        annotations = json.loads(line)["object"]["metadata"].get("annotations") or {}
        seq = int(annotations.get(SEQ_ANNOTATION, -1))
        with self.lock:
            times = self.arrivals.setdefault(seq, [])
            times.append(at)
            if len(times) == self.count:
                self.done.setdefault(seq, threading.Event()).set()

    def close(self) -> None:
        self.closing.set()
        for http in self.clients:
            http.close()


def watch_fan_out(sim: KubeSimProcess, http: httpx.Client, writes: int) -> dict[str, Any]:
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "labels": {"app": "probe"}},
             "spec": {"containers": [{"name": "main", "image": "registry.local/app:1"}]}}
    http.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=probe).raise_for_status()
    since = http.get(f"/api/v1/namespaces/{NAMESPACE}/pods", params={"limit": "1"}).json()["metadata"][
        "resourceVersion"]
    watchers = Watchers(sim, WATCHERS, since)
    samples, missed = [], 0
    try:
        for seq in range(writes):
            done = watchers.expect(seq)
            began = time.perf_counter()
            http.patch(f"/api/v1/namespaces/{NAMESPACE}/pods/probe",
                       content=json.dumps({"metadata": {"annotations": {SEQ_ANNOTATION: str(seq)}}}),
                       headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
            if not done.wait(EVENT_DEADLINE_S):
                missed += 1
                continue
            samples.append(max(watchers.arrivals[seq]) - began)
    finally:
        watchers.close()
    return {**percentiles(samples), "watchers": WATCHERS, "missed": missed}










# --- main ----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and a 10 s CPU window")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="CPU measurement window (default 30)")
    parser.add_argument("--lists", type=int, default=None, help="lists of each kind (default 20)")
    parser.add_argument("--writes", type=int, default=None, help="watched writes (default 50)")
    parser.add_argument("--serve", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(Path(args.serve))
    window = args.cpu_seconds or (10.0 if args.quick else 30.0)
    lists = args.lists or (5 if args.quick else 20)
    writes = args.writes or (10 if args.quick else 50)
    machine = machine_info()
    began = time.monotonic()
    expected = DEPLOYMENTS * REPLICAS + ROLLOUTS * ROLLOUT_REPLICAS

    with tempfile.TemporaryDirectory(prefix="sb-bench-kubesim-") as workdir:
        sim = KubeSimProcess(Path(workdir))
        try:
            time.sleep(1.0)
            rss_empty = rss_mib(sim.pid)
            api = config.new_client_from_config(config_file=str(sim.kubeconfig))
            http = sim.http()
            loading = time.monotonic()
            load(api)
            load_s = time.monotonic() - loading
            settle_s, phases = settle(http, expected)
            held = {"pods": sum(phases.values()), "pods_by_phase": phases, "nodes": NODES,
                    "hpas": len(http.get(f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers")
                                .json()["items"]),
                    "rollouts": len(http.get(f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/rollouts")
                                    .json()["items"])}
            listed = list_latency(api, http, lists)
            watched = watch_fan_out(sim, http, writes)
            time.sleep(2.0)  # let the watch connections' teardown pass before measuring the idle cluster
            revision = int(http.get("/api/v1/namespaces", params={"limit": "1"}).json()["metadata"]["resourceVersion"])
            cpu = cpu_share(sim.pid, window)
            written = int(http.get("/api/v1/namespaces", params={"limit": "1"}).json()["metadata"][
                "resourceVersion"]) - revision
            cpu["controller_writes_per_s"] = round(written / cpu["wall_s"], 1)
            cpu["rss_empty_mib"], cpu["rss_mib"] = rss_empty, rss_mib(sim.pid)
            http.close()
        finally:
            sim.stop()

    result = {
        "benchmark": "kubesim",
        "utc": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "elapsed_s": round(time.monotonic() - began, 1),
        "machine": machine,
        "versions": {"python": platform.python_version(), "kubernetes": kubernetes.__version__,
                     "httpx": httpx.__version__},
        "options": {"tick_s": 1.0, "hpa_sync_s": 1.0, "lists": lists, "writes": writes, "cpu_seconds": window,
                    "expected_pods": expected},
        "held": held,
        "load_s": round(load_s, 1),
        "settle_s": round(settle_s, 1),
        "list": listed,
        "watch": watched,
        "cpu": cpu,
    }
    report(result)
    save_result(RESULTS_DIR, "kubesim", result)
    return 0



def report(r: dict[str, Any]) -> None:
    held, listed, watched, cpu = r["held"], r["list"], r["watch"], r["cpu"]
    print(f"kubesim benchmark: {held['pods']} pods ({held['pods_by_phase']}), {held['hpas']} HPAs, "
          f"{held['rollouts']} rollouts, {held['nodes']} nodes; controllers at a 1 s tick, HPA sync 1 s; "
          f"{r['machine']['nproc']} CPUs ({r['machine']['cpu_model']})")
    print(f"load through the API {r['load_s']} s, every pod Running after {r['settle_s']} s more\n")
    print(f"{'list pods':<28}{'p50 ms':>10}{'p95 ms':>10}{'vs httpx':>10}")
    for what, raw in (("all", "httpx_all"), ("selector", "httpx_selector")):
        official = listed[f"official_{what}"]
        print(f"{'official client, ' + what:<28}{official['p50_ms']:>10}{official['p95_ms']:>10}"
              f"{ratio(official['p50_ms'], listed[raw]['p50_ms']):>10}")
        print(f"{'raw httpx, ' + what:<28}{listed[raw]['p50_ms']:>10}{listed[raw]['p95_ms']:>10}{'1.0x':>10}")
    print(f"\n{'watch fan-out':<28}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'write -> 10th watcher':<28}{watched['p50_ms']:>10}{watched['p95_ms']:>10}"
          f"   ({watched['n']} writes, {watched['missed']} missed)")
    print(f"\nkubesim CPU at a 1 s tick, no clients: {cpu['share_of_one_core']:.1%} of one core "
          f"({cpu['cpu_s']} s over {cpu['wall_s']} s); its controllers wrote "
          f"{cpu['controller_writes_per_s']} objects/s")
    print(f"kubesim RSS: {cpu['rss_mib']} MiB holding the cluster, {cpu['rss_empty_mib']} MiB empty "
          f"({ratio(cpu['rss_mib'], cpu['rss_empty_mib'])})")


if __name__ == "__main__":
    raise SystemExit(main())
