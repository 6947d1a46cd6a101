"""The built-in load generator against the OpenAI stand-in over loopback: measured TTFT and ITL match what the
stand-in injects, usage counts are used, failures and warm-ups are kept apart, cancellation stops sending.

Tolerance on the timings: the median may read at most 2 ms under the injected value (timer granularity) and at
most 50 ms over it (a loaded 2-core machine; the stand-in and the generator share it, and a burst of CPU throttling
there was seen to hold a short run's chunks back ~100 ms: the timing runs warm up first and take over a second).
"""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import Callable
from typing import Any

import pytest

from services.bench import loadgen
from services.bench.runners import Progress, get_runner, run_sweep
from services.bench.spec import BenchSpec
from tests.standins.server import Fault, Standin
from tests.waiting import until

KEY_ENV = "SB_BENCH_LOADGEN_KEY"
UNDER_MS, OVER_MS = 2.0, 50.0
REPLY = "one two three four five six seven eight"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-bench")


def spec_for(server: Standin, **kw: object) -> BenchSpec:
    fields: dict[str, object] = {"base_url": server.url, "api_key_env": KEY_ENV, "num_prompts": 8,
                                 "dataset": {"kind": "random", "input_len": 16, "output_len": 4}}
    fields.update(kw)
    return BenchSpec.model_validate(fields)


def completions(server: Standin) -> list[dict]:
    return [r.body for r in server.requests if r.path.endswith("completions")]


def within(measured: float, injected_ms: float) -> bool:
    return injected_ms - UNDER_MS <= measured <= injected_ms + OVER_MS


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_ttft_and_itl_match_the_injected_first_token_delay_and_chunk_gap(
    standin: Callable[..., Standin], endpoint: str
) -> None:
    server = standin(reply=REPLY)
    server.set_default(Fault.paced(first_s=0.120, gap_s=0.040))
    spec = spec_for(server, endpoint=endpoint, max_concurrency=4, num_prompts=16, warmups=2,
                    dataset={"kind": "random", "input_len": 16, "output_len": 6})
    result = asyncio.run(loadgen.run(spec, None, None))
    m = result.metrics
    assert (m["completed"], m["failed"]) == (16, 0)
    assert within(m["median_ttft_ms"], 120.0), ("ttft", m["median_ttft_ms"])
    assert within(m["median_itl_ms"], 40.0), ("itl", m["median_itl_ms"])
    # 6 tokens (max_tokens 6 of an 8-word reply): TPOT = (E2EL - TTFT) / 5 = the five 40 ms gaps / 5
    assert within(m["median_tpot_ms"], 40.0), ("tpot", m["median_tpot_ms"])
    assert within(m["median_e2el_ms"], 120.0 + 5 * 40.0), ("e2el", m["median_e2el_ms"])
    sent = completions(server)
    assert all(b["stream"] and b["stream_options"] == {"include_usage": True} for b in sent)
    assert all(b.get("max_tokens" if endpoint == "completions" else "max_completion_tokens") == 6 for b in sent)
    assert all(r.headers["authorization"] == "Bearer sk-test-bench" for r in server.requests)
    assert result.target.model == server.name and result.tokenizer == "estimate"


def test_token_counts_come_from_the_usage_the_server_reports(standin: Callable[..., Standin]) -> None:
    server = standin(reply=REPLY)
    result = asyncio.run(loadgen.run(spec_for(server, num_prompts=5, dataset={
        "kind": "random", "input_len": 40, "output_len": 3}), None, None))
    words = sum(len(b["prompt"].split()) for b in completions(server))  # the stand-in counts words
    assert result.metrics["total_output_tokens"] == 15
    assert result.metrics["total_input_tokens"] == words


def test_failures_are_counted_apart_and_warmups_are_not_counted(standin: Callable[..., Standin]) -> None:
    server = standin(reply=REPLY)
    server.push(Fault.ok(), Fault.ok(), Fault.status(500), Fault.cut(after_chunks=1), Fault.status(429))
    result = asyncio.run(loadgen.run(spec_for(server, num_prompts=6, warmups=2, max_concurrency=1), None, None))
    assert len(completions(server)) == 8
    assert result.warmups_done == 2
    assert (result.metrics["completed"], result.metrics["failed"]) == (3, 3)
    assert sum(result.errors.values()) == 3
    assert any(e.startswith("HTTP 500") for e in result.errors)
    assert result.metrics["total_output_tokens"] == 3 * 4


