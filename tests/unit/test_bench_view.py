"""The Benchmarks pane's view model (console.views.bench) and the benchmark form's model (console.views.bench_form):
rows, marks, ratios and verdicts, the sweep chart, the live line, presets from the console config, and the form's
fields turned into a spec or a named error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from console.contexts import ContextError, load_console_config
from console.views.bench import (
    compare_lines,
    progress_text,
    run_rows,
    sweep_chart,
    sweep_of,
    toggle_mark,
    verdict,
    when_text,
)
from console.views.bench_form import DEFAULTS, BenchPreset, BenchTargets, FormError, form_values, spec_from_form
from services.bench.runners import Progress
from services.bench.spec import JsonlDataset, RandomDataset
from tests.console.bench_data import metrics, result, sample_runs

TARGETS = BenchTargets(gateway="http://127.0.0.1:8080", backend="http://127.0.0.1:8000")


# ---- rows, marks, comparison, chart ------------------------------------------------------------------------------


def test_rows_are_newest_first_with_marks_sweeps_and_cancelled_runs() -> None:
    runs = sample_runs()
    rows = run_rows(runs, marked=(runs[0][0], runs[1][0]))
    assert [r.key for r in rows] == [run_id for run_id, _ in reversed(runs)]
    by_key = {r.key: r for r in rows}
    first, second = by_key[runs[0][0]], by_key[runs[1][0]]
    assert (first.mark, second.mark) == ("A", "B")
    assert (first.when, first.label, first.load, first.done) == ("11-30 06:15", "tp1", "conc 8", "100/100")
    assert (first.req_s, first.tok_s, first.ttft, first.itl) == ("2.10", "269", "180ms", "27ms")
    assert by_key[runs[2][0]].load == "rate 1/s" and by_key[runs[2][0]].note == "sweep (3)"
    cancelled = by_key[runs[5][0]]
    assert cancelled.cancelled and cancelled.note == "cancelled" and cancelled.done == "37/100"


def test_marks_keep_two_drop_the_oldest_and_forget_runs_gone() -> None:
    known = {"a", "b", "c"}
    assert toggle_mark((), "a", known) == ("a",)
    assert toggle_mark(("a",), "b", known) == ("a", "b")
    assert toggle_mark(("a", "b"), "c", known) == ("b", "c")
    assert toggle_mark(("a", "b"), "a", known) == ("b",)
    assert toggle_mark(("a", "b"), "", {"b"}) == ("b",)
    assert toggle_mark((), "zzz", known) == ()


def test_comparison_gives_ratios_b_over_a_and_says_which_way_is_better() -> None:
    a = result("a", metrics(2.0, 200.0, 100.0, 20.0))
    b = result("b", metrics(3.0, 300.0, 150.0, 20.2, failed=2))
    lines = {line.metric: line for line in compare_lines(a, b)}
    assert (lines["output_throughput"].a, lines["output_throughput"].b) == ("200", "300")
    assert lines["output_throughput"].ratio == "1.50x" and lines["output_throughput"].verdict == "better"
    assert lines["median_ttft_ms"].ratio == "1.50x" and lines["median_ttft_ms"].verdict == "worse"
    assert lines["median_itl_ms"].verdict == "same"  # within 2%
    assert lines["failed"].ratio == "-"  # 0 failures in A: no ratio
    assert lines["duration"].verdict == ""  # neither better nor worse
    assert verdict("failed", 2.0) == "worse" and verdict("p99_e2el_ms", 0.5) == "better"


def test_sweep_chart_orders_by_rate_and_scales_bars_to_the_best() -> None:
    runs = sample_runs()
    sweep = sweep_of(runs, runs[3][0])
    assert [run_id for run_id, _ in sweep] == [runs[2][0], runs[3][0], runs[4][0]]
    assert sweep_of(runs, runs[0][0]) == []  # not part of a sweep
    lines = sweep_chart(list(reversed(sweep)), width=8)
    assert [line.x for line in lines] == ["rate 1/s", "rate 2/s", "rate 4/s"]
    assert lines[2].bar == "█" * 8 and lines[2].value == "333 tok/s"
    assert 0 < len(lines[0].bar) < len(lines[1].bar) < 8


def test_sweep_over_concurrency_charts_against_concurrency() -> None:
    sweep = [(f"r{c}", result("c", metrics(c * 1.0, c * 100.0, 100.0, 20.0), concurrency=c, sweep_id="s"))
             for c in (8, 2, 4)]
    assert [line.x for line in sweep_chart(sweep)] == ["conc 2", "conc 4", "conc 8"]


def test_live_line_reads_progress_and_says_cancelling() -> None:
    assert progress_text(None, "smoke") == "smoke: starting"
    update = Progress(done=120, failed=2, total=500, elapsed_s=12.4, output_tok_s=1234.5, ttft_median_ms=45.2,
                      itl_median_ms=12.1, rate=4.0)
    assert progress_text(update, "smoke", cancelling=True) == (
        "smoke: 120/500 done, 2 failed · rate 4/s · 1,234 tok/s · TTFT p50 45ms · ITL p50 12ms · 12s · cancelling")
    warming = Progress(done=0, failed=0, total=10, elapsed_s=0.5, phase="warmup")
    assert progress_text(warming, "x").startswith("x: warming up, 0 failed · - tok/s")


def test_when_text_reads_the_store_id() -> None:
    assert when_text("20261130T075201.123456Z-label") == "11-30 07:52"


# ---- the form's model ----------------------------------------------------------------------------------------------


def test_defaults_target_the_gateway_with_a_key_variable() -> None:
    values = form_values(TARGETS)
    assert values["target"] == "gateway" and values["base_url"] == "http://127.0.0.1:8080"
    spec = spec_from_form(values)
    assert spec.base_url == "http://127.0.0.1:8080" and spec.api_key_env == "OPENAI_API_KEY"
    assert spec.max_concurrency == 8 and math.isinf(spec.request_rate) and spec.runner == "builtin"
    assert spec.dataset == RandomDataset(input_len=512, output_len=128) and spec.num_prompts == 100


def test_preset_fills_the_form_and_makes_its_spec() -> None:
    preset = BenchPreset(target="backend", runner="vllm", endpoint="chat", input_len=64, output_len=16,
                         num_prompts=20, concurrency=None, request_rate=math.inf, sweep_rates=[1, 2.5],
                         slo={"ttft": 500, "e2el": 2000}, label="smoke")
    values = form_values(TARGETS, preset, "smoke")
    assert values["preset"] == "smoke" and values["base_url"] == "http://127.0.0.1:8000"
    assert values["api_key_env"] == "" and values["sweep_rates"] == "1, 2.5" and values["slo_ttft"] == "500"
    spec = spec_from_form(values)
    assert (spec.runner, spec.endpoint, spec.label, spec.api_key_env) == ("vllm", "chat", "smoke", None)
    assert spec.sweep_rates == [1.0, 2.5] and spec.goodput == {"ttft": 500.0, "e2el": 2000.0}
    assert spec.dataset == RandomDataset(input_len=64, output_len=16)
    url = form_values(TARGETS, BenchPreset(target="https://bench.example:9000", dataset="jsonl",
                                           dataset_path="p.jsonl"))
    assert (url["target"], url["base_url"]) == ("url", "https://bench.example:9000")
    assert spec_from_form(url).dataset == JsonlDataset(path="p.jsonl", output_len=128)


@pytest.mark.parametrize(("field", "text", "message"), [
    ("num_prompts", "many", "Prompts: 'many' is not a whole number"),
    ("num_prompts", "0", "Prompts: must be at least 1"),
    ("input_len", "", "Input len: required"),
    ("request_rate", "-1", "Rate: must be above 0"),
    ("sweep_rates", "1, x", "Sweep: 'x' is not a number"),
    ("slo_tpot", "fast", "TPOT SLO: 'fast' is not a number"),
    ("base_url", "gateway:8080", "URL: base_url must start with http:// or https://"),
    ("base_url", " ", "URL: required (the server's base URL)"),
    ("label", "two words", "Label: label may hold only letters, digits, '-', '_' and '.'"),
    ("api_key_env", "sk-live-abc", "Key env: the NAME of an environment variable"),
])
def test_a_wrong_field_is_named(field: str, text: str, message: str) -> None:
    values = dict(DEFAULTS, **{"base_url": "http://127.0.0.1:8080", field: text})
    with pytest.raises(FormError) as caught:
        spec_from_form(values)
    assert str(caught.value).startswith(message)
    assert caught.value.field == field


def test_a_file_dataset_needs_its_path() -> None:
    values = dict(DEFAULTS, base_url="http://x", dataset="sharegpt")
    with pytest.raises(FormError, match="Path: a sharegpt dataset needs the path of its file"):
        spec_from_form(values)


def test_bad_presets_in_the_console_config_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump({"contexts": {"lab": {"bench_presets": {
        "smoke": {"target": "gatewy", "concurrency": 0, "api_key": "sk-123"}}}}}))
    with pytest.raises(ContextError) as caught:
        load_console_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: invalid console config")
    assert "contexts.lab.bench_presets.smoke.target: target is gateway, backend or an http(s):// URL" in text
    assert "contexts.lab.bench_presets.smoke.concurrency:" in text
    assert "contexts.lab.bench_presets.smoke.api_key: Extra inputs are not permitted" in text


def test_good_presets_load_per_context(tmp_path: Path) -> None:
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump({"contexts": {"lab": {"bench_presets": {
        "smoke": {"target": "gateway", "num_prompts": 20, "slo": {"ttft": 500}}}}}}))
    presets = load_console_config(path).contexts["lab"].bench_presets
    assert presets["smoke"] == BenchPreset(target="gateway", num_prompts=20, slo={"ttft": 500})
