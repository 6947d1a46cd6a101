"""``switchboard up``: the bundled backend, the gateway on the example config, and the console on top.

The backend and gateway run as child processes with their output in log files (the console owns the
terminal). Quitting the console stops both. A lock file holds the running stack's PID, so a second
``switchboard up`` says so instead of fighting over ports.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

BACKEND_URL = "http://127.0.0.1:8000"
GATEWAY_URL = "http://127.0.0.1:8080"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    path = Path(base) / "switchboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


class AlreadyRunning(Exception):
    pass


@contextlib.contextmanager
def stack_lock(path: Path) -> Iterator[None]:
    """An exclusive lock for the life of the stack; the holder's PID is written for the message."""
    handle = open(path, "a+")  # held open until the stack stops
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(f"a Switchboard stack is already running (pid {holder}); use `switchboard console` "
                             "to open another console on it, or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        handle.close()
        with contextlib.suppress(OSError):
            path.unlink()


def _switchboard() -> list[str]:
    return [sys.executable, "-m", "console.cli"]


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}; last log lines ({log}):\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{what} not healthy after {timeout_s:.0f} s; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, grace_s: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_stack(gateway_config: str, run_console: Callable[[], int]) -> int:
    """Start backend and gateway, run the console in the foreground, stop both when it returns."""
    logs = state_dir()
    os.environ.setdefault("SWITCHBOARD_ADMIN_TOKEN", secrets.token_urlsafe(24))  # shared by gateway and console
    try:
        with stack_lock(logs / "stack.lock"):
            backend = gateway = None
            try:
                backend_log = logs / "backend.log"
                print(f"starting the vLLM backend (log: {backend_log}) ...", flush=True)
                backend = subprocess.Popen([*_switchboard(), "backend", "up"], stdout=backend_log.open("w"),
                                           stderr=subprocess.STDOUT, start_new_session=True)
                _wait(BACKEND_URL + "/health", backend, "the backend", backend_log, 900)
                gateway_log = logs / "gateway.log"
                print(f"starting the gateway (log: {gateway_log}) ...", flush=True)
                gateway = subprocess.Popen([*_switchboard(), "gateway", "--config", gateway_config],
                                           stdout=gateway_log.open("w"), stderr=subprocess.STDOUT,
                                           start_new_session=True)
                _wait(GATEWAY_URL + "/health", gateway, "the gateway", gateway_log, 60)
                return run_console()
            except RuntimeError as exc:
                print(f"switchboard up: {exc}", file=sys.stderr)
                return 1
            finally:
                _stop(gateway)
                _stop(backend)
    except AlreadyRunning as exc:
        print(f"switchboard up: {exc}", file=sys.stderr)
        return 1
