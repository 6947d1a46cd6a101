"""What the batch worker tests share: a gateway config with the batch queue and a worker token, queueing requests
through the real store, and ``switchboard worker`` as a real process (for SIGTERM and kill -9)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any, Self

import yaml

from tests.gateway_harness import ADMIN_TOKENS, fast_settings, openai_target

WORKER_TOKEN = "test-worker-token"
WORKER_TOKEN_ENV = "SWITCHBOARD_TEST_WORKER_TOKEN"
os.environ[WORKER_TOKEN_ENV] = WORKER_TOKEN
WORKER_ADMIN_TOKEN = {"name": "batch-worker", "role": "worker", "token_env": WORKER_TOKEN_ENV}


def batch_config(upstream_url: str, redis_url: str, *, batch: dict[str, Any] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    """Open mode, route ``m`` to one stand-in, the batch queue on ``redis_url``, a worker token; the gateway
    retries nothing itself, so the worker's own retries are what a test sees."""
    settings = fast_settings(**overrides)
    settings["admin"] = {"tokens": [*ADMIN_TOKENS, WORKER_ADMIN_TOKEN]}
    settings["retry"] = {**settings["retry"], "max_retries": 0}
    return {
        **settings,
        "targets": {"a": openai_target(upstream_url)},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"m": {"pool": "p"}},
        "batch": {"redis_url": redis_url, "prefix": f"sbtest{os.getpid()}:batch", "visibility_timeout_s": 2.0,
                  **(batch or {})},
    }


def chat_line(custom_id: str, text: str = "hello", model: str = "m") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


class WorkerProcess:
    """``switchboard worker`` as a real process."""

    def __init__(self, config: dict[str, Any], gateway_url: str, workdir: str, name: str = "worker",
                 concurrency: int = 4, extra: list[str] | None = None) -> None:
        self.name = name
        self.config_path = os.path.join(workdir, f"{name}-gateway.yaml")
        with open(self.config_path, "w") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)
        self.log_path = os.path.join(workdir, f"{name}.log")
        executable = shutil.which("switchboard", path=os.path.dirname(sys.executable))
        assert executable, "the switchboard console script is missing: run `make test` (pip install -e .)"
        self.argv = [executable, "worker", "--config", self.config_path, "--gateway-url", gateway_url,
                     "--token-env", WORKER_TOKEN_ENV, "--name", name, "--concurrency", str(concurrency),
                     "--backoff-s", "0.05", *(extra or [])]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        log = open(self.log_path, "ab")  # the process owns it until it exits
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

