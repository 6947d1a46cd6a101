"""Runs a real gateway on loopback for tests: uvicorn in a background thread, real HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn
import yaml

from services.gateway.config import parse_config
from services.gateway.server import build_app, uvicorn_config
from tests.server_process import free_port

OPERATOR_TOKEN = "test-operator-token"
VIEWER_TOKEN = "test-viewer-token"
os.environ["SWITCHBOARD_TEST_OPERATOR_TOKEN"] = OPERATOR_TOKEN
os.environ["SWITCHBOARD_TEST_VIEWER_TOKEN"] = VIEWER_TOKEN
ADMIN_TOKENS = [
    {"name": "test-operator", "role": "operator", "token_env": "SWITCHBOARD_TEST_OPERATOR_TOKEN"},
    {"name": "test-viewer", "role": "viewer", "token_env": "SWITCHBOARD_TEST_VIEWER_TOKEN"},
]


def auth(token: str = OPERATOR_TOKEN, operator: str | None = None) -> dict[str, str]:
    headers = {"authorization": f"Bearer {token}"}
    if operator:
        headers["x-switchboard-operator"] = operator
    return headers


# How openai targets send ("direct" or "sdk"); test modules that cover both switch it per test.
CLIENT_MODE = "direct"


def openai_target(url: str, model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "base_url": url + "/v1", "client": CLIENT_MODE, **extra}


def primary_backup(a_url: str, b_url: str, **a_extra: Any) -> dict[str, Any]:
    """Target a (model-a) in pool primary, b (model-b) in pool backup; route r falls back from a to b."""
    return {
        **fast_settings(),
        "targets": {"a": openai_target(a_url, "model-a", **a_extra), "b": openai_target(b_url, "model-b")},
        "pools": {"primary": {"targets": {"a": 100}}, "backup": {"targets": {"b": 100}}},
        "routes": {"r": {"pool": "primary", "fallback": ["backup"]}},
    }


def console_config(path: Path, admin_url: str) -> Path:
    """A console config for the CLI tests: contexts test (operator), viewonly (read-only), viewer (viewer
    token) and gone (nothing listening)."""
    path.write_text(yaml.safe_dump({
        "current": "test",
        "operator": "runbook@bastion",
        "contexts": {
            "test": {"admin_url": admin_url, "token_env": "SWITCHBOARD_TEST_OPERATOR_TOKEN"},
            "viewonly": {"admin_url": admin_url, "token_env": "SWITCHBOARD_TEST_OPERATOR_TOKEN", "readonly": True},
            "viewer": {"admin_url": admin_url, "token_env": "SWITCHBOARD_TEST_VIEWER_TOKEN"},
            "gone": {"admin_url": f"http://127.0.0.1:{free_port()}", "token_env": "SWITCHBOARD_TEST_VIEWER_TOKEN"},
        },
    }))
    return path


def client_for(gw: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)


def fast_settings(**overrides: Any) -> dict[str, Any]:
    """Health, retry and cooldown settings small enough for tests to watch them act."""
    settings: dict[str, Any] = {
        "server": {"log_level": "warning"},
        "health": {"error_window_s": 60, "breaker": {"error_rate_threshold": 0.5, "min_requests": 4,
                                                       "cooldown_s": 1.0}},
        "retry": {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "budget_s": 1.0},
        "cooldowns": {"rate_limit_default_s": 5, "auth_s": 30},
        "admin": {"tokens": ADMIN_TOKENS},
        "auth": {"mode": "open"},  # tests about client keys set mode 'keys'
    }
    settings.update(overrides)
    return settings


class RunningGateway:
    """A gateway app served by uvicorn on a free port in a daemon thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        config = {**config, "state": dict(config.get("state", {}))}
        if config["state"].get("backend", "sqlite") == "sqlite":
            config["state"].setdefault("path", os.path.join(tempfile.mkdtemp(prefix="sb-state-"), "state.db"))
        self.config = parse_config(config, "<test>")
        self.app = build_app(self.config)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn_config(self.app, self.config, self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def state(self) -> dict[str, Any]:
        return httpx.get(self.url + "/admin/state", headers=auth(VIEWER_TOKEN)).json()

    def target_state(self, name: str) -> dict[str, Any]:
        return next(t for t in self.state()["targets"] if t["name"] == name)

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics").text


class GatewayProcess:
    """`switchboard gateway` as a real process, for signals, kill -9 and multi-replica tests."""

    def __init__(self, config: dict[str, Any], workdir: str, name: str = "gateway") -> None:
        self.port = config.get("server", {}).get("port") or free_port()
        config = {**config, "server": {**config.get("server", {}), "port": self.port}}
        self.path = os.path.join(workdir, f"{name}.yaml")
        with open(self.path, "w") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)
        self.env = {**os.environ, "XDG_DATA_HOME": os.path.join(workdir, "data")}
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = os.path.join(workdir, f"{name}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Self:
        executable = shutil.which("switchboard", path=os.path.dirname(sys.executable))
        assert executable, "the switchboard console script is missing: run `make test` (pip install -e .)"
        log = open(self.log_path, "a")  # the process owns it until it exits
        self.proc = subprocess.Popen([executable, "gateway", "--config", self.path], stdout=log,
                                     stderr=subprocess.STDOUT, text=True, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited: {open(self.log_path).read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("gateway did not become healthy")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def state(self) -> dict[str, Any]:
        return httpx.get(self.url + "/admin/state", headers=auth(VIEWER_TOKEN), timeout=5).json()
