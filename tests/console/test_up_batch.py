"""``switchboard up`` runs the batch queue: a redis-server (append-only file in the state directory), the gateway on
a copy of its config with ``batch.redis_url`` and a worker token, and one ``switchboard worker``. A batch sent with
the official openai SDK and the stack's local client key completes; everything stops with the stack. The stack
runs with ``--no-backend`` and a stand-in upstream; the console is a stand-in that runs the batch."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from console.stack import run_stack
from console.stack_batch import BATCH_CONFIG, WORKER_TOKEN_FILE, redis_answers
from console.statedir import CLIENT_KEY
from tests.batch_workers import chat_line, jsonl
from tests.gateway_harness import free_port, openai_target

TOKEN_VARIABLES = ("SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_VIEWER_TOKEN", "SWITCHBOARD_WORKER_TOKEN")
WITHIN_S = 120.0


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    for kind in ("state", "data", "config"):
        (tmp_path / kind).mkdir()
        monkeypatch.setenv(f"XDG_{kind.upper()}_HOME", str(tmp_path / kind))
    for name in TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": free_port(), "grace_period_s": 1, "log_level": "warning"},
        "admin": {"tokens": [{"name": "operator", "role": "operator", "token_env": TOKEN_VARIABLES[0]},
                             {"name": "viewer", "role": "viewer", "token_env": TOKEN_VARIABLES[1]}]},
        "targets": {"a": openai_target(standin(name="up").url, "model-a")},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"local": {"pool": "p"}},
    }, sort_keys=False))
    return config_path, tmp_path / "state" / "switchboard"


def test_up_runs_redis_and_a_worker_and_an_sdk_batch_completes(stack: tuple[Path, Path],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    gateway_config, state = stack
    seen: dict[str, Any] = {}

    def console() -> int:
        derived = yaml.safe_load((state / BATCH_CONFIG).read_text())
        seen["redis_url"] = derived["batch"]["redis_url"]
        assert {"name": "stack-worker", "role": "worker", "token_env": TOKEN_VARIABLES[2]} in derived["admin"]["tokens"]
        assert stat.S_IMODE((state / WORKER_TOKEN_FILE).stat().st_mode) == 0o600
        url = "http://" + gateway_url_of(gateway_config)
        client = openai.OpenAI(base_url=url + "/v1", api_key=(state / CLIENT_KEY).read_text().strip(), max_retries=3)
        uploaded = client.files.create(file=("b.jsonl", jsonl([chat_line(f"c{i}", model="local")
                                                               for i in range(5)])), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        deadline = time.monotonic() + WITHIN_S
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() < deadline, f"the batch did not finish: {batch.status}"
            time.sleep(0.2)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed", batch
        assert batch.output_file_id is not None
        lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
        seen["custom_ids"] = sorted(line["custom_id"] for line in lines)
        return 0

    assert run_stack(str(gateway_config), console, start_backend=False) == 0
    out = capsys.readouterr().out
    assert "batch queue: redis-server on 127.0.0.1:" in out and "starting one batch worker" in out
    assert seen["custom_ids"] == [f"c{i}" for i in range(5)]
    port = int(seen["redis_url"].rsplit(":", 1)[1].split("/")[0])
    assert not redis_answers(port), "redis-server stops with the stack"
    assert (state / "redis").is_dir() and any((state / "redis").iterdir())  # its append-only file
    assert "stopped" in (state / "worker.log").read_text()  # the worker drained and exited on SIGTERM


def gateway_url_of(config_path: Path) -> str:
    server = yaml.safe_load(config_path.read_text())["server"]
    return f"{server['host']}:{server['port']}"
