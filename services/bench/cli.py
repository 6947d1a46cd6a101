"""``switchboard bench run|list|show|compare``: benchmarks for scripts (the console's ``b`` form runs the same).

Exit codes: 0 ok; 1 a run whose every request failed, or one cancelled (Ctrl-C: what finished is saved); 2 bad
usage, a bad spec or dataset, an unknown run, or a target that cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Flags that map one-to-one onto BenchSpec fields (None: not given, the spec file's or the default value stands).
_SIMPLE = ("base_url", "api_key_env", "endpoint", "model", "num_prompts", "max_concurrency", "request_rate",
           "burstiness", "warmups", "seed", "tokenizer", "label", "runner", "timeout_s")


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmark an OpenAI-compatible server (vllm bench serve's metrics)")
    bench.set_defaults(run=run)
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="run|list|show|compare")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", default=None,
                      help="where runs are kept, under bench/ (default $XDG_DATA_HOME/switchboard)")
    data.add_argument("--json", action="store_true", help="print JSON instead of a table")

    go = sub.add_parser("run", parents=[data], help="run a benchmark, print vLLM's result table and save the run")
    go.add_argument("--spec", help="a BenchSpec as JSON or YAML; flags given beside it override its fields")
    go.add_argument("--base-url", help="e.g. http://127.0.0.1:8080 (a gateway), :8000 (the engine), a service URL")
    go.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (never the key)")
    go.add_argument("--endpoint", choices=["completions", "chat"])
    go.add_argument("--model", help="default: the first model of GET /v1/models")
    go.add_argument("--dataset", choices=["random", "jsonl", "sharegpt"])
    go.add_argument("--dataset-path", help="the JSONL or ShareGPT file")
    go.add_argument("--input-len", type=int, help="random prompts: tokens in (default 1024)")
    go.add_argument("--output-len", type=int, help="tokens out (random default 128; overrides a file's)")
    go.add_argument("--range-ratio", type=float, help="random: lengths spread over len*(1 +- ratio)")
    go.add_argument("--num-prompts", type=int)
    go.add_argument("--max-concurrency", type=int, help="requests in flight at most (default unbounded)")
    go.add_argument("--request-rate", type=float, help="requests/s (default inf: all at once)")
    go.add_argument("--burstiness", type=float, help="gamma shape of the gaps; 1 = Poisson (default)")
    go.add_argument("--sweep-rates", help="comma-separated rates: one run each (inf allowed)")
    go.add_argument("--warmups", type=int, help="requests sent first and left out of the results")
    go.add_argument("--seed", type=int)
    go.add_argument("--goodput", nargs="+", metavar="KEY:MS", help="SLOs, e.g. ttft:500 tpot:50 e2el:2000")
    go.add_argument("--percentiles", help="comma-separated, default 50,90,99")
    go.add_argument("--tokenizer", help="a local tokenizer.json (needs the tokenizers package); default: estimate")
    go.add_argument("--label")
    go.add_argument("--runner", choices=["builtin", "vllm", "job"])
    go.add_argument("--timeout-s", type=float, help="longest wait for one request (default 600)")
    go.add_argument("--no-save", action="store_true", help="do not keep the run")
    go.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    sub.add_parser("list", parents=[data], help="past runs, oldest first")
    show = sub.add_parser("show", parents=[data], help="one run (an id, a unique prefix, last, -2 ...)")
    show.add_argument("run_id", metavar="RUN")
    compare = sub.add_parser("compare", parents=[data], help="two runs side by side with B/A ratios")
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")


def run(args: argparse.Namespace) -> int:
    from services.bench.store import RunStore

    store = RunStore(Path(args.data_dir) if args.data_dir else None)
    command = {"run": _run, "list": _list, "show": _show, "compare": _compare}[args.bench_command]
    return command(args, store)


def _fail(message: str, code: int = 2) -> int:
    from services.bench.report import printable

    print(f"switchboard bench: {printable(message)}", file=sys.stderr)
    return code


def _list(args: argparse.Namespace, store: Any) -> int:
    from dataclasses import asdict

    from services.bench.report import format_list

    runs = store.list()
    print(json.dumps([asdict(r) for r in runs], indent=2) if args.json else format_list(runs))
    return 0


def _show(args: argparse.Namespace, store: Any) -> int:
    from services.bench.report import format_result
    from services.bench.result import ResultError

    try:
        run_id = store.resolve(args.run_id)
        result = store.load(run_id)
    except (KeyError, ResultError) as exc:
        return _fail(str(exc.args[0]) if exc.args else str(exc))
    print(json.dumps(result.to_json(), indent=2) if args.json else f"run {run_id}\n{format_result(result)}")
    return 0


def _compare(args: argparse.Namespace, store: Any) -> int:
    from dataclasses import asdict

    from services.bench.report import format_compare
    from services.bench.result import ResultError
    from services.bench.store import compare

    try:
        a_id, b_id = store.resolve(args.a), store.resolve(args.b)
        rows = compare(store.load(a_id), store.load(b_id))
    except (KeyError, ResultError) as exc:
        return _fail(str(exc.args[0]) if exc.args else str(exc))
    if args.json:
        print(json.dumps({"a": a_id, "b": b_id, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(format_compare(a_id, b_id, rows))
    return 0


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, not {text!r}") from None


def build_spec(args: argparse.Namespace) -> Any:
    """The BenchSpec from ``--spec`` and the flags (ValueError / ValidationError on bad input)."""
    from services.bench.spec import BenchSpec

    fields: dict[str, Any] = {}
    if args.spec:
        import yaml

        try:
            loaded = yaml.safe_load(Path(args.spec).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read spec {args.spec}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"spec {args.spec} must be a mapping of BenchSpec fields")
        fields.update(loaded)
    for name in _SIMPLE:
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    dataset = dict(fields.get("dataset") or {})
    if args.dataset is not None and args.dataset != dataset.get("kind"):
        dataset = {"kind": args.dataset}
    for flag, key in (("dataset_path", "path"), ("input_len", "input_len"), ("output_len", "output_len"),
                      ("range_ratio", "range_ratio")):
        value = getattr(args, flag)
        if value is not None:
            dataset[key] = value
    if dataset:
        dataset.setdefault("kind", "random")
        fields["dataset"] = dataset
    if args.sweep_rates:
        fields["sweep_rates"] = _floats(args.sweep_rates, "--sweep-rates")
    if args.percentiles:
        fields["percentiles"] = _floats(args.percentiles, "--percentiles")
    if args.goodput:
        slos: dict[str, float] = {}
        for item in args.goodput:
            key, _, ms = item.partition(":")
            try:
                slos[key] = float(ms)
            except ValueError:
                raise ValueError(f"--goodput takes KEY:MS pairs (ttft:500), not {item!r}") from None
        fields["goodput"] = slos
    if "base_url" not in fields:
        raise ValueError("give --base-url (or a --spec with base_url)")
    return BenchSpec.model_validate(fields)


def _run(args: argparse.Namespace, store: Any) -> int:
    import asyncio
    import signal

    from pydantic import ValidationError

    from services.bench.datasets import DatasetError
    from services.bench.loadgen import BenchError
    from services.bench.report import format_result
    from services.bench.runners import Progress, get_runner, run_sweep

    try:
        spec = build_spec(args)
        runner = get_runner(spec.runner)
    except ValidationError as exc:
        return _fail("bad spec: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except (ValueError, ImportError) as exc:
        return _fail(str(exc))
    last_line = [0.0]

    def progress(p: Progress) -> None:
        if args.quiet or (p.phase == "run" and p.elapsed_s - last_line[0] < 1.0):
            return
        last_line[0] = p.elapsed_s
        if p.line is not None:
            print(p.line, file=sys.stderr)
            return
        figures = [f"{p.phase} {p.done}/{p.total} done, {p.failed} failed, {p.elapsed_s:.1f} s"]
        if p.output_tok_s is not None:
            figures.append(f"{p.output_tok_s:.1f} tok/s")
        if p.ttft_median_ms is not None:
            figures.append(f"TTFT p50 {p.ttft_median_ms:.1f} ms")
        if p.itl_median_ms is not None:
            figures.append(f"ITL p50 {p.itl_median_ms:.1f} ms")
        print(", ".join(figures), file=sys.stderr)

    async def go() -> list[Any]:
        cancel = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, cancel.set)
        try:
            return await run_sweep(runner, spec, progress, cancel)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        import uvloop  # the generator's own overhead is lower on it (tests/perf/bench_loadgen.py)

        results = uvloop.run(go())
    except (BenchError, DatasetError) as exc:
        return _fail(str(exc))
    except (RuntimeError, OSError) as exc:  # the vllm and job runners' errors (their messages say what went wrong)
        return _fail(f"{spec.runner} runner: {exc}")
    outputs = []
    for result in results:
        run_id = None if args.no_save else store.save(result)
        outputs.append((run_id, result))
    if args.json:
        print(json.dumps([{"id": i, **r.to_json()} for i, r in outputs], indent=2))
    else:
        for run_id, result in outputs:
            print(format_result(result))
            if run_id:
                print(f"saved as {run_id}")
    if any(r.cancelled for r in results):
        return _fail("cancelled", 1)
    if all(r.metrics.get("completed") == 0 for r in results):
        return _fail("every request failed", 1)
    return 0
