"""The batch queue of ``switchboard up``: a redis-server for it (when one is installed and the gateway config names
no Redis of its own) and a worker token, written into a copy of the gateway config that the gateway and the stack's
one ``switchboard worker`` both read (one source of truth for ``batch:``).

The copy (``gateway-batch.yaml`` in the state directory) is the user's config with ``batch.redis_url`` filled in and,
unless the config has one already, an admin token of role ``worker`` read from ``$SWITCHBOARD_WORKER_TOKEN`` (or a
0600 file in the state directory, generated on the first run). Redis keeps its append-only file in the state
directory, so queued batches survive a restart of the stack.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from console.statedir import ensure_secret, write_secret

WORKER_TOKEN_ENV = "SWITCHBOARD_WORKER_TOKEN"
WORKER_TOKEN_FILE = "worker-token"
BATCH_CONFIG = "gateway-batch.yaml"
REDIS_DIR = "redis"
WORKER_NAME = "stack-worker"


@dataclass(frozen=True)
class BatchPlan:
    """What the stack starts for batches: the config the gateway and worker read, the worker token's variable and
    value, and the redis-server command line when the stack runs Redis itself."""

    config_path: str
    token_env: str
    token: str
    redis_argv: list[str] | None = None
    redis_port: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {self.token_env: self.token}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan_batch(gateway_config: str, directory: Path) -> tuple[BatchPlan | None, str]:
    """The batch queue to run beside the gateway, or None and why not (a line to print)."""
    data: dict[str, Any] = yaml.safe_load(Path(gateway_config).read_text()) or {}
    batch = dict(data.get("batch") or {})
    notes: list[str] = []
    redis_argv = redis_port = None
    if not batch.get("redis_url"):
        binary = shutil.which("redis-server")
        if binary is None:
            return None, ("batch API off: redis-server is not installed (`apt-get install redis-server`) and the "
                          "gateway config names no batch.redis_url")
        redis_port = _free_port()
        redis_dir = directory / REDIS_DIR
        redis_dir.mkdir(mode=0o700, exist_ok=True)
        redis_argv = [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
                      "--appendonly", "yes", "--save", "", "--daemonize", "no"]
        batch["redis_url"] = f"redis://127.0.0.1:{redis_port}/0"
        notes.append(f"batch queue: redis-server on 127.0.0.1:{redis_port} (append-only file in {redis_dir})")
    else:
        notes.append("batch queue: the Redis the gateway config names (batch.redis_url)")
    admin = dict(data.get("admin") or {})
    tokens = list(admin.get("tokens") or [])
    spec = next((t for t in tokens if isinstance(t, dict) and t.get("role") == "worker"), None)
    token_path = directory / WORKER_TOKEN_FILE
    if spec is None:
        tokens.append({"name": WORKER_NAME, "role": "worker", "token_env": WORKER_TOKEN_ENV})
        token_env = WORKER_TOKEN_ENV
        token = os.environ.get(token_env) or ensure_secret(token_path)[0]
    elif spec.get("token_env"):
        token_env = str(spec["token_env"])
        token = os.environ.get(token_env) or ensure_secret(token_path)[0]
    else:
        token_env = WORKER_TOKEN_ENV
        try:
            token = Path(str(spec["token_file"])).read_text().strip()
        except OSError:
            token = ""
        if not token:
            return None, f"batch workers off: the worker token file {spec['token_file']} is empty or unreadable"
    admin["tokens"] = tokens
    derived = {**data, "admin": admin, "batch": batch}
    path = directory / BATCH_CONFIG
    write_secret(path, yaml.safe_dump(derived, sort_keys=False), replace=True)
    notes.append(f"  gateway and worker config: {path} (your config with batch.redis_url and a worker token)")
    return BatchPlan(str(path), token_env, token, redis_argv, redis_port, notes), ""


def redis_answers(port: int) -> bool:
    """Whether a Redis on ``port`` answers PING (raw RESP: no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
