"""Rules, weights and the Anthropic translation end to end: openai SDK -> gateway -> stand-ins."""

from __future__ import annotations

from collections import Counter

import openai
import pytest

from services.gateway.config import example_config_path, load_config
from tests.gateway_harness import fast_settings

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fleet(standin, gateway, monkeypatch):
    """The example config's targets and rules, each target on its own stand-in."""
    ups = {
        "openai/gpt-4o": standin(name="gpt4"),
        "openai/gpt-4o-mini": standin(name="mini"),
        "anthropic/claude-sonnet": standin(kind="anthropic", name="claude", reply="Bonjour from claude"),
        "vllm-local/smollm2": standin(name="local"),
    }
    config = load_config(example_config_path()).model_dump(by_alias=True, exclude_none=True)
    for name, target in config["targets"].items():
        target["base_url"] = ups[name].url + ("/v1" if target["provider"] == "openai" else "")
        target["api_key_env"] = "SWITCHBOARD_TEST_KEY"
    monkeypatch.setenv("SWITCHBOARD_TEST_KEY", "test-key")
    config.update(fast_settings())
    return gateway(config), ups


def target_for(gw, headers: dict[str, str] | None = None, messages=MESSAGES, model: str = "auto") -> str:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, extra_headers=headers)
    return raw.headers["x-switchboard-target"]


def test_each_rule_through_headers(fleet) -> None:
    gw, _ = fleet
    long = [{"role": "user", "content": "token " * 1200}]
    assert target_for(gw, {"x-switchboard-tier": "enterprise", "x-switchboard-quality": "high"}) == "openai/gpt-4o"
    assert target_for(gw, {"x-switchboard-task": "code"}) == "openai/gpt-4o"
    assert target_for(gw, {"x-switchboard-task": "summarization"}, long) == "openai/gpt-4o-mini"
    assert target_for(gw, {"x-switchboard-quality": "low"}) == "openai/gpt-4o-mini"
    assert target_for(gw, {"x-switchboard-quality": "high"}, long) == "openai/gpt-4o-mini"  # preference order
    assert target_for(gw, {"x-switchboard-latency-budget-ms": "200"}) == "vllm-local/smollm2"


def test_weights_are_honoured_over_many_requests(standin, gateway) -> None:
    a, b = standin(name="a"), standin(name="b")
    gw = gateway({
        **fast_settings(),
        "targets": {"a": {"provider": "openai", "model": "m", "base_url": a.url + "/v1"},
                    "b": {"provider": "openai", "model": "m", "base_url": b.url + "/v1"}},
        "pools": {"split": {"targets": {"a": 80, "b": 20}}},
        "routes": {"r": {"pool": "split"}},
    })
    picks = Counter(target_for(gw, model="r") for _ in range(400))
    assert abs(picks["a"] / 400 - 0.8) < 0.08, picks  # about 4 standard deviations
    state = {p["name"]: p for p in gw.state()["pools"]}
    assert state["split"]["weights"] == {"a": 80, "b": 20}
    metrics = gw.metrics()
    assert 'switchboard_routing_weight{pool="split",target="a"} 80.0' in metrics


def test_anthropic_target_through_the_openai_api(fleet) -> None:
    gw, ups = fleet
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    completion = client.chat.completions.create(model="anthropic", messages=messages, max_tokens=50, stop=["never"])
    assert completion.choices[0].message.content == "Bonjour from claude"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens == 3
    sent = ups["anthropic/claude-sonnet"].requests[-1].body
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 50 and sent["stop_sequences"] == ["never"]
    assert sent["messages"][0]["role"] == "user" and "hello there" in str(sent["messages"][0]["content"])

    stream = client.chat.completions.create(model="anthropic", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour from claude"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_anthropic_tool_calls_translate_both_ways(fleet) -> None:
    gw, _ = fleet
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    completion = client.chat.completions.create(model="anthropic", messages=messages, tools=tools)
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Paris"}'
    chunks = list(client.chat.completions.create(model="anthropic", messages=messages, tools=tools, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    assert "".join(d.function.arguments or "" for d in deltas).replace(" ", "") == '{"city":"Paris"}'


def test_a_target_with_a_system_prompt_puts_it_first(standin, gateway) -> None:
    """A prompt version is a target: the same model with its own system prompt, released like a model."""
    up = standin(name="up")
    gw = gateway({
        **fast_settings(),
        "targets": {"v2": {"provider": "openai", "model": "m", "base_url": up.url + "/v1",
                           "system_prompt": "Answer in French."}},
        "pools": {"p": {"targets": {"v2": 100}}},
        "routes": {"r": {"pool": "p"}},
    })
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    client.chat.completions.create(model="r", messages=[{"role": "user", "content": "hello"}])
    list(client.chat.completions.create(model="r", messages=[{"role": "user", "content": "hi"}], stream=True))
    for request in up.requests:
        assert request.body["messages"][0] == {"role": "system", "content": "Answer in French."}
        assert request.body["messages"][1]["role"] == "user"
