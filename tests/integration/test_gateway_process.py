"""The gateway as a process: `switchboard gateway` start-up, bad config, SIGTERM drain."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from services.gateway.config import example_config_path
from tests.gateway_harness import OPERATOR_TOKEN, VIEWER_TOKEN, auth, free_port, openai_target
from tests.standins import Fault

MESSAGES = [{"role": "user", "content": "hello"}]


def switchboard() -> list[str]:
    found = shutil.which("switchboard", path=str(Path(sys.executable).parent))
    assert found, "the switchboard console script is missing: run `make test` (pip install -e .)"
    return [found]


def start(config_path: Path) -> subprocess.Popen:
    env = {**os.environ, "XDG_DATA_HOME": str(config_path.parent / "data"), "SWITCHBOARD_VIEWER_TOKEN": VIEWER_TOKEN,
           "SWITCHBOARD_ADMIN_TOKEN": OPERATOR_TOKEN}
    return subprocess.Popen([*switchboard(), "gateway", "--config", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "gateway exited"
        try:
            if httpx.get(url + "/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("gateway did not become healthy")


def test_bad_config_fails_start_up_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"targets": {"t": {"provider": "openai", "model": "m"}},
                                    "pools": {"p": {"targets": {"t": "lots"}}}, "routes": {"r": {"pool": "p"}}}))
    result = subprocess.run([*switchboard(), "gateway", "--config", str(path)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert f"{path}: invalid configuration" in result.stderr
    assert "pools.p.targets.t: Input should be a valid integer" in result.stderr


def test_example_config_serves_streamed_and_plain_completions(standin, tmp_path: Path) -> None:
    """The shipped config with the local pool pointed at a stand-in vLLM and no cloud keys set."""
    local = standin(name="vllm")
    config = yaml.safe_load(example_config_path().read_text())
    port = free_port()
    config["server"]["port"] = port
    config["targets"]["vllm-local/smollm2"]["base_url"] = local.url + "/v1"
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = start(path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        anonymous = openai.OpenAI(base_url=url + "/v1", api_key="sk-sb-not-a-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anonymous.chat.completions.create(model="auto", messages=MESSAGES)
        created = httpx.post(url + "/admin/keys", headers=auth(OPERATOR_TOKEN),
                             json={"name": "example", "owner": "tests", "reason": "example config test"})
        assert created.status_code == 201, created.text
        client = openai.OpenAI(base_url=url + "/v1", api_key=created.json()["key"], max_retries=0)
        assert [m.id for m in client.models.list()] == ["auto", "gpt4", "mini", "anthropic", "local"]
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
        assert raw.headers["x-switchboard-target"] == "vllm-local/smollm2"
        assert raw.parse().choices[0].message.content == "Hello from vllm"
        chunks = list(client.chat.completions.create(model="local", messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from vllm"
        state = httpx.get(url + "/admin/state", headers=auth(VIEWER_TOKEN)).json()
        local_state = next(t for t in state["targets"] if t["name"] == "vllm-local/smollm2")
        assert local_state["window_requests"] == 2 and local_state["p50_ms"] is not None
        assert {t["name"]: t["status"] for t in state["targets"]}["openai/gpt-4o"] == "disabled"
        assert httpx.get(url + "/ready").json()["status"] == "ready"
        metrics = httpx.get(url + "/metrics").text
        assert 'switchboard_requests_total{route="auto",status_class="2xx"} 1.0' in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sigterm_drains_in_flight_requests_and_exits_zero(standin, tmp_path: Path) -> None:
    upstream = standin(name="slow")
    upstream.set_default(Fault.slow_first_byte(1.5))
    port = free_port()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"port": port, "grace_period_s": 10, "log_level": "warning"},
        "auth": {"mode": "open"},
        "targets": {"t": openai_target(upstream.url)},
        "pools": {"p": {"targets": {"t": 100}}},
        "routes": {"r": {"pool": "p"}},
    }))
    proc = start(path)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    results: list[httpx.Response | Exception] = []

    def call() -> None:
        try:
            results.append(httpx.post(url + "/v1/chat/completions", json={"model": "r", "messages": MESSAGES},
                                      timeout=10))
        except Exception as exc:
            results.append(exc)

    callers = [threading.Thread(target=call) for _ in range(3)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 5
    while len(upstream.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=1)
    for caller in callers:
        caller.join(timeout=10)
    assert proc.wait(timeout=15) == 0
    assert [getattr(r, "status_code", r) for r in results] == [200, 200, 200]
