"""`switchboard bench run|list|show|compare` end to end: the console script against the OpenAI stand-in, runs
kept under $XDG_DATA_HOME/switchboard/bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.standins.server import Fault, Standin

KEY_ENV = "SB_BENCH_CLI_KEY"


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    return tmp_path / "data"


def switchboard(data_home: Path, *args: str, key: bool = True) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "switchboard"
    assert executable.exists(), "the switchboard console script is missing: run `make test` (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env["XDG_DATA_HOME"] = str(data_home)
    if key:
        env[KEY_ENV] = "sk-cli-test"
    return subprocess.run([str(executable), "bench", *args], capture_output=True, text=True, env=env, timeout=120)


def run_args(server: Standin, *extra: str) -> list[str]:
    return ["run", "--base-url", server.url, "--api-key-env", KEY_ENV, "--num-prompts", "6", "--input-len", "20",
            "--output-len", "3", *extra]


def test_run_list_show_compare(standin: Callable[..., Standin], data_home: Path) -> None:
    server = standin(reply="alpha beta gamma delta")
    server.set_default(Fault.paced(first_s=0.01, gap_s=0.005))
    first = switchboard(data_home, *run_args(server, "--label", "base", "--max-concurrency", "2",
                                              "--goodput", "ttft:10000"))
    assert first.returncode == 0, first.stderr
    assert "Serving Benchmark Result" in first.stdout and "Successful requests:" in first.stdout
    assert "Median TTFT (ms):" in first.stdout and "tokens: estimate" in first.stdout
    assert "sk-cli-test" not in first.stdout + first.stderr
    files = list((data_home / "switchboard" / "bench").glob("*-base.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["completed"] == 6 and saved["total_output_tokens"] == 18 and saved["request_goodput"] > 0
    assert saved["switchboard"]["spec"]["api_key_env"] == KEY_ENV
    assert "sk-cli-test" not in files[0].read_text()

    second = switchboard(data_home, *run_args(server, "--endpoint", "chat", "--json"))
    assert second.returncode == 0, second.stderr
    [output] = json.loads(second.stdout)
    assert output["backend"] == "openai-chat" and output["completed"] == 6

    listing = switchboard(data_home, "list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert len(lines) == 3 and files[0].stem in lines[1] and "completions" in lines[1] and "chat" in lines[2]

    show = switchboard(data_home, "show", files[0].stem)
    assert show.returncode == 0 and "runner builtin" in show.stdout and "Request goodput" in show.stdout

    compared = switchboard(data_home, "compare", files[0].stem, "last", "--json")
    assert compared.returncode == 0, compared.stderr
    rows = {r["metric"]: r for r in json.loads(compared.stdout)["rows"]}
    assert rows["completed"]["ratio"] == 1.0
    assert rows["total_output_tokens"]["a"] == rows["total_output_tokens"]["b"] == 18
    table = switchboard(data_home, "compare", "-2", "-1")
    assert table.returncode == 0 and "B/A" in table.stdout and "median_ttft_ms" in table.stdout


def test_bad_input_is_refused_with_a_message_and_saves_nothing(standin: Callable[..., Standin],
                                                                data_home: Path) -> None:
    server = standin(reply="alpha beta")
    unset = switchboard(data_home, *run_args(server), key=False)
    assert unset.returncode == 2 and KEY_ENV in unset.stderr
    bad = switchboard(data_home, *run_args(server, "--goodput", "latency:5"))
    assert bad.returncode == 2 and "goodput" in bad.stderr
    no_url = switchboard(data_home, "run", "--num-prompts", "1")
    assert no_url.returncode == 2 and "--base-url" in no_url.stderr
    mixed = switchboard(data_home, *run_args(server, "--dataset", "jsonl", "--dataset-path", "/nonexistent.jsonl"))
    assert mixed.returncode == 2 and "input_len" in mixed.stderr  # random's lengths do not apply to a file
    missing = switchboard(data_home, "run", "--base-url", server.url, "--api-key-env", KEY_ENV,
                          "--dataset", "jsonl", "--dataset-path", "/nonexistent.jsonl")
    assert missing.returncode == 2 and "cannot read /nonexistent.jsonl" in missing.stderr
    runs = data_home / "switchboard" / "bench"
    assert not runs.exists() or not list(runs.iterdir())
    assert [r for r in server.requests if r.path.endswith("completions")] == []
    unknown = switchboard(data_home, "show", "20990101T000000Z")
    assert unknown.returncode == 2 and "no run" in unknown.stderr


def test_a_run_where_every_request_fails_exits_1_and_is_kept(standin: Callable[..., Standin],
                                                            data_home: Path) -> None:
    server = standin(reply="alpha beta")
    server.set_default(Fault.status(500))
    failed = switchboard(data_home, *run_args(server, "--spec", str(_spec_file(data_home.parent, server))))
    assert failed.returncode == 1 and "every request failed" in failed.stderr
    assert "Failed requests:                         6" in failed.stdout
    assert "HTTP 500" in failed.stdout


def _spec_file(directory: Path, server: Standin) -> Path:
    path = directory / "spec.yaml"
    path.write_text(f"base_url: {server.url}\nendpoint: chat\nnum_prompts: 2\nlabel: from-file\n")
    return path


def test_ctrl_c_cancels_the_run_keeps_what_finished_and_stops_sending(standin: Callable[..., Standin],
                                                                       data_home: Path) -> None:
    import signal

    from tests.waiting import wait_for

    server = standin(reply="alpha beta gamma delta")
    server.set_default(Fault.paced(first_s=0.01, gap_s=0.01))
    executable = Path(sys.executable).parent / "switchboard"
    env = {**os.environ, "XDG_DATA_HOME": str(data_home), KEY_ENV: "sk-cli-test"}
    process = subprocess.Popen([str(executable), "bench", *run_args(server, "--label", "stopped"),
                                "--num-prompts", "5000", "--request-rate", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for("requests at the stand-in", lambda: len(server.requests) >= 12)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "cancelled" in err
    assert "CANCELLED" in out
    [saved] = (data_home / "switchboard" / "bench").glob("*-stopped.json")
    data = json.loads(saved.read_text())
    assert data["switchboard"]["cancelled"] is True and 0 < data["completed"] < 5000
