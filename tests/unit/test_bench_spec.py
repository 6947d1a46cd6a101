"""BenchSpec validation, the result file (vLLM's --save-result keys), the run store and the datasets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.bench.datasets import DatasetError, TokenCounter, load_prompts
from services.bench.result import BenchResult, ResultError, TargetIdentity, parse_vllm_result
from services.bench.spec import BenchSpec
from services.bench.store import RunStore, compare

URL = "http://127.0.0.1:8000"

# What `vllm bench serve --save-result --save-detailed` writes (keys from serve.py; values made up).
VLLM_FILE = {
    "date": "20260101-120000", "endpoint_type": "openai-chat", "backend": "openai-chat", "label": None,
    "model_id": "Qwen/Qwen3-0.6B", "tokenizer_id": "Qwen/Qwen3-0.6B", "num_prompts": 20, "request_rate": "inf",
    "burstiness": 1.0, "max_concurrency": 4, "duration": 12.5, "completed": 19, "failed": 1,
    "total_input_tokens": 1900, "total_output_tokens": 608, "request_throughput": 1.52, "request_goodput": None,
    "output_throughput": 48.64, "total_token_throughput": 200.64, "max_output_tokens_per_s": 60.0,
    "max_concurrent_requests": 4, "rtfx": 0.0, "mean_ttft_ms": 210.0, "median_ttft_ms": 200.0, "std_ttft_ms": 30.0,
    "p99_ttft_ms": 290.0, "mean_tpot_ms": 70.0, "median_tpot_ms": 69.0, "std_tpot_ms": 3.0, "p99_tpot_ms": 80.0,
    "mean_itl_ms": 70.5, "median_itl_ms": 69.5, "std_itl_ms": 5.0, "p99_itl_ms": 90.0,
    "input_lens": [100] * 20, "output_lens": [32] * 20, "ttfts": [0.2] * 20, "itls": [[0.07]] * 20,
    "generated_texts": ["x"] * 20, "errors": [""] * 20,
}


def test_spec_rejects_unknown_fields_bad_slos_and_a_key_in_place_of_a_variable_name() -> None:
    with pytest.raises(ValidationError, match="extra"):
        BenchSpec(base_url=URL, concurrency=4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="goodput key 'latency'"):
        BenchSpec(base_url=URL, goodput={"latency": 100})
    with pytest.raises(ValidationError, match="NAME of an environment variable"):
        BenchSpec(base_url=URL, api_key_env="sk-sb-abc.def")
    with pytest.raises(ValidationError, match="http"):
        BenchSpec(base_url="127.0.0.1:8000")
    with pytest.raises(ValidationError):
        BenchSpec(base_url=URL, dataset={"kind": "random", "input_len": 0})
    with pytest.raises(ValidationError, match="label"):
        BenchSpec(base_url=URL, label="../etc")


def test_spec_round_trips_through_json_with_an_infinite_rate_and_expands_a_sweep() -> None:
    spec = BenchSpec(base_url=URL + "/v1/", endpoint="chat", sweep_rates=[1, 4, math.inf],
                     dataset={"kind": "jsonl", "path": "/tmp/p.jsonl"})
    text = spec.model_dump_json()
    assert '"request_rate":"inf"' in text
    assert BenchSpec.model_validate_json(text) == spec
    assert spec.api_url == URL + "/v1/chat/completions"
    assert [run.request_rate for run in spec.runs()] == [1, 4, math.inf]
    assert all(not run.sweep_rates for run in spec.runs())


def test_api_key_is_read_from_the_named_variable_and_an_unset_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BenchSpec(base_url=URL, api_key_env="SB_BENCH_TEST_KEY")
    monkeypatch.delenv("SB_BENCH_TEST_KEY", raising=False)
    with pytest.raises(KeyError, match="SB_BENCH_TEST_KEY"):
        spec.api_key()
    monkeypatch.setenv("SB_BENCH_TEST_KEY", "sk-1")
    assert spec.api_key() == "sk-1"
    assert "sk-1" not in spec.model_dump_json()


def test_a_vllm_result_file_is_parsed_without_its_per_request_arrays() -> None:
    result = parse_vllm_result(json.dumps(VLLM_FILE))
    assert result.runner == "vllm" and result.spec.endpoint == "chat" and result.spec.max_concurrency == 4
    assert result.target.model == "Qwen/Qwen3-0.6B" and result.tokenizer == "Qwen/Qwen3-0.6B"
    assert result.metric("median_itl_ms") == 69.5 and result.metric("failed") == 1
    assert "itls" not in result.metrics and "generated_texts" not in result.metrics
    with pytest.raises(ResultError, match="duration"):
        parse_vllm_result({"completed": 3})
    with pytest.raises(ResultError, match="not JSON"):
        parse_vllm_result("{")


def test_our_result_file_carries_vllms_keys_and_reads_back() -> None:
    spec = BenchSpec(base_url=URL, model="m", max_concurrency=2, label="tp1", goodput={"ttft": 500})
    result = BenchResult(spec=spec, runner="builtin", metrics={"duration": 1.0, "completed": 3, "failed": 0,
                                                               "median_ttft_ms": 12.0},
                         target=TargetIdentity(base_url=URL, model="m", engine="vllm", engine_version="0.11.0"))
    data = json.loads(json.dumps(result.to_json()))
    for key in ("date", "backend", "model_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
                "duration", "completed", "median_ttft_ms"):
        assert key in data
    assert data["request_rate"] == "inf" and data["label"] == "tp1"
    assert data["switchboard"]["target"]["engine_version"] == "0.11.0"
    assert data["switchboard"]["tokenizer"] == "estimate"
    assert BenchResult.from_json(data) == result
    vllm_style = BenchResult.from_json(VLLM_FILE)
    assert vllm_style.runner == "vllm"


def result_with(label: str, **metrics: float) -> BenchResult:
    return BenchResult(spec=BenchSpec(base_url=URL, label=label), runner="builtin",
                       metrics={"duration": 1.0, "completed": 10, "failed": 0, **metrics})


def test_store_saves_lists_loads_and_resolves_runs(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    assert store.list() == []
    first = store.save(result_with("a", request_throughput=5.0, median_ttft_ms=10.0))
    second = store.save(result_with("a", request_throughput=6.0, median_ttft_ms=20.0))
    assert first != second and first.endswith("-a")
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted([f"{first}.json", f"{second}.json"])
    summaries = store.list()
    assert [s.id for s in summaries] == [first, second]
    assert summaries[1].request_throughput == 6.0 and summaries[1].median_ttft_ms == 20.0
    assert store.load("last").metric("request_throughput") == 6.0
    assert store.load("-2").metric("request_throughput") == 5.0
    assert store.load(first).metric("median_ttft_ms") == 10.0
    with pytest.raises(KeyError, match="matches 2 runs"):
        store.load(first[:8])
    with pytest.raises(KeyError, match="no run"):
        store.load("20990101T000000Z")
    (tmp_path / "bench" / "20200101T000000Z-broken.json").write_text("{")
    assert [s.id for s in store.list()] == [first, second]


def test_compare_gives_b_over_a_for_each_metric_either_run_has() -> None:
    a = result_with("a", request_throughput=5.0, median_ttft_ms=10.0, p99_ttft_ms=30.0)
    b = result_with("b", request_throughput=10.0, median_ttft_ms=5.0)
    rows = {r.metric: r for r in compare(a, b)}
    assert rows["request_throughput"].ratio == pytest.approx(2.0)
    assert rows["median_ttft_ms"].ratio == pytest.approx(0.5)
    assert rows["p99_ttft_ms"].b is None and rows["p99_ttft_ms"].ratio is None
    assert rows["failed"].ratio is None  # 0 / 0
    order = [r.metric for r in compare(a, b)]
    assert order.index("request_throughput") < order.index("median_ttft_ms") < order.index("p99_ttft_ms")


def test_random_prompts_are_reproducible_and_sized_by_the_estimate() -> None:
    spec = BenchSpec(base_url=URL, dataset={"kind": "random", "input_len": 64, "output_len": 16, "range_ratio": 0.5})
    counter = TokenCounter(None)
    prompts = load_prompts(spec, counter, 50)
    assert prompts == load_prompts(spec, counter, 50)
    assert counter.name == "estimate"
    assert all(8 <= p.output_len <= 24 for p in prompts)
    assert all(p.prompt_len == len(p.text.split()) for p in prompts)  # one common word a token
    assert all(32 <= p.prompt_len <= 96 for p in prompts)
    assert len({p.prompt_len for p in prompts}) > 10


def test_jsonl_and_sharegpt_files(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "hello there", "output_len": 7}\n\n{"prompt": "bye"}\n')
    spec = BenchSpec(base_url=URL, dataset={"kind": "jsonl", "path": str(jsonl)})
    prompts = load_prompts(spec, TokenCounter(None), 4)
    assert sorted({(p.text, p.output_len) for p in prompts}) == [("bye", 128), ("hello there", 7)]
    jsonl.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(DatasetError, match=r"p\.jsonl:2"):
        load_prompts(spec, TokenCounter(None), 1)
    share = tmp_path / "sg.json"
    long_q, long_a = "why is the sky blue today " * 3, "because of Rayleigh scattering of light " * 3
    share.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": long_q}, {"from": "gpt", "value": long_a}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},  # too short: dropped
        {"conversations": [{"from": "human", "value": long_q}]},  # no answer: dropped
    ]))
    spec = BenchSpec(base_url=URL, dataset={"kind": "sharegpt", "path": str(share)})
    prompts = load_prompts(spec, TokenCounter(None), 3)
    assert {p.text for p in prompts} == {long_q}
    assert prompts[0].output_len == round(len(long_a) / 4)
    share.write_text("{}")
    with pytest.raises(DatasetError, match="list"):
        load_prompts(spec, TokenCounter(None), 1)
    missing = BenchSpec(base_url=URL, dataset={"kind": "jsonl", "path": str(tmp_path / "none.jsonl")})
    with pytest.raises(DatasetError, match="cannot read"):
        load_prompts(missing, TokenCounter(None), 1)
