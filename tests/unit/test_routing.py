"""The router's rules, weights and fallback order, on a fake clock with health fed directly."""

import random
from collections import Counter

import pytest

from services.gateway.config import example_config_path, load_config
from services.gateway.context import RoutingContext
from services.gateway.health import ErrorClass, TargetHealth
from services.gateway.routing import NoTargetError, Router
from tests.clock import Clock

GPT4, MINI, CLAUDE, LOCAL = "openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet", "vllm-local/smollm2"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router(clock: Clock) -> Router:
    config = load_config(example_config_path())
    health = {name: TargetHealth(config.health, clock=clock) for name in config.targets}
    return Router(config, health, enabled=set(config.targets), rng=random.Random(7), clock=clock)


def ctx(payload: dict | None = None, **headers: str) -> RoutingContext:
    names = {k: f"x-switchboard-{k.replace('_', '-')}" for k in ("tier", "task", "quality", "latency_budget_ms")}
    payload = payload or {"messages": [{"role": "user", "content": "hello"}]}
    return RoutingContext({names[k]: v for k, v in headers.items()}, payload)


def first(router: Router, context: RoutingContext) -> tuple[str | None, str]:
    plan = router.plan("auto", context)
    return plan.rule, plan.attempts[0][1]


def long_prompt() -> dict:
    return {"messages": [{"role": "user", "content": "word " * 1500}]}


def test_enterprise_and_high_quality_goes_to_gpt4(router: Router) -> None:
    assert first(router, ctx(tier="enterprise", quality="high")) == ("enterprise-high-quality", GPT4)


def test_enterprise_without_high_quality_is_not_rule_one(router: Router) -> None:
    assert first(router, ctx(tier="enterprise", quality="medium")) == ("cost-small-prompt", MINI)


def test_latency_budget_goes_to_vllm_when_fast(router: Router) -> None:
    router.health[LOCAL].on_success(0.120)
    assert first(router, ctx(latency_budget_ms="400")) == ("latency-sensitive", LOCAL)


def test_latency_budget_skips_vllm_when_its_ema_is_300ms_or_more(router: Router) -> None:
    for _ in range(5):
        router.health[LOCAL].on_success(0.450)
    assert router.health[LOCAL].ema_latency_ms and router.health[LOCAL].ema_latency_ms > 300
    assert first(router, ctx(latency_budget_ms="400")) == ("cost-small-prompt", MINI)


def test_latency_rule_judges_streams_by_ttft_and_other_requests_by_total_latency(router: Router) -> None:
    local = router.health[LOCAL]
    for _ in range(5):
        local.on_first_token(0.080)  # first chunks come fast
        local.on_success(0.900)  # whole answers take long
    stream = {"messages": [{"role": "user", "content": "hello"}], "stream": True}
    assert first(router, ctx(stream, latency_budget_ms="400")) == ("latency-sensitive", LOCAL)
    assert first(router, ctx(latency_budget_ms="400")) == ("cost-small-prompt", MINI)


def test_latency_budget_skips_vllm_when_unavailable(router: Router, clock: Clock) -> None:
    router.health[LOCAL].cool_down(30, "rate_limit")
    assert first(router, ctx(latency_budget_ms="100")) == ("cost-small-prompt", MINI)


def test_budget_of_500ms_or_more_is_not_latency_sensitive(router: Router) -> None:
    router.health[LOCAL].on_success(0.050)
    assert first(router, ctx(latency_budget_ms="500"))[0] == "cost-small-prompt"


def test_ema_uses_alpha_0_3(router: Router) -> None:
    health = router.health[LOCAL]
    health.on_success(0.100)
    health.on_success(0.200)
    assert health.ema_latency_ms == pytest.approx(0.3 * 200 + 0.7 * 100)


def test_task_code_goes_to_gpt4_and_summarization_to_mini(router: Router) -> None:
    assert first(router, ctx(task="code")) == ("task-code", GPT4)
    assert first(router, ctx(long_prompt(), task="summarization", quality="high")) == ("task-summarization", MINI)


def test_small_prompt_without_high_quality_goes_to_mini(router: Router) -> None:
    assert first(router, ctx(quality="low")) == ("cost-small-prompt", MINI)


def test_token_estimate_uses_tiktoken(router: Router) -> None:
    assert ctx({"messages": [{"role": "user", "content": "hello world"}]}).estimated_tokens == 3 + 3 + 2
    assert ctx(long_prompt()).estimated_tokens > 1000


def test_large_prompt_falls_through_to_preference_order(router: Router) -> None:
    assert first(router, ctx(long_prompt())) == ("fallback-by-preference", MINI)


def test_preference_order_skips_targets_with_error_rate_of_10_percent(router: Router) -> None:
    mini = router.health[MINI]
    for _ in range(8):
        mini.on_success(0.1)
    mini.on_failure(ErrorClass.SERVER)  # 1 of 9 = 11%
    assert first(router, ctx(long_prompt())) == ("fallback-by-preference", LOCAL)
    router.drained.add(LOCAL)
    assert first(router, ctx(long_prompt())) == ("fallback-by-preference", CLAUDE)


def test_plan_continues_down_the_fallback_chain(router: Router) -> None:
    plan = router.plan("auto", ctx(tier="enterprise", quality="high"))
    assert [target for _, target in plan.attempts] == [GPT4, MINI, LOCAL, CLAUDE]


def test_disabled_targets_are_never_planned(router: Router) -> None:
    router.enabled.difference_update({GPT4, MINI, CLAUDE})
    plan = router.plan("auto", ctx(tier="enterprise", quality="high"))
    assert [target for _, target in plan.attempts] == [LOCAL]
    router.enabled.clear()
    with pytest.raises(NoTargetError):
        router.plan("auto", ctx())


def test_weights_are_honoured_within_tolerance(router: Router) -> None:
    router.weights["mini"] = {MINI: 70, CLAUDE: 30}
    picks = Counter(router.plan("mini", ctx()).attempts[0][1] for _ in range(4000))
    share = picks[MINI] / 4000
    assert abs(share - 0.70) < 0.03, picks  # about 4 standard deviations


def test_zero_weight_gets_no_traffic(router: Router) -> None:
    router.weights["mini"] = {MINI: 0, CLAUDE: 100}
    assert {router.plan("mini", ctx()).attempts[0][1] for _ in range(200)} == {CLAUDE}


def test_open_targets_are_skipped_and_least_bad_is_forced_when_all_are_open(router: Router, clock: Clock) -> None:
    for name in router.health:
        router.health[name].cool_down(20 if name == LOCAL else 40, "rate_limit")
    plan = router.plan("auto", ctx())
    assert plan.forced and plan.attempts == (("local", LOCAL),)
