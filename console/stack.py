"""``switchboard up``: the bundled backend, the gateway on the example config, and the console on top.

The backend and gateway run as child processes with their output in log files (the console owns the
terminal). Quitting the console stops both. A lock file holds the running stack's PID, so a second
``switchboard up`` says so instead of fighting over ports.

Tokens: the operator and viewer tokens come from ``$SWITCHBOARD_ADMIN_TOKEN`` / ``$SWITCHBOARD_VIEWER_TOKEN``
when set, else from 0600 files in the state directory, generated on the first run and reused after
(so consoles and scripts that read them keep working across restarts; delete a file to rotate it).
The gateway gets them as those two environment variables, which is what the example config's
``admin.tokens`` name: a custom gateway config keeps its own token settings untouched. The stack's
record (``stack.json``) tells a second terminal where the admin API is and which file holds the token.

With ``--sim-cluster [SCENARIO]`` the stack also runs kubesim (``switchboard kubesim``, a SIMULATED Kubernetes API)
on that scenario, after the gateway and fed by its ``/metrics``; its kubeconfig (0600, bearer tokens) is written to
the state directory, named in the record, and is the console's ``$KUBECONFIG``. It stops with the stack.

Batches: when redis-server is installed (or the gateway config names a ``batch.redis_url``), the stack runs a Redis
for the batch queue, the gateway on a copy of its config with the queue and a worker token filled in, and one
``switchboard worker`` on that same copy (see console/stack_batch.py). They stop with the stack: the worker first
(it drains), Redis after the gateway.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from console.contexts import ContextError, default_operator
from console.localkey import KEY_TIER, LocalKey, ensure_local_key
from console.sources.gateway import AdminError, SourceDown
from console.stack_batch import WORKER_NAME, BatchPlan, plan_batch, redis_answers
from console.statedir import (
    KUBECONFIG,
    OPERATOR_TOKEN,
    STACK_LOCK,
    VIEWER_TOKEN,
    SecretFileError,
    StackRecord,
    ensure_secret,
    remove_stack_record,
    state_dir,
    write_stack_record,
)

BACKEND_URL = "http://127.0.0.1:8000"
OPERATOR_TOKEN_ENV = "SWITCHBOARD_ADMIN_TOKEN"
VIEWER_TOKEN_ENV = "SWITCHBOARD_VIEWER_TOKEN"

__all__ = ["AlreadyRunning", "run_stack", "stack_lock", "state_dir"]


class AlreadyRunning(Exception):
    pass


class StackError(Exception):
    """The stack cannot start; the message says what and where."""


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
        token_file = path.parent / OPERATOR_TOKEN
        raise AlreadyRunning(
            f"a Switchboard stack is already running (pid {holder}); `switchboard console` opens another console "
            f"on it and `switchboard status` shows its health (they read the operator token from "
            f"${OPERATOR_TOKEN_ENV} when set, else from {token_file}); stop it by quitting its console") from None
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


@dataclass(frozen=True)
class GatewayAddress:
    """Where the gateway a config describes listens, as a client on this host reaches it."""

    url: str
    admin_url: str
    example_route: str


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def gateway_address(config_path: str) -> GatewayAddress:
    """Read the listener addresses from the gateway config (YAML only: the console never imports the gateway)."""
    try:
        data = yaml.safe_load(Path(config_path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"cannot read gateway config {config_path}: {exc}") from None
    if not isinstance(data, dict):
        raise StackError(f"gateway config {config_path}: expected a mapping at the top level")
    server = data.get("server") or {}
    admin = data.get("admin") or {}
    host, port = server.get("host", "127.0.0.1"), server.get("port", 8080)
    if not isinstance(port, int) or port <= 0:
        raise StackError(f"gateway config {config_path}: `switchboard up` needs a fixed server.port, got {port!r}")
    url = f"http://{_client_host(str(host))}:{port}"
    admin_url = url
    if admin.get("host") is not None and isinstance(admin.get("port"), int):
        admin_url = f"http://{_client_host(str(admin['host']))}:{admin['port']}"
    routes = list(data.get("routes") or {})
    return GatewayAddress(url, admin_url, "local" if "local" in routes else (routes[0] if routes else "auto"))


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # what start-up prints: the file and whether it was generated, or the variable


def _token(env: str, path: Path) -> Token:
    if os.environ.get(env):
        return Token(os.environ[env], f"from ${env} (a second terminal needs the same variable)")
    value, created = ensure_secret(path)
    return Token(value, f"{path} (mode 0600, {'generated' if created else 'reused'})")


def _die_with_parent() -> None:
    """In the child: SIGTERM when `switchboard up` dies, even by SIGKILL or a dropped SSH session (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    kwargs: dict[str, Any] = {"preexec_fn": _die_with_parent} if sys.platform == "linux" else {}
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=env, **kwargs)


