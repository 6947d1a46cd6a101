"""The LLM judge's pure parts: the reply format, sampling, the texts it grades, and its bounded queue."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from services.admin_api import JudgeSettings
from services.gateway import judge as judge_module
from services.gateway.config import Target, parse_config
from services.gateway.judge import (
    DROPPED,
    Judge,
    JudgeReplyError,
    StreamText,
    answer_text,
    dialect_of,
    judge_payload,
    normalise,
    parse_score,
    request_text,
)
from services.gateway.runtime import Gateway
from services.gateway.state.sqlite_store import SQLiteStore

SETTINGS = JudgeSettings(target="judge", sample_rate=1.0, rubric="Is the answer correct?")


def make_gateway(tmp_path: Path) -> Gateway:
    config = parse_config({
        "auth": {"mode": "open"},
        "targets": {"judge": {"provider": "openai", "model": "grader", "base_url": "http://127.0.0.1:9/v1"}},
        "pools": {"p": {"targets": {"judge": 100}}},
        "routes": {"r": {"pool": "p"}},
    }, "<test>")  # fmt: skip
    return Gateway(config, SQLiteStore(str(tmp_path / "state.db")))


# ---- the reply format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "score"), [
    ("3", 3), (" 4\n", 4), ("1", 1), ("5", 5), ('{"score": 5}', 5), ('{"score":2,"why":"short"}', 2),
    ('```json\n{"score": 2}\n```', 2), ("```\n4\n```", 4),
])  # fmt: skip
def test_a_score_in_format_parses(reply: str, score: int) -> None:
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", [
    "", "   ", "I think 4", "four", "4/5", "Score: 4", "4.", '{"grade": 4}', "[4]", "null", '"4"',
    '{"score": "4"}', '{"score": 4.0}', '{"score": 3.5}', '{"score": true}', '{"score": null}', '{"score": 4',
])  # fmt: skip
def test_garbage_is_a_reply_error_not_a_low_score(reply: str) -> None:
    with pytest.raises(JudgeReplyError):
        parse_score(reply)


@pytest.mark.parametrize("reply", ["0", "6", "10", "-1", '{"score": 0}', '{"score": 6}', '{"score": -3}'])
def test_out_of_range_is_a_reply_error_not_clamped(reply: str) -> None:
    with pytest.raises(JudgeReplyError):
        parse_score(reply)


def test_scores_normalise_to_zero_one() -> None:
    assert [normalise(s) for s in range(1, 6)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def target(**fields: Any) -> Target:
    return Target.model_validate({"provider": "openai", "model": "grader", **fields})


def test_a_self_hosted_openai_compatible_judge_is_asked_with_vllm_structured_output() -> None:
    vllm = target(base_url="http://127.0.0.1:8000/v1")
    assert dialect_of(vllm) == "vllm"
    payload = judge_payload(SETTINGS, vllm, "What is 2+2?", "It is 4.")
    assert payload["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}
    assert payload["model"] == "grader" and payload["temperature"] == 0 and payload["max_tokens"] <= 4
    system, user = payload["messages"]
    assert system["role"] == "system" and "Is the answer correct?" in system["content"]
    assert "What is 2+2?" in user["content"] and "It is 4." in user["content"]


@pytest.mark.parametrize("fields", [
    {}, {"base_url": "https://api.openai.com/v1"}, {"provider": "anthropic", "base_url": "http://127.0.0.1:1"},
])  # fmt: skip
def test_other_judges_are_told_to_reply_in_json(fields: dict[str, Any]) -> None:
    hosted = target(**fields)
    assert dialect_of(hosted) == "json"
    payload = judge_payload(SETTINGS, hosted, "q", "a")
    assert "structured_outputs" not in payload
    assert '{"score": N}' in payload["messages"][1]["content"]


# ---- sampling ------------------------------------------------------------------------------------------


def test_sampling_follows_the_rate_with_a_seeded_rng(tmp_path: Path) -> None:
    judge = Judge(make_gateway(tmp_path), lambda *a: None, rng=random.Random(7))
    settings = SETTINGS.model_copy(update={"sample_rate": 0.25})
    picks = [judge.should_sample(settings) for _ in range(2000)]
    reference = random.Random(7)
    assert picks == [reference.random() < 0.25 for _ in range(2000)]
    assert 400 < sum(picks) < 600


def test_sampling_edges(tmp_path: Path) -> None:
    judge = Judge(make_gateway(tmp_path), lambda *a: None, rng=random.Random(1))
    assert not any(judge.should_sample(SETTINGS.model_copy(update={"sample_rate": 0.0})) for _ in range(200))
    assert all(judge.should_sample(SETTINGS.model_copy(update={"sample_rate": 1.0})) for _ in range(200))
    assert not judge.should_sample(None)


# ---- texts ---------------------------------------------------------------------------------------------


def test_request_text_is_the_last_user_message() -> None:
    payload = {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {}},
                                     {"type": "text", "text": "question"}]},
    ]}  # fmt: skip
    assert request_text("chat", payload) == "second\nquestion"
    assert request_text("chat", {"messages": [{"role": "system", "content": "x"}]}) == ""
    assert request_text("chat", {"messages": "not a list"}) == ""


def test_request_text_of_completions_and_its_bound() -> None:
    assert request_text("completions", {"prompt": "Once upon"}) == "Once upon"
    assert request_text("completions", {"prompt": ["first", "second"]}) == "first"
    assert request_text("completions", {"prompt": [1, 2, 3]}) == ""
    long = request_text("completions", {"prompt": "x" * 10_000})
    assert len(long) == judge_module.MAX_REQUEST_CHARS and long.endswith("…")
    assert len(request_text("completions", {"prompt": "y" * 50}, limit=10)) == 10


def chat_body(message: dict[str, Any]) -> bytes:
    return json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": message}]}).encode()


def test_answer_text_of_non_stream_answers() -> None:
    assert answer_text("chat", chat_body({"role": "assistant", "content": "Paris."})) == "Paris."
    tool = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "get_weather",
                                                                        "arguments": '{"city": "Paris"}'}}]}
    assert answer_text("chat", chat_body(tool)) == '[tool call] get_weather({"city": "Paris"})'
    completion = {"object": "text_completion", "choices": [{"index": 0, "text": " a time"}]}
    assert answer_text("completions", json.dumps(completion).encode()) == " a time"
    assert answer_text("chat", b"not json") == "" and answer_text("chat", b'{"choices": []}') == ""
    assert len(answer_text("chat", chat_body({"content": "z" * 10_000}))) == judge_module.MAX_ANSWER_CHARS


def chunk(delta: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}).encode()


def test_a_streamed_chat_answer_is_assembled_from_its_chunks() -> None:
    text = StreamText()
    for data in [
        chunk({"role": "assistant", "content": ""}), chunk({"content": "The capital"}),
        chunk({"content": " is"}), chunk({"content": " Paris."}), chunk({}),
        json.dumps({"object": "chat.completion.chunk", "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode(),
    ]:  # fmt: skip
        text.feed(data)
    assert text.text() == "The capital is Paris."


def test_a_streamed_tool_call_and_completion_are_assembled() -> None:
    calls = StreamText()
    calls.feed(chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                           "function": {"name": "get_weather", "arguments": ""}}]}))
    for fragment in ['{"', 'city": "', "Paris", '"}']:
        calls.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}))
    assert calls.text() == '[tool call] get_weather({"city": "Paris"})'
    completion = StreamText()
    for piece in ["Once", " upon", " a time"]:
        completion.feed(json.dumps({"object": "text_completion", "choices": [{"index": 0, "text": piece}]}).encode())
    completion.feed(b"{not json")
    completion.feed(json.dumps({"choices": [{"index": 1, "text": "other choice"}]}).encode())
    assert completion.text() == "Once upon a time"


def test_stream_text_stays_bounded() -> None:
    text = StreamText(limit=100)
    for _ in range(1000):
        text.feed(chunk({"content": "word "}))
    assert len(text.text()) <= 100 and text.truncated


# ---- the bounded queue ---------------------------------------------------------------------------------


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    verdicts: list[tuple[str, str, float | None, str | None]] = []

    async def scenario() -> None:
        judge = Judge(make_gateway(tmp_path), lambda *v: verdicts.append(v), queue_size=3)
        accepted = [judge.offer("rel", "canary" if i % 2 else "stable", SETTINGS, "q", "a") for i in range(5)]
        assert accepted == [True, True, True, False, False]
        assert judge.waiting == 3
        assert verdicts == [("rel", "canary", None, DROPPED), ("rel", "stable", None, DROPPED)]
        stable, canary = judge.counts("rel", "stable"), judge.counts("rel", "canary")
        assert (stable.offered, stable.dropped, canary.offered, canary.dropped) == (3, 1, 2, 1)
        assert judge.counts("other", "stable").offered == 0
        await judge.stop()
        assert judge.waiting == 0
        assert judge.offer("rel", "stable", SETTINGS, "q", "a") is False  # stopped: dropped, not queued
        assert judge.counts("rel", "stable").dropped == 2

    asyncio.run(scenario())


def test_offered_texts_and_counters_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge_module, "MAX_COUNTED_ARMS", 4)

    async def scenario() -> None:
        judge = Judge(make_gateway(tmp_path), lambda *v: None, queue_size=1)
        judge.offer("r0", "stable", SETTINGS, "q" * 100_000, "a" * 100_000)
        sample = judge._queue.get_nowait()
        assert len(sample.request_text) == judge_module.MAX_REQUEST_CHARS
        assert len(sample.answer_text) == judge_module.MAX_ANSWER_CHARS
        for i in range(10):
            judge.offer(f"r{i}", "stable", SETTINGS, "q", "a")
        assert list(judge.all_counts()) == [(f"r{i}", "stable") for i in range(6, 10)]
        judge.forget("r9")
        assert ("r9", "stable") not in judge.all_counts()

    asyncio.run(scenario())


def test_a_failing_callback_does_not_break_offer(tmp_path: Path) -> None:
    def explode(*verdict: object) -> None:
        raise RuntimeError("callback bug")

    async def scenario() -> None:
        judge = Judge(make_gateway(tmp_path), explode, queue_size=1)
        assert judge.offer("r", "stable", SETTINGS, "q", "a") is True
        assert judge.offer("r", "stable", SETTINGS, "q", "a") is False
        assert judge.counts("r", "stable").dropped == 1

    asyncio.run(scenario())
