"""Console benchmark: time to the first full frame, and the console's CPU share while it refreshes.

Setup (all on loopback): one OpenAI stand-in upstream, a real gateway process with 20 targets in 5 pools
(every target on that stand-in), light traffic through the gateway so the figures move, and an engine
``/metrics`` stand-in serving a page recorded from a real vLLM.

Measured:

* ``in_process_first_frame_s``: ``create_app`` to the first refresh after every source (gateway state,
  audit, engine) has answered and every pane has rendered it (``App.first_full_frame_s``), headless
  via ``run_test``; Python and Textual are already imported.
* ``subprocess_first_frame_s``: from starting a fresh ``python`` under tmux (120x40) to the moment
  ``tmux capture-pane`` shows all five panes LIVE with their data: interpreter start, imports, first
  polls and real terminal output included.
* ``cpu_share``: the console process's user+system CPU (``/proc/<pid>/stat``) over ``--cpu-seconds``
  (60 by default) at a 1 s refresh, divided by wall time: a share of one core.

Goals: first frame under 1 s, CPU under 3% of one core. It prints the figures and writes them to
``tests/perf/results/console-<UTC time>.json`` and ``console-latest.json``. Run from the repository
root with the project's Python::

    python tests/perf/bench_console.py           # about 80 s
    python tests/perf/bench_console.py --quick   # about 20 s, rough figures
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import threading
import time
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

from console.app import create_app  # noqa: E402
from console.contexts import Context  # noqa: E402
from tests.console.harness import EngineStandin, Tmux, console_argv, write_console_config  # noqa: E402
from tests.gateway_harness import GatewayProcess, fast_settings, openai_target  # noqa: E402
from tests.perf.procstat import cpu_share, machine_info, rss_mib, save_result  # noqa: E402
from tests.standins import Standin  # noqa: E402

TARGETS, POOLS = 20, 5
FIRST_FRAME_GOAL_S = 1.0
CPU_GOAL = 0.03
TOKEN_ENV = "SWITCHBOARD_TEST_OPERATOR_TOKEN"


def gateway_config(upstream: str) -> dict[str, Any]:
    targets = {f"t{i:02d}": openai_target(upstream, f"model-{i:02d}") for i in range(TARGETS)}
    per_pool = TARGETS // POOLS
    pools = {f"p{p}": {"targets": {f"t{p * per_pool + i:02d}": 100 // per_pool for i in range(per_pool)}}
             for p in range(POOLS)}
    routes = {f"r{p}": {"pool": f"p{p}"} for p in range(POOLS)}
    return {**fast_settings(), "targets": targets, "pools": pools, "routes": routes}


class Traffic(threading.Thread):
    """A few chat completions a second through the gateway, spread over the routes, so the panes move."""

    def __init__(self, url: str, rps: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rps = url, rps
        self.stop_event = threading.Event()
        self.sent = self.failed = 0

    def run(self) -> None:
        if self.rps <= 0:
            return
        with httpx.Client(base_url=self.url, timeout=5, headers={"authorization": "Bearer bench"}) as client:
            while not self.stop_event.wait(1 / self.rps):
                body = {"model": f"r{self.sent % POOLS}", "messages": [{"role": "user", "content": "hi"}]}
                try:
                    ok = client.post("/v1/chat/completions", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.sent += 1
                self.failed += not ok

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


async def first_frame_in_process(context: Context) -> float:
    app = create_app(context, operator="bench@console")
    async with app.run_test(size=(120, 40)):
        deadline = time.monotonic() + 10
        while app.first_full_frame_s is None:
            if time.monotonic() > deadline:
                raise RuntimeError("no full frame within 10 s")
            await asyncio.sleep(0.005)
        return app.first_full_frame_s


def all_live(screen: str) -> bool:
    return all(f"{pane} LIVE" in screen for pane in ("Providers", "Routing", "Engine", "Audit", "Keys")) and \
        "t00" in screen and "smollm2" in screen


def first_frame_subprocess(argv: list[str]) -> tuple[float, Tmux]:
    """Start the console in a fresh tmux; the time until the screen shows every pane LIVE. The caller kills it."""
    tmux = Tmux()
    started = time.perf_counter()
    tmux.start(argv)
    tmux.wait_for(all_live, "every pane LIVE", within_s=20, every_s=0.01)
    return time.perf_counter() - started, tmux










def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s of CPU measurement and one start of each kind")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="CPU measurement window (default 60)")
    parser.add_argument("--repeat", type=int, default=None, help="first-frame runs of each kind (default 5)")
    parser.add_argument("--interval", type=float, default=1.0, help="the console's refresh interval (s)")
    parser.add_argument("--traffic-rps", type=float, default=5.0, help="requests/s through the gateway")
    args = parser.parse_args(argv)
    cpu_seconds = args.cpu_seconds or (10.0 if args.quick else 60.0)
    repeat = args.repeat or (1 if args.quick else 5)
    machine = machine_info()
    began = time.monotonic()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="sb-bench-console-") as workdir:
        upstream = Standin(kind="openai", name="bench").start()
        stack.callback(upstream.stop)
        engine = EngineStandin().start()
        stack.callback(engine.stop)
        gateway = GatewayProcess(gateway_config(upstream.url), workdir).start()
        stack.callback(gateway.stop)
        traffic = Traffic(gateway.url, args.traffic_rps)
        traffic.start()
        stack.callback(traffic.stop)
        context = Context(name="bench", admin_url=gateway.url, token_env=TOKEN_ENV, engine_url=engine.url,
                          poll_interval_s=args.interval, timeout_s=2.0)
        config = write_console_config(Path(workdir) / "console.yaml", "bench", "bench@console",
                                      **context.model_dump(exclude={"name"}))
        command = console_argv(config, "bench")

        in_process = [asyncio.run(first_frame_in_process(context)) for _ in range(repeat)]
        subprocess_runs: list[float] = []
        for run in range(repeat):
            seconds, tmux = first_frame_subprocess(command)
            subprocess_runs.append(seconds)
            if run < repeat - 1:
                tmux.kill()
        stack.callback(tmux.kill)  # the last console stays up for the CPU measurement
        pid = tmux.pane_pid()
        time.sleep(2.0)  # settle after start-up
        cpu = cpu_share(pid, cpu_seconds)
        cpu["rss_mib"] = rss_mib(pid)
        alive = all_live(tmux.screen())

    result = {
        "benchmark": "console",
        "utc": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "elapsed_s": round(time.monotonic() - began, 1),
        "machine": machine,
        "versions": {"python": platform.python_version(), "textual": textual.__version__},
        "options": {"targets": TARGETS, "pools": POOLS, "interval_s": args.interval, "cpu_seconds": cpu_seconds,
                    "repeat": repeat, "traffic_rps": args.traffic_rps, "terminal": "tmux 120x40",
                    "command": "switchboard console"},
        "first_frame": {
            "in_process_s": [round(s, 3) for s in in_process],
            "in_process_median_s": round(statistics.median(in_process), 3),
            "subprocess_s": [round(s, 3) for s in subprocess_runs],
            "subprocess_median_s": round(statistics.median(subprocess_runs), 3),
            "goal_s": FIRST_FRAME_GOAL_S,
        },
        "cpu": {**cpu, "goal_share": CPU_GOAL, "panes_live_at_end": alive},
        "traffic": {"sent": traffic.sent, "failed": traffic.failed},
    }
    result["goals_met"] = {
        "first_frame": result["first_frame"]["subprocess_median_s"] < FIRST_FRAME_GOAL_S,
        "cpu": cpu["share_of_one_core"] < CPU_GOAL,
    }
    report(result)
    save_result(RESULTS_DIR, "console", result)
    return 0


def report(r: dict[str, Any]) -> None:
    ff, cpu, met = r["first_frame"], r["cpu"], r["goals_met"]
    mark = {True: "ok", False: "OVER GOAL"}
    print(f"console benchmark: {TARGETS} targets in {POOLS} pools, refresh {r['options']['interval_s']} s, "
          f"{r['machine']['nproc']} CPUs ({r['machine']['cpu_model']})")
    print(f"  first full frame, in process (median of {len(ff['in_process_s'])}): {ff['in_process_median_s']:.3f} s  "
          f"{ff['in_process_s']}")
    print(f"  first full frame, new process under tmux (median of {len(ff['subprocess_s'])}): "
          f"{ff['subprocess_median_s']:.3f} s  {ff['subprocess_s']}  "
          f"goal < {ff['goal_s']} s: {mark[met['first_frame']]}")
    share = cpu["share_of_one_core"] * 100
    print(f"  CPU over {cpu['wall_s']:.0f} s: {cpu['cpu_s']:.2f} s = {share:.2f}% of one core  "
          f"goal < {CPU_GOAL * 100:.0f}%: {mark[met['cpu']]}  (RSS {cpu['rss_mib']} MiB)")


if __name__ == "__main__":
    sys.exit(main())