def _switchboard() -> list[str]:
    return [sys.executable, "-m", "console.cli"]


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{what} exited with {proc.returncode}; last log lines ({log}):\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.5)
    raise StackError(f"{what} not healthy after {timeout_s:.0f} s; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, grace_s: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _start_kubesim(scenario: str, address: GatewayAddress, kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    """``switchboard kubesim`` on ``scenario``, fed by the gateway; ready once it has written its kubeconfig (it
    writes it after the scenario's objects exist)."""
    print(f"starting kubesim, a SIMULATED cluster, on scenario {scenario} (log: {log}) ...", flush=True)
    with contextlib.suppress(FileNotFoundError):
        kubeconfig.unlink()  # a previous stack's file would look ready
    proc = _start([*_switchboard(), "kubesim", scenario, "--kubeconfig", str(kubeconfig),
                   "--gateway-url", address.url], log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"kubesim exited with {proc.returncode}; last log lines ({log}):\n{tail}")
        with contextlib.suppress(OSError, yaml.YAMLError):
            if (yaml.safe_load(kubeconfig.read_text()) or {}).get("current-context"):  # its last key: complete
                print(f"  kubeconfig: {kubeconfig} (mode 0600; the console's $KUBECONFIG)", flush=True)
                return proc
        time.sleep(0.5)
    _stop(proc)
    raise StackError(f"kubesim did not write {kubeconfig} within 60 s; see {log}")


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``$name`` set to ``value`` for the console (and the processes it starts), restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _client_key_lines(address: GatewayAddress, operator_token: str, directory: Path) -> list[str]:
    """Create or reuse the local client key; the lines that say where it is and how to use it (never the key)."""
    try:
        key: LocalKey = ensure_local_key(address.admin_url, operator_token, default_operator(), directory)
    except AdminError as exc:
        return [f"no local client key: the admin API refused ({exc.status}): {exc.message}"]
    except (SourceDown, SecretFileError, OSError) as exc:
        return [f"no local client key: {exc}"]
    how = (f"created {key.key_id}" + (f": {key.why_new}" if key.why_new else "")) if key.created \
        else f"reused {key.key_id}"
    quoted = shlex.quote(str(key.path))
    return [
        f"client key: {key.path} (mode 0600, tier {KEY_TIER}, {how})",
        "  try it:",
        f"  curl -s {address.url}/v1/chat/completions -H \"authorization: Bearer $(cat {quoted})\" \\",
        "    -H 'content-type: application/json' \\",
        f"    -d '{{\"model\": \"{address.example_route}\", \"messages\": [{{\"role\": \"user\", "
        f"\"content\": \"Say hello\"}}]}}'",
        f"  OPENAI_BASE_URL={address.url}/v1 OPENAI_API_KEY=\"$(cat {quoted})\" python -c "
        f"'import openai; print(openai.OpenAI().models.list())'",
    ]


def run_stack(gateway_config: str, run_console: Callable[[], int], *, start_backend: bool = True,
              sim_cluster: str | None = None) -> int:
    """Start backend (unless told not to) and gateway, and kubesim on the ``sim_cluster`` scenario when one is
    named, run the console in the foreground, stop them all after.

    ``run_console`` is called once the gateway is healthy and the stack's record is written, so a console
    on the embedded ``local`` context reaches this stack.
    """
    try:
        address = gateway_address(gateway_config)
        directory = state_dir()
        with stack_lock(directory / STACK_LOCK):
            operator = _token(OPERATOR_TOKEN_ENV, directory / OPERATOR_TOKEN)
            viewer = _token(VIEWER_TOKEN_ENV, directory / VIEWER_TOKEN)
            record = StackRecord(os.getpid(), address.url, address.admin_url, str(directory / OPERATOR_TOKEN))
            write_stack_record(directory, record)
            print(f"state directory: {directory}\n  operator token: {operator.source}\n"
                  f"  viewer token:   {viewer.source}\n"
                  "  another terminal: `switchboard console`, `switchboard status`, `switchboard weights show` "
                  "reach this stack", flush=True)
            try:
                return _run(address, gateway_config, directory, operator, viewer, run_console, start_backend,
                            (sim_cluster, record) if sim_cluster is not None else None)
            finally:
                remove_stack_record(directory)
    except (AlreadyRunning, StackError, SecretFileError, ContextError) as exc:
        print(f"switchboard up: {exc}", file=sys.stderr)
        return 1


def _start_redis(plan: BatchPlan, directory: Path) -> subprocess.Popen[bytes]:
    """The stack's redis-server for the batch queue; ready once it answers PING."""
    assert plan.redis_argv is not None and plan.redis_port is not None
    log = directory / "redis.log"
    proc = _start(plan.redis_argv, log)
    deadline = time.monotonic() + 30
    while not redis_answers(plan.redis_port):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"redis-server exited with {proc.returncode}; last log lines ({log}):\n{tail}")
        if time.monotonic() > deadline:
            _stop(proc)
            raise StackError(f"redis-server did not answer on port {plan.redis_port} within 30 s; see {log}")
        time.sleep(0.1)
    return proc


def _start_worker(plan: BatchPlan, address: GatewayAddress, directory: Path,
                  env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = directory / "worker.log"
    print(f"starting one batch worker (log: {log}) ...", flush=True)
    return _start([*_switchboard(), "worker", "--config", plan.config_path, "--gateway-url", address.url,
                   "--token-env", plan.token_env, "--name", WORKER_NAME], log, env)


def _run(address: GatewayAddress, gateway_config: str, directory: Path, operator: Token, viewer: Token,
         run_console: Callable[[], int], start_backend: bool, sim_cluster: tuple[str, StackRecord] | None) -> int:
    backend = gateway = kubesim = redis = worker = None
    try:
        if start_backend:
            backend_log = directory / "backend.log"
            print(f"starting the vLLM backend (log: {backend_log}) ...", flush=True)
            backend = _start([*_switchboard(), "backend", "up"], backend_log)
            _wait(BACKEND_URL + "/health", backend, "the backend", backend_log, 900)
        env = {**os.environ, OPERATOR_TOKEN_ENV: operator.value, VIEWER_TOKEN_ENV: viewer.value}
        batch, why_not = plan_batch(gateway_config, directory)
        if batch is None:
            print(why_not, flush=True)
        else:
            print("\n".join(batch.notes), flush=True)
            env.update(batch.env)
            gateway_config = batch.config_path
            if batch.redis_argv is not None:
                redis = _start_redis(batch, directory)
        gateway_log = directory / "gateway.log"
        print(f"starting the gateway on {address.url} (log: {gateway_log}) ...", flush=True)
        gateway = _start([*_switchboard(), "gateway", "--config", gateway_config], gateway_log, env)
        _wait(address.url + "/health", gateway, "the gateway", gateway_log, 60)
        if batch is not None:
            worker = _start_worker(batch, address, directory, env)
        print("\n".join(_client_key_lines(address, operator.value, directory)), flush=True)
        if sim_cluster is None:
            return run_console()
        scenario, record = sim_cluster
        kubeconfig = directory / KUBECONFIG
        kubesim = _start_kubesim(scenario, address, kubeconfig, directory / "kubesim.log")
        write_stack_record(directory, dataclasses.replace(record, kubeconfig=str(kubeconfig)))
        with _environment("KUBECONFIG", str(kubeconfig)):
            return run_console()
    finally:
        _stop(kubesim)
        _stop(worker)
        _stop(gateway)
        _stop(redis)
        _stop(backend)