def test_a_request_rate_spreads_sends_over_num_prompts_over_rate(standin: Callable[..., Standin]) -> None:
    server = standin(reply=REPLY)
    seen: list[Progress] = []
    result = asyncio.run(loadgen.run(spec_for(server, num_prompts=40, request_rate=50.0), seen.append, None))
    assert result.metrics["completed"] == 40
    assert result.metrics["duration"] >= 40 / 50.0 - 0.01  # the last request goes out at 0.8 s
    assert seen and seen[-1].phase == "done" and seen[-1].done == 40 and seen[-1].total == 40
    assert result.metrics["send_lag_p50_ms"] >= 0.0


def test_full_collections_are_off_while_requests_go_out_and_come_back_after(standin: Callable[..., Standin]) -> None:
    """A full pass walks every record and body planned for the run: 45-90 ms at 16,000 requests, a hundred late
    sends. Young collections go on; the thresholds the process had come back, also after a cancel."""
    server = standin(reply=REPLY)
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []

    def on_progress(progress: Progress) -> None:
        if progress.phase == "run":
            during.append(gc.get_threshold())

    asyncio.run(loadgen.run(spec_for(server, num_prompts=30, request_rate=60.0), on_progress, None))
    assert during, "the run reported no progress while sending"
    assert all(t[:2] == before[:2] and t[2] >= 1_000_000 for t in during), during
    assert gc.get_threshold() == before
    cancel = asyncio.Event()
    cancel.set()
    asyncio.run(loadgen.run(spec_for(server, num_prompts=30, request_rate=60.0), None, cancel))
    assert gc.get_threshold() == before


def test_cancel_stops_sending_at_once_and_closes_streams_in_flight(standin: Callable[..., Standin]) -> None:
    server = standin(reply=REPLY)
    server.set_default(Fault.delay(0.5))  # every stream stays open ~2.5 s: some are in flight when we cancel

    async def scenario() -> tuple[int, int, loadgen.BenchResult]:
        cancel = asyncio.Event()
        spec = spec_for(server, num_prompts=2000, request_rate=40.0)
        task = asyncio.ensure_future(loadgen.run(spec, None, cancel))
        await until("ten requests at the stand-in", lambda: len(completions(server)) >= 10)
        cancel.set()
        at_cancel = len(completions(server))
        result = await task
        return at_cancel, len(completions(server)), result

    at_cancel, at_return, result = asyncio.run(scenario())
    assert at_return - at_cancel <= 2  # 25 ms apart: at most what was already on its way to the stand-in's thread
    assert result.cancelled
    assert result.metrics["completed"] + result.metrics["failed"] < at_return
    assert math.isfinite(result.metrics["duration"])
    asyncio.run(until("the in-flight streams closed at the stand-in", lambda: server.cancelled_streams >= 5))
    assert len(completions(server)) == at_return


