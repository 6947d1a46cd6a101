"""The LLM judge against stand-in judges over loopback, through a real Gateway's provider clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.admin_api import JudgeSettings
from services.gateway.config import parse_config
from services.gateway.judge import DROPPED, UNAVAILABLE, UNPARSEABLE, Judge, StreamText
from services.gateway.runtime import Gateway
from services.gateway.state.sqlite_store import SQLiteStore
from tests.gateway_harness import fast_settings, free_port, openai_target
from tests.standins import Fault, Standin
from tests.standins.judge import JudgeStandin

Verdict = tuple[str, str, float | None, str | None]
QUESTION = "What is the capital of France?"
WAIT_S = 30  # generous: a loaded two-core machine; the verdicts come in milliseconds


@pytest.fixture
def judge_standin() -> Iterator[JudgeStandin]:
    with JudgeStandin(name="judge", score=4, reply="not a grade") as server:
        yield server


def gateway_config(judge_target: dict[str, Any]) -> dict[str, Any]:
    return {
        **fast_settings(),
        "targets": {"judge": judge_target},
        "pools": {"p": {"targets": {"judge": 100}}},
        "routes": {"r": {"pool": "p"}},
    }


def settings(**fields: Any) -> JudgeSettings:
    return JudgeSettings(**{"target": "judge", "sample_rate": 1.0, "rubric": "Is the answer right?", **fields})


class Verdicts:
    """Collects on_verdict calls; ``wait(n)`` returns once n have arrived."""

    def __init__(self) -> None:
        self.items: list[Verdict] = []
        self.arrived = asyncio.Event()

    def __call__(self, release: str, arm: str, score: float | None, error: str | None) -> None:
        self.items.append((release, arm, score, error))
        self.arrived.set()

    async def wait(self, n: int) -> list[Verdict]:
        async with asyncio.timeout(WAIT_S):
            while len(self.items) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.items


def run_judge(tmp_path: Path, judge_target: dict[str, Any],
              scenario: Callable[[Judge, Verdicts, Gateway], Awaitable[None]], **judge_args: Any) -> None:
    """A real Gateway (config, store, provider clients) with a started Judge, inside one event loop."""

    async def main() -> None:
        config = parse_config(gateway_config(judge_target), "<test>")
        gw = Gateway(config, SQLiteStore(str(tmp_path / "state.db")))
        gw.start_providers()
        verdicts = Verdicts()
        judge = Judge(gw, verdicts, **judge_args)
        judge.start()
        try:
            await scenario(judge, verdicts, gw)
        finally:
            await judge.stop()
            await gw.aclose()

    asyncio.run(main())


def test_verdicts_arrive_through_the_callback_and_vllm_structured_output_is_asked(
    tmp_path: Path, judge_standin: JudgeStandin,
) -> None:
    judge_standin.grade_with(lambda prompt: 2 if "canary answer" in prompt else 5)

    async def scenario(judge: Judge, verdicts: Verdicts, gw: Gateway) -> None:
        assert judge.offer("rel", "stable", settings(), QUESTION, "the stable answer: Paris")
        assert judge.offer("rel", "canary", settings(), QUESTION, "the canary answer: Lyon")
        got = sorted(await verdicts.wait(2))
        assert got == [("rel", "canary", 0.25, None), ("rel", "stable", 1.0, None)]
        await judge.wait_idle()
        for arm in ("stable", "canary"):
            counts = judge.counts("rel", arm)
            assert (counts.offered, counts.judged, counts.errors, counts.dropped) == (1, 1, 0, 0)

    run_judge(tmp_path, openai_target(judge_standin.url, "grader"), scenario)
    requests = [r for r in judge_standin.requests if r.path == "/v1/chat/completions"]
    assert len(requests) == 2
    body = requests[0].body
    assert body["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}
    assert body["model"] == "grader" and body["temperature"] == 0
    assert "Is the answer right?" in body["messages"][0]["content"]
    assert QUESTION in body["messages"][1]["content"]


@pytest.mark.parametrize("garbage", ["I would say it is quite good", 9, 0])
def test_garbage_and_out_of_range_replies_are_judge_errors(
    tmp_path: Path, judge_standin: JudgeStandin, garbage: int | str,
) -> None:
    judge_standin.grade_with(garbage)

    async def scenario(judge: Judge, verdicts: Verdicts, gw: Gateway) -> None:
        for _ in range(3):
            judge.offer("rel", "canary", settings(), QUESTION, "Paris")
        assert await verdicts.wait(3) == [("rel", "canary", None, UNPARSEABLE)] * 3
        await judge.wait_idle()
        counts = judge.counts("rel", "canary")
        assert (counts.offered, counts.judged, counts.errors) == (3, 0, 3)

    run_judge(tmp_path, openai_target(judge_standin.url, "grader"), scenario)
    assert len(judge_standin.requests) == 3


def test_a_down_judge_counts_errors_and_never_blocks_offer(tmp_path: Path) -> None:
    unreachable = openai_target(f"http://127.0.0.1:{free_port()}", "grader")

    async def scenario(judge: Judge, verdicts: Verdicts, gw: Gateway) -> None:
        accepted = [judge.offer("rel", "stable", settings(), QUESTION, "Paris") for _ in range(4)]
        # offer() returned for every sample before any grading ran: nothing was awaited.
        assert accepted == [True, True, False, False] and verdicts.items == [("rel", "stable", None, DROPPED)] * 2
        got = await verdicts.wait(4)
        assert got[2:] == [("rel", "stable", None, UNAVAILABLE)] * 2
        await judge.wait_idle()
        counts = judge.counts("rel", "stable")
        assert (counts.offered, counts.judged, counts.errors, counts.dropped) == (4, 0, 2, 2)

    run_judge(tmp_path, unreachable, scenario, queue_size=2, concurrency=1)


def test_a_failing_or_slow_judge_is_unavailable_not_a_score(tmp_path: Path, judge_standin: JudgeStandin) -> None:
    judge_standin.push(Fault.status(500), Fault.slow_first_byte(30))
    target = openai_target(judge_standin.url, "grader", timeouts={"ttft_s": 0.5, "total_s": 5})

    async def scenario(judge: Judge, verdicts: Verdicts, gw: Gateway) -> None:
        for _ in range(3):
            judge.offer("rel", "canary", settings(), QUESTION, "Paris")
        got = await verdicts.wait(3)
        assert got == [("rel", "canary", None, UNAVAILABLE)] * 2 + [("rel", "canary", 0.75, None)]

    run_judge(tmp_path, target, scenario, concurrency=1)


def test_an_unknown_judge_target_is_unavailable(tmp_path: Path, judge_standin: JudgeStandin) -> None:
    async def scenario(judge: Judge, verdicts: Verdicts, gw: Gateway) -> None:
        judge.offer("rel", "stable", settings(target="no-such-target"), QUESTION, "Paris")
        assert await verdicts.wait(1) == [("rel", "stable", None, UNAVAILABLE)]

    run_judge(tmp_path, openai_target(judge_standin.url, "grader"), scenario)
    assert judge_standin.requests == []


def test_a_non_vllm_judge_is_asked_for_json_and_graded(tmp_path: Path) -> None:
    with Standin(kind="anthropic", name="claude-judge", reply='{"score": 2}') as claude:
        target = {"provider": "anthropic", "model": "claude-judge", "base_url": claude.url,
                  "api_key_env": "SB_JUDGE_KEY"}

        async def scenario(judge: Judge, verdicts: Verdicts, gw: Gateway) -> None:
            judge.offer("rel", "stable", settings(), QUESTION, "Paris")
            assert await verdicts.wait(1) == [("rel", "stable", 0.25, None)]

        with pytest.MonkeyPatch.context() as env:
            env.setenv("SB_JUDGE_KEY", "test-key")
            run_judge(tmp_path, target, scenario)
        (request,) = [r for r in claude.requests if r.path == "/v1/messages"]
        assert "structured_outputs" not in request.body
        assert "Is the answer right?" in request.body["system"]
        assert '{"score": N}' in request.body["messages"][-1]["content"][0]["text"]


def test_a_stream_through_the_provider_assembles_into_the_graded_text(tmp_path: Path) -> None:
    reply = "The capital of France is Paris, on the Seine."
    with Standin(kind="openai", name="upstream", reply=reply) as upstream:
        async def scenario(judge: Judge, verdicts: Verdicts, gw: Gateway) -> None:
            target = gw.config.targets["judge"]
            stream = await gw.provider("judge").open_stream(
                "chat", {"model": target.model, "messages": [{"role": "user", "content": QUESTION}]}, target.timeouts)
            text = StreamText()
            try:
                async for chunk in stream.chunks:
                    text.feed(chunk.data)
            finally:
                await stream.aclose()
            assert text.text() == reply

        run_judge(tmp_path, openai_target(upstream.url, "m"), scenario)
