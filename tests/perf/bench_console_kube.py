"""Console benchmark on a big cluster: the console's CPU and key-press latency with 1,000 pods, beside an empty one.

Setup (all on loopback): kubesim in its own process with every controller at a 1 s tick (bench_kubesim's
``KubeSimProcess``), a real gateway process (bench_console's 20 targets on an OpenAI stand-in), and the console in
its own process: ``create_app`` with a context whose kubeconfig points at kubesim (namespace ``bench``), run
headless by ``run_test`` at 120x40, refreshing every second. The console is measured twice on the same kubesim:

* **empty**: before anything is created (the cluster panes list nothing);
* **loaded**: after bench_kubesim's ``load`` (20 nodes, 50 Deployments of 19 pods with an HPA each, 10 Rollouts of
  5 pods: 1,000 pods, 50 HPAs, 10 rollouts) has settled, with a writer patching a pod or an HPA annotation ~10
  times a second through the API (so watch events keep arriving, on top of the controllers' own writes).

Measured per cluster:

* ``cpu``: the console process's user+system CPU over ``--cpu-seconds`` (30 by default) while it sits on its
  refresh, as a share of one core (goal: at most 5%);
* ``keys``: from a key press (handed to the app as the terminal driver does) to a composed frame that shows
  its effect (Textual's compositor renders every visible widget's lines, as it does before writing to a
  terminal), at 80x24 where the active pane fills the screen: ``switch`` alternates 7 (GPU pods) and 8
  (Autoscaling); ``filter`` is a letter typed after ``/`` in GPU pods (the title shows ``/c`` and the rows are
  filtered); ``clear`` is the escape that brings every row back. p50/p95/p99 over ``--presses`` presses each
  (goal: p99 at most 50 ms).

``--profile`` runs the console under cProfile over the CPU window and adds its top entries to the result. It
prints a table (loaded, empty and their ratio; no pass/fail) and writes
``tests/perf/results/console-kube-<UTC time>.json`` and ``console-kube-latest.json``.
Run from the repository root with the project's Python::

    python tests/perf/bench_console_kube.py           # about 3 minutes
    python tests/perf/bench_console_kube.py --quick   # about a minute, rough figures
    python tests/perf/bench_console_kube.py --age-s 60  # pods past a minute old: their ages stop ticking
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RESULTS_DIR = HERE / "results"
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import textual  # noqa: E402
from kubernetes import config  # noqa: E402

from tests.perf.bench_console import TOKEN_ENV, gateway_config  # noqa: E402
from tests.perf.bench_kubesim import (  # noqa: E402
    DEPLOYMENTS,
    NAMESPACE,
    NODES,
    REPLICAS,
    ROLLOUT_REPLICAS,
    ROLLOUTS,
    KubeSimProcess,
    load,
    settle,
)
from tests.perf.procstat import cpu_share, machine_info, ratio, rss_mib, save_result  # noqa: E402

CPU_GOAL = 0.05
P99_GOAL_MS = 50.0
WRITES_PER_S = 10.0
CPU_SIZE, KEYS_SIZE = (120, 40), (80, 24)
FILTER_LETTER = "c"
FRAME_DEADLINE_S = 5.0
READY_DEADLINE_S = 120.0
PROFILE_ENTRIES = 15


# --- the console process -------------------------------------------------------------------------------------------

def frame(app: Any) -> str:
    """The screen as the compositor composes it now (each visible widget's lines, re-rendered where dirty)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def gpu_pods_shown(screen: str) -> bool:
    return any(line.lstrip("│ ").startswith("Pod ") and "Status" in line for line in screen.splitlines())


def autoscaling_shown(screen: str) -> bool:
    return not gpu_pods_shown(screen) and ("HPA " in screen or "no HorizontalPodAutoscalers" in screen)


def filter_on(screen: str) -> bool:
    return f"· /{FILTER_LETTER}" in screen


def filter_off(screen: str) -> bool:
    return f"/{FILTER_LETTER}" not in screen and gpu_pods_shown(screen)


async def press_until(app: Any, key: str, shown: Callable[[str], bool]) -> float:
    """Seconds from the driver handing the app ``key`` to a composed frame for which ``shown`` holds.

    The key goes in as the terminal driver sends it (Pilot's ``press`` would add its own idle waits, 40 ms and
    more, to the figure)."""
    from textual import events

    event = events.Key(key, key if len(key) == 1 else None)
    event.set_sender(app)
    began = time.perf_counter()
    app._driver.send_message(event)
    while not shown(frame(app)):
        if time.perf_counter() - began > FRAME_DEADLINE_S:
            raise RuntimeError(f"pressing {key!r}: the frame did not change within {FRAME_DEADLINE_S} s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - began


class GcPauses:
    """The garbage collector's pauses while the keys are pressed: a full collection over a big cluster's objects
    stops the loop, and a key press that lands behind one waits for it."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._began = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._began))

    def summary(self) -> dict[str, Any]:
        full = [s for g, s in self.pauses if g == 2]
        return {"collections": len(self.pauses), "full": len(full),
                "max_ms": round(max((s for _, s in self.pauses), default=0.0) * 1000, 1),
                "max_full_ms": round(max(full, default=0.0) * 1000, 1)}


async def key_latencies(pilot: Any, app: Any, presses: int) -> dict[str, list[float]]:
    await pilot.resize_terminal(*KEYS_SIZE)
    await press_until(app, "7", gpu_pods_shown)
    samples: dict[str, list[float]] = {"switch": [], "filter": [], "clear": []}
    for n in range(presses):
        key, shown = ("8", autoscaling_shown) if n % 2 == 0 else ("7", gpu_pods_shown)
        samples["switch"].append(await press_until(app, key, shown))
        await asyncio.sleep(0.02)  # a person's pace: refreshes and watch snapshots interleave with the keys
    await press_until(app, "7", gpu_pods_shown)
    for _ in range(presses):
        await pilot.press("slash")
        samples["filter"].append(await press_until(app, FILTER_LETTER, filter_on))
        await asyncio.sleep(0.02)
        samples["clear"].append(await press_until(app, "escape", filter_off))
        await asyncio.sleep(0.02)
    return samples


def cluster_ready(app: Any, pods: int) -> bool:
    from console.app import KUBE_SOURCE

    observed = app.snapshots.get(KUBE_SOURCE)
    gateway = app.snapshots.get("gateway")
    if observed is None or observed.data is None or gateway is None or gateway.data is None:
        return False
    snapshot = observed.data
    return all(state.listed for state in snapshot.kinds.values()) and len(snapshot.objects("pods")) >= pods


async def console_session(spec: dict[str, Any]) -> dict[str, Any]:
    """The child: the console on the given context; READY once it shows the cluster, then (on a line from the
    parent, after the CPU window) the key presses; their latencies printed as JSON."""
    from console.app import create_app
    from console.contexts import Context

    profiler = cProfile.Profile() if spec["profile"] else None
    app = create_app(Context(**spec["context"]), operator="bench@console")
    loop = asyncio.get_running_loop()
    async with app.run_test(size=CPU_SIZE) as pilot:
        await pilot.press("7")
        began = time.monotonic()
        while not cluster_ready(app, spec["pods"]):
            if time.monotonic() - began > READY_DEADLINE_S:
                raise RuntimeError(f"the console did not show {spec['pods']} pods within {READY_DEADLINE_S} s")
            await asyncio.sleep(0.05)
        ready_s = time.monotonic() - began
        if profiler is not None:
            profiler.enable()
        print("READY", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # the parent measures the CPU meanwhile
        if profiler is not None:
            profiler.disable()
        with GcPauses() as pauses:
            samples = await key_latencies(pilot, app, spec["presses"])
    return {"ready_s": round(ready_s, 2), "samples": samples, "gc": pauses.summary(),
            "profile": top_entries(profiler)}


def top_entries(profiler: cProfile.Profile | None) -> list[str]:
    if profiler is None:
        return []
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(PROFILE_ENTRIES)
    stats.sort_stats("cumulative").print_stats(PROFILE_ENTRIES)
    stats.print_stats(r"/console/", PROFILE_ENTRIES)  # the project's own functions, by cumulative time
    return [line.rstrip() for line in out.getvalue().splitlines()
            if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced"))]


class ConsoleProcess:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--console", json.dumps(spec)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "READY":
            self.process.kill()
            raise SystemExit(f"bench_console_kube: the console did not get ready (said {line!r})")

    @property
    def pid(self) -> int:
        return self.process.pid

    def keys(self) -> dict[str, Any]:
        """Tells the console to press its keys; their figures once it is done."""
        out, _ = self.process.communicate("go\n", timeout=600)
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- the writer ----------------------------------------------------------------------------------------------------

class Writer(threading.Thread):
    """Patches an annotation on a pod, then on an HPA, in turn, ``rate`` times a second through the API."""

    def __init__(self, sim: KubeSimProcess, rate: float) -> None:
        super().__init__(daemon=True)
        self.sim, self.rate, self.stop_event = sim, rate, threading.Event()
        self.sent = self.failed = 0

    def run(self) -> None:
        with self.sim.http() as http:
            pods = [item["metadata"]["name"] for item in
                    http.get(f"/api/v1/namespaces/{NAMESPACE}/pods").json()["items"]]
            hpas = [item["metadata"]["name"] for item in http.get(
                f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers").json()["items"]]
            pod_paths = [f"/api/v1/namespaces/{NAMESPACE}/pods/{name}" for name in pods]
            hpa_paths = [f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/{name}"
                         for name in hpas]
            if not pod_paths or not hpa_paths:
                return
            while not self.stop_event.wait(1 / self.rate):
                turn = self.sent // 2
                path = pod_paths[turn % len(pod_paths)] if self.sent % 2 == 0 else hpa_paths[turn % len(hpa_paths)]
                body = {"metadata": {"annotations": {"bench.switchboard/write": str(self.sent)}}}
                try:
                    ok = http.patch(path, content=json.dumps(body),
                                    headers={"Content-Type": "application/merge-patch+json"}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.sent += 1
                self.failed += not ok

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


# --- measuring -----------------------------------------------------------------------------------------------------

def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 1)

    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 1), "n": len(ordered)}


def measure(spec: dict[str, Any], cpu_seconds: float) -> dict[str, Any]:
    console = ConsoleProcess(spec)
    try:
        time.sleep(2.0)  # settle after the first frames
        cpu = cpu_share(console.pid, cpu_seconds)
        cpu["rss_mib"] = rss_mib(console.pid)
        keys = console.keys()
    finally:
        console.kill()
    return {"ready_s": keys["ready_s"], "cpu": cpu, "keys": {k: stats(v) for k, v in keys["samples"].items()},
            "gc_while_pressing": keys["gc"], "profile": keys["profile"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 10 s CPU window and 20 presses of each kind")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="CPU measurement window (default 30)")
    parser.add_argument("--presses", type=int, default=None, help="presses of each kind (default 50)")
    parser.add_argument("--age-s", type=float, default=0.0,
                        help="let the loaded pods run this long first (past 60 s their ages stop changing each second)")
    parser.add_argument("--profile", action="store_true", help="run the console under cProfile; report its top")
    parser.add_argument("--console", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.console:
        print(json.dumps(asyncio.run(console_session(json.loads(args.console)))), flush=True)
        return 0
    window = args.cpu_seconds or (10.0 if args.quick else 30.0)
    presses = args.presses or (20 if args.quick else 50)
    machine = machine_info()
    began = time.monotonic()
    expected = DEPLOYMENTS * REPLICAS + ROLLOUTS * ROLLOUT_REPLICAS

    from tests.gateway_harness import GatewayProcess
    from tests.standins import Standin

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="sb-bench-console-kube-") as workdir:
        upstream = Standin(kind="openai", name="bench").start()
        stack.callback(upstream.stop)
        gateway = GatewayProcess(gateway_config(upstream.url), workdir).start()
        stack.callback(gateway.stop)
        sim = KubeSimProcess(Path(workdir))
        stack.callback(sim.stop)
        context = {"name": "bench", "admin_url": gateway.url, "token_env": TOKEN_ENV, "engine_url": None,
                   "kubeconfig": str(sim.kubeconfig), "kube_context": "kubesim", "namespace": NAMESPACE,
                   "poll_interval_s": 1.0, "timeout_s": 2.0}

        def spec(pods: int) -> dict[str, Any]:
            return {"context": context, "pods": pods, "presses": presses, "profile": args.profile}

        empty = measure(spec(0), window)
        api = config.new_client_from_config(config_file=str(sim.kubeconfig))
        load(api)
        with sim.http() as http:
            settle_s, phases = settle(http, expected)
        time.sleep(args.age_s)
        writer = Writer(sim, WRITES_PER_S)
        writer.start()
        stack.callback(writer.stop)
        writes_before = writer.sent
        loaded = measure(spec(expected), window)
        writes = {"sent": writer.sent - writes_before, "failed": writer.failed}

    result = {
        "benchmark": "console-kube",
        "utc": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "elapsed_s": round(time.monotonic() - began, 1),
        "machine": machine,
        "versions": {"python": platform.python_version(), "textual": textual.__version__},
        "options": {"pods": expected, "hpas": DEPLOYMENTS, "rollouts": ROLLOUTS, "nodes": NODES,
                    "refresh_s": 1.0, "cpu_seconds": window, "presses": presses, "writes_per_s": WRITES_PER_S,
                    "age_s": args.age_s,
                    "cpu_terminal": "headless {}x{}".format(*CPU_SIZE),
                    "keys_terminal": "headless {}x{}".format(*KEYS_SIZE)},
        "cluster": {"settle_s": round(settle_s, 1), "pods_by_phase": phases, "writes": writes},
        "empty": empty,
        "loaded": loaded,
        "goals": {"cpu_share": CPU_GOAL, "p99_ms": P99_GOAL_MS},
    }
    result["goals_met"] = {
        "cpu": loaded["cpu"]["share_of_one_core"] <= CPU_GOAL,
        "keys_p99": all(figures["p99_ms"] <= P99_GOAL_MS for figures in loaded["keys"].values()),
    }
    report(result)
    save_result(RESULTS_DIR, "console-kube", result)
    return 0



def report(r: dict[str, Any]) -> None:
    o, empty, loaded = r["options"], r["empty"], r["loaded"]
    print(f"console on a big cluster: {o['pods']} pods, {o['hpas']} HPAs, {o['rollouts']} rollouts, {o['nodes']} "
          f"nodes, {r['cluster']['writes']['sent']} writes at ~{o['writes_per_s']:.0f}/s; refresh {o['refresh_s']} s; "
          f"{r['machine']['nproc']} CPUs ({r['machine']['cpu_model']})")
    print(f"console ready (cluster listed and shown) after {loaded['ready_s']} s loaded, {empty['ready_s']} s empty\n")
    print(f"{'':<34}{'loaded':>10}{'empty':>10}{'ratio':>8}   goal")
    share = (loaded["cpu"]["share_of_one_core"], empty["cpu"]["share_of_one_core"])
    print(f"{'CPU, share of one core':<34}{share[0]:>10.1%}{share[1]:>10.1%}{ratio(*share):>8}   "
          f"<= {CPU_GOAL:.0%}")
    rss = (loaded["cpu"]["rss_mib"], empty["cpu"]["rss_mib"])
    print(f"{'RSS MiB':<34}{rss[0]:>10}{rss[1]:>10}{ratio(*rss):>8}")
    for kind, label in (("switch", "keys 7/8 (switch pane)"), ("filter", f"'/' then '{FILTER_LETTER}' (filter)"),
                        ("clear", "escape (clear filter)")):
        for figure in ("p50_ms", "p95_ms", "p99_ms"):
            pair = (loaded["keys"][kind][figure], empty["keys"][kind][figure])
            goal = f"<= {P99_GOAL_MS:.0f} ms" if figure == "p99_ms" else ""
            print(f"{label + ', ' + figure:<34}{pair[0]:>10}{pair[1]:>10}{ratio(*pair):>8}   {goal}")
    gc_pauses = (loaded["gc_while_pressing"]["max_ms"], empty["gc_while_pressing"]["max_ms"])
    print(f"{'longest GC pause while pressing':<34}{gc_pauses[0]:>10}{gc_pauses[1]:>10}{ratio(*gc_pauses):>8}")
    for name, run in (("loaded", loaded), ("empty", empty)):
        if run["profile"]:
            print(f"\nprofile of the console over the CPU window, {name} (own time, cumulative, the console's own):")
            print("\n".join(run["profile"]))


if __name__ == "__main__":
    raise SystemExit(main())
