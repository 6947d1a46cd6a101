"""The Queue pane, the cancel key and ``switchboard batch`` against a real gateway and a real redis-server: a batch
created with the openai SDK (no worker runs, so it waits in the chat stream) shows in the pane with its stream; the
cancel reaches the gateway, which cancels it and audits batch.cancel with the reason and the operator."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from console.app import PANE_IDS, create_app
from console.panes import QueuePane
from console.screens import ConfirmScreen
from tests.console.pilot_helpers import console_context, type_text, wait_for
from tests.gateway_harness import VIEWER_TOKEN, RunningGateway, auth, console_config, fast_settings, openai_target
from tests.redis_server import RedisServer

QUEUE_DIGIT = str(PANE_IDS.index("queue") + 1)
WITHIN_S = 20.0  # polls of a real gateway on a loaded machine


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def gw(gateway, redis_server: RedisServer, request: pytest.FixtureRequest) -> RunningGateway:
    return gateway({
        **fast_settings(auth={"mode": "open"}),
        "targets": {"a": openai_target("http://127.0.0.1:9", "model-a")},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"chat": {"pool": "p"}},
        "batch": {"redis_url": redis_server.url, "prefix": f"sb-console-{request.node.name[-24:]}"},
    })


def create_batch(gw: RunningGateway, requests: int, description: str) -> Any:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused-in-open-mode", max_retries=0)
    lines = [{"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "chat", "messages": [{"role": "user", "content": f"say {n}"}]}}
             for n in range(requests)]
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    upload = client.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                 metadata={"description": description})


def cancel_records(gw: RunningGateway) -> list[dict[str, Any]]:
    entries = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN), timeout=10).json()["entries"]
    return [e for e in entries if e["action"] == "batch.cancel"]


@pytest.mark.anyio
async def test_the_pane_shows_a_queued_batch_and_cancels_it_through_the_gateway(gw: RunningGateway) -> None:
    batch = create_batch(gw, 3, "nightly evals")
    app = create_app(console_context(gw, poll_interval_s=0.3, timeout_s=2.0), operator="alice@bastion")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press(QUEUE_DIGIT)
        pane = app.query_one(QueuePane)
        await wait_for(pilot, lambda: batch.id in pane.body.row_keys, WITHIN_S, "the batch in the Queue pane")
        assert pane.streams.get_cell("chat", "depth") == "3"
        assert pane.streams.get_cell("chat", "note") == "no workers"  # none runs in this test
        assert pane.body.get_cell(batch.id, "status") == "in_progress"
        assert pane.body.get_cell(batch.id, "done") == "0/3"
        assert pane.body.get_cell(batch.id, "description") == "nightly evals"
        assert pane.body.move_to(batch.id)
        await wait_for(pilot, lambda: app.availability("batch_cancel") is True, WITHIN_S, "the cancel key")
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), WITHIN_S, "the confirm dialog")
        await pilot.press("tab")
        await type_text(pilot, "wrong model")
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: batch.id in pane.body.row_keys
                       and pane.body.get_cell(batch.id, "status") == "cancelled", WITHIN_S, "the batch cancelled")
        await wait_for(pilot, lambda: pane.streams.get_cell("chat", "depth") == "0", WITHIN_S, "the stream emptied")
    [record] = cancel_records(gw)
    assert (record["target"], record["reason"], record["operator"]) == (batch.id, "wrong model", "alice@bastion")
    assert (record["before"], record["after"]) == ({"status": "in_progress"}, {"status": "cancelled"})


def switchboard(*args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "switchboard"
    assert executable.exists(), "the switchboard console script is missing: run `make test` (pip install -e .)"
    return subprocess.run([str(executable), *args], capture_output=True, text=True, timeout=60, env=os.environ)


def test_the_batch_verbs_against_the_gateway(gw: RunningGateway, tmp_path: Path) -> None:
    batch = create_batch(gw, 2, "back-fill")
    config = str(console_config(tmp_path / "console.yaml", gw.url))
    listing = switchboard("batch", "list", "--config", config)
    assert listing.returncode == 0, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if line.startswith(batch.id)]
    assert "in_progress" in row and "0/2" in row and "back-fill" in row
    show = switchboard("batch", "show", batch.id, "--config", config)
    assert show.returncode == 0, show.stderr
    assert f"batch {batch.id}: in_progress" in show.stdout and "0 completed, 0 failed, 2 left of 2" in show.stdout
    cancel = switchboard("batch", "cancel", batch.id, "--reason", "superseded", "--config", config)
    assert cancel.returncode == 0, cancel.stderr
    assert f"cancel: batch {batch.id} (chat): cancelled" in cancel.stdout
    again = switchboard("batch", "cancel", batch.id, "--reason", "twice", "--config", config)
    assert again.returncode == 1 and "batch is cancelled; nothing sent" in again.stderr
    [record] = cancel_records(gw)
    assert (record["target"], record["reason"], record["operator"]) == (batch.id, "superseded", "runbook@bastion")