def test_an_unset_key_variable_or_an_unreachable_target_is_a_clear_error(
    standin: Callable[..., Standin], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = standin(reply=REPLY)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(loadgen.BenchError, match=KEY_ENV):
        asyncio.run(loadgen.run(spec_for(server), None, None))
    assert completions(server) == []
    closed = BenchSpec(base_url="http://127.0.0.1:9", num_prompts=1)
    with pytest.raises(loadgen.BenchError, match="cannot list models"):
        asyncio.run(loadgen.run(closed, None, None))


def test_a_sweep_runs_once_per_rate_through_the_builtin_runner(standin: Callable[..., Standin]) -> None:
    server = standin(reply=REPLY)
    spec = spec_for(server, num_prompts=4, sweep_rates=[200.0, math.inf])
    results = asyncio.run(run_sweep(get_runner("builtin"), spec))
    assert [r.spec.request_rate for r in results] == [200.0, math.inf]
    assert results[0].sweep_id is not None and results[0].sweep_id == results[1].sweep_id
    assert all(r.metrics["completed"] == 4 for r in results)
    assert len(completions(server)) == 8


def test_the_target_identity_comes_from_vllms_version_models_and_metrics() -> None:
    """A loopback server answering as vLLM does on /version, /v1/models and /metrics (and a plain stream)."""
    from aiohttp import web

    metrics = ('# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n'
               'vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",'
               'gpu_memory_utilization="0.9",num_gpu_blocks="4096"} 1.0\n')

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for text in ("a", " b"):
            await response.write(b'data: {"choices":[{"index":0,"text":"%s"}]}\n\n' % text.encode())
        await response.write(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n')
        await response.write(b"data: [DONE]\n\n")
        return response

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"version": "0.32.0"})

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(text=metrics)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "vllm",
                                                              "root": "/models/smollm2", "max_model_len": 2048}]})

    app = web.Application()
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", stream)

    result = asyncio.run(run_against(app, num_prompts=2, model=None))
    target = result.target
    assert (target.model, target.engine, target.engine_version) == ("smollm2", "vllm", "0.32.0")
    assert target.engine_flags is not None
    assert target.engine_flags["max_model_len"] == 2048 and target.engine_flags["root"] == "/models/smollm2"
    assert target.engine_flags["enable_prefix_caching"] == "True" and target.engine_flags["block_size"] == "16"
    assert result.metrics["completed"] == 2 and result.metrics["total_output_tokens"] == 4


def test_malformed_streams_fail_the_request_not_the_run(standin: Callable[..., Standin]) -> None:
    server = standin(reply=REPLY)
    server.push(Fault.malformed(), Fault.ok())
    result = asyncio.run(loadgen.run(spec_for(server, num_prompts=2, max_concurrency=1), None, None))
    assert (result.metrics["completed"], result.metrics["failed"]) == (1, 1)


async def run_against(app: Any, **spec: Any) -> loadgen.BenchResult:
    """One run against an aiohttp app served on loopback."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await loadgen.run(BenchSpec(base_url=f"http://127.0.0.1:{port}/v1", **{"model": "m", **spec}))
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("chunk", [b'["x"]', b'{"choices": ["x"]}', b'{"choices": [{"text": "a"}], "usage": 3}'])
def test_chunks_of_the_wrong_shape_fail_the_request_with_a_message(chunk: bytes) -> None:
    from aiohttp import web

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + chunk + b"\n\ndata: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", stream)
    result = asyncio.run(run_against(app, num_prompts=2))
    assert (result.metrics["completed"], result.metrics["failed"]) == (0, 2)
    assert list(result.errors) == ["malformed chunk: not an OpenAI completio"]


def test_through_the_gateway_with_a_client_key(standin: Callable[..., Standin], gateway: Callable[..., Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from tests.gateway_harness import auth, fast_settings, openai_target

    upstream = standin(reply=REPLY)
    upstream.set_default(Fault.paced(first_s=0.080, gap_s=0.030))
    running = gateway({**fast_settings(auth={"mode": "keys"}), "targets": {"up": openai_target(upstream.url)},
                       "pools": {"p": {"targets": {"up": 100}}}, "routes": {"r": {"pool": "p"}}})
    created = httpx.post(running.url + "/admin/keys", headers=auth(operator="alice@bastion"), timeout=10,
                         json={"name": "bench", "owner": "team-a", "reason": "benchmark"})
    assert created.status_code == 201, created.text
    monkeypatch.setenv(KEY_ENV, created.json()["key"])
    for endpoint in ("chat", "completions"):
        spec = BenchSpec(base_url=running.url, api_key_env=KEY_ENV, endpoint=endpoint, model="r", num_prompts=6,
                         max_concurrency=3, warmups=2, dataset={"kind": "random", "input_len": 16, "output_len": 4})
        m = asyncio.run(loadgen.run(spec)).metrics
        assert (m["completed"], m["failed"]) == (6, 0)
        # TTFT through the gateway holds the gateway's own time as well (in this process, on a loaded machine)
        assert m["median_ttft_ms"] >= 80.0 - UNDER_MS and within(m["median_itl_ms"], 30.0), (
            m["median_ttft_ms"], m["median_itl_ms"])
    monkeypatch.setenv(KEY_ENV, "sk-sb-" + "x" * 43)
    refused = asyncio.run(loadgen.run(spec))
    assert refused.metrics["failed"] == 6 and all(e.startswith("HTTP 401") for e in refused.errors)
