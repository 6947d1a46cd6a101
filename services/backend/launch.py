"""``switchboard backend up``: the engine's command line, and running it in its own process group.

vLLM's API server spawns an EngineCore child process. The engine is started in a new session (its
own process group), so a signal to the launcher never reaches it directly, and on SIGTERM/SIGINT
the launcher stops the whole group: SIGTERM, a grace period, then SIGKILL, and waits until no
member of the group is left. Nothing is orphaned. Should the launcher itself be killed with
SIGKILL, the kernel sends the API server SIGTERM (PR_SET_PDEATHSIG), which shuts its children down.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from services.backend.settings import BackendSettings

CPU_DEFAULTS = {"max_num_batched_tokens": 2048, "max_num_seqs": 32}
GPU_DEFAULTS = {"max_num_batched_tokens": 8192, "max_num_seqs": 256}
STOP_GRACE_S = 20.0


def build_command(settings: BackendSettings, gpu: bool) -> tuple[list[str], dict[str, str]]:
    """The engine's argv and the environment variables to add to the launcher's own.

    Pure: reads nothing but its arguments. ``settings.model`` must already be resolved.
    """
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    batched = settings.max_num_batched_tokens or defaults["max_num_batched_tokens"]
    seqs = settings.max_num_seqs or defaults["max_num_seqs"]
    argv = [
        settings.python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", settings.model,
        "--served-model-name", settings.served_model_name,
        "--host", settings.host,
        "--port", str(settings.port),
        "--max-model-len", str(settings.max_model_len),
        "--max-num-batched-tokens", str(batched),
        "--max-num-seqs", str(seqs),
    ]  # fmt: skip
    if settings.enable_prefix_caching:
        argv.append("--enable-prefix-caching")
    # No usage reports: these hosts reach no network but package registries.
    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if Path(settings.model).is_absolute():
        env["HF_HUB_OFFLINE"] = "1"  # a local folder: never ask the Hub for anything
    if gpu:
        argv += [
            "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
            "--tensor-parallel-size", str(settings.tensor_parallel_size),
        ]  # fmt: skip
    else:
        argv += ["--dtype", settings.dtype]
        if settings.enforce_eager:
            argv.append("--enforce-eager")
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_space_gib)
        env["VLLM_CPU_OMP_THREADS_BIND"] = settings.omp_threads_bind
        if settings.reserved_cpus is not None:
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(settings.reserved_cpus)
        if settings.omp_num_threads is not None:
            env["OMP_NUM_THREADS"] = str(settings.omp_num_threads)
    argv += list(settings.extra_args)
    return argv, env


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (host, port), or the address cannot be bound."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is not "in use"
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (not zombie) processes whose process group is ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the ")" that closes the command name: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the engine's process group, wait, SIGKILL what is left; reap the leader."""
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so it stops counting
            if not group_members(pgid):
                break
            time.sleep(0.2)
        else:
            continue
        break
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _prepare_engine() -> None:
    """In the engine, between fork and exec: take signals again, and die with the launcher.

    The launcher blocks SIGTERM/SIGINT around the fork and a child inherits that mask, so it is
    lifted here. PR_SET_PDEATHSIG sends the engine SIGTERM should the launcher die, even by SIGKILL.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signum)


def run(
    settings: BackendSettings,
    gpu: bool,
    log_path: Path,
    say: Callable[[str], None] = print,
    start_timeout_s: float = 900.0,
) -> int:
    """Starts the engine, waits for /health, then serves until a signal or the engine's exit."""
    if port_in_use(settings.host, settings.port):
        say(f"error: port {settings.port} on {settings.host} is already in use; pick another with --port")
        return 1
    argv, extra_env = build_command(settings, gpu)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://{settings.host}:{settings.port}"
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as log:
            log.write(("$ " + " ".join(argv) + "\n").encode())
            log.flush()
            say(f"starting the engine ({'GPU' if gpu else 'CPU'}); log: {log_path}")
            started = time.monotonic()
            # Signals wait until `proc` is assigned, so a stop can never miss the engine it started.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            try:
                proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, **extra_env}, start_new_session=True, preexec_fn=_prepare_engine,
                )  # fmt: skip
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        while not healthy(url):
            if proc.poll() is not None:
                say(f"error: the engine exited with status {proc.returncode} before it was healthy. Log tail:")
                say(log_tail(log_path))
                return 1
            if time.monotonic() - started > start_timeout_s:
                say(f"error: the engine was not healthy after {start_timeout_s:.0f}s. Log tail:")
                say(log_tail(log_path))
                return 1
            time.sleep(0.5)
        say(f"healthy after {time.monotonic() - started:.1f}s: {url}/v1 (model {settings.served_model_name!r})")
        say("stop with Ctrl-C or SIGTERM")
        rc = proc.wait()
        say(f"error: the engine exited with status {rc}. Log tail:")
        say(log_tail(log_path))
        return rc if rc > 0 else 1
    except _Stop as stop:
        say(f"{stop}: stopping the engine")
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short: the group is killed within the grace period anyway.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
