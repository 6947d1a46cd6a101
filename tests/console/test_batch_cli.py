"""`switchboard batch list|show|cancel` as a runbook would call them: subprocesses against a loopback admin API that
speaks the gateway's queue JSON and records each cancel with its reason and operator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.queue_data import QueueAdminAPI, batch, queue_snapshot
from tests.console.test_sanitize import CLEAR_SCREEN, RLO, unsafe
from tests.gateway_harness import console_config

RUNNING, FINISHED = "batch_6f1c2a9e0b7d4e31", "batch_c2b85e0f13a94d7e"


def switchboard(*args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "switchboard"
    assert executable.exists(), "the switchboard console script is missing: run `make test` (pip install -e .)"
    return subprocess.run([str(executable), *args], capture_output=True, text=True, timeout=60, env=os.environ)


@pytest.fixture
def api() -> Iterator[QueueAdminAPI]:
    server = QueueAdminAPI().start()
    yield server
    server.stop()


@pytest.fixture
def config(api: QueueAdminAPI, tmp_path: Path) -> str:
    return str(console_config(tmp_path / "console.yaml", api.url))


def test_list_shows_every_batch_in_flight_first(config: str) -> None:
    listing = switchboard("batch", "list", "--config", config)
    assert listing.returncode == 0, listing.stderr
    assert "5 batch(es)" in listing.stdout
    rows = [line for line in listing.stdout.splitlines() if line.startswith("batch_")]
    assert [row.split()[0] for row in rows] == [RUNNING, "batch_91d0c3aa57e24b08", "batch_0a4e77c1d9b35f62", FINISHED,
                                                "batch_5d3fa8b2e61c0497"]
    running = rows[0]
    assert running.startswith(RUNNING) and "in_progress" in running and "[███████·····]  55%" in running
    assert "1,116/2,000" in running and "nightly-evals" in running and "nightly eval: support answers" in running


def test_show_one_batch(config: str) -> None:
    show = switchboard("batch", "show", RUNNING, "--config", config)
    assert show.returncode == 0, show.stderr
    assert f"batch {RUNNING}: in_progress" in show.stdout
    assert "endpoint /v1/chat/completions, key nightly-evals" in show.stdout
    assert "1104 completed, 12 failed, 884 left of 2000" in show.stdout
    assert "description: nightly eval: support answers" in show.stdout


def test_show_an_unknown_batch_is_refused(config: str) -> None:
    show = switchboard("batch", "show", "batch_nope", "--config", config)
    assert show.returncode == 1 and "refused (404)" in show.stderr


def test_cancel_sends_the_reason_and_the_operator(api: QueueAdminAPI, config: str) -> None:
    cancel = switchboard("batch", "cancel", RUNNING, "--reason", "eval job superseded", "--config", config)
    assert cancel.returncode == 0, cancel.stderr
    assert f"cancel: batch {RUNNING} (chat, key nightly-evals): cancelling" in cancel.stdout
    assert api.cancels == [{"batch": RUNNING, "body": {"reason": "eval job superseded"},
                            "operator": "runbook@bastion"}]


def test_cancel_needs_a_reason(api: QueueAdminAPI, config: str) -> None:
    cancel = switchboard("batch", "cancel", RUNNING, "--config", config)
    assert cancel.returncode == 2 and "--reason" in cancel.stderr
    assert api.requests == []


def test_cancel_refuses_a_finished_batch_before_sending(api: QueueAdminAPI, config: str) -> None:
    cancel = switchboard("batch", "cancel", FINISHED, "--reason", "oops", "--config", config)
    assert cancel.returncode == 1
    assert f"cannot cancel batch {FINISHED}: batch is completed; nothing sent" in cancel.stderr
    assert api.cancels == [] and not any(method == "POST" for method, _ in api.requests)


def test_cancel_on_a_read_only_context_sends_nothing(api: QueueAdminAPI, config: str) -> None:
    cancel = switchboard("batch", "cancel", RUNNING, "--reason", "x", "--config", config, "--context", "viewonly")
    assert cancel.returncode == 1 and "read-only" in cancel.stderr
    assert api.requests == []


def test_an_unreachable_gateway_exits_2(config: str) -> None:
    listing = switchboard("batch", "list", "--config", config, "--context", "gone")
    assert listing.returncode == 2 and "unreachable" in listing.stderr


def test_server_strings_are_printed_as_visible_escapes(api: QueueAdminAPI, config: str) -> None:
    wall = time.time()
    api.snapshot = queue_snapshot(wall).model_copy(update={"batches": [
        batch(f"batch_{RLO}evil", "in_progress", 10, 1, 0, 60.0, wall, owner=f"eve{CLEAR_SCREEN}",
              description=f"d{CLEAR_SCREEN}")]})
    listing = switchboard("batch", "list", "--config", config)
    assert listing.returncode == 0, listing.stderr
    assert unsafe(listing.stdout.replace("\n", "")) == []
    assert "batch_<U+202E>evil" in listing.stdout and "eve␛[2J" in listing.stdout and "d␛[2J" in listing.stdout
