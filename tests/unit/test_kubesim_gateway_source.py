"""kubesim's gateway source: the real gateway's /metrics, scraped twice, as a workload's request rate and CPU on the
board; against a running gateway reached by the official openai SDK, and on its parsing and rate arithmetic."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from services.gateway.metrics import GatewayMetrics
from services.kubesim.controllers.base import Settings
from services.kubesim.metrics import Sample, Series
from services.kubesim.server import KubeSim
from services.kubesim.sources.gateway import GatewaySource, ScrapeFailed, Totals, parse_totals, rates
from tests.gateway_harness import RunningGateway, fast_settings, openai_target
from tests.waiting import wait_for

DEADLINE_S = 30.0
RATE = Series("ai-prod", "http_requests_per_second", "ai-api")
CPU = Series("ai-prod", "cpu", "ai-api")


def test_the_request_counter_is_summed_over_routes_and_status_classes_with_the_process_cpu() -> None:
    metrics = GatewayMetrics()
    idle = parse_totals(metrics.render().decode(), at=5.0)
    assert idle.requests == 0.0  # a labelled counter has no children before its first request
    assert idle.cpu_seconds is not None and idle.cpu_seconds > 0
    metrics.child("requests", "auto", "2xx").inc(7)
    metrics.child("requests", "auto", "5xx").inc(2)
    metrics.child("requests", "cheap", "2xx").inc(1)
    metrics.child("attempts", "pool", "a", "openai", "2xx").inc(50)  # upstream attempts are not client requests
    assert parse_totals(metrics.render().decode(), at=6.0).requests == 10.0


@pytest.mark.parametrize("text", ["", "# TYPE other counter\nother_total 3\n", "switchboard_requests_total{ 3\n"])
def test_what_is_not_a_gateways_metrics_page_is_refused(text: str) -> None:
    with pytest.raises(ScrapeFailed):
        parse_totals(text, at=0.0)


def test_rates_are_the_change_per_second_times_the_multiplier() -> None:
    before, after = Totals(100.0, 4.0, at=10.0), Totals(130.0, 5.0, at=12.0)
    found = rates(before, after, multiplier=20.0)
    assert found is not None
    assert (found.requests_per_second, found.cores) == (300.0, 10.0)  # 15/s and 0.5 cores, times 20
    assert rates(before, Totals(130.0, None, at=12.0), 1.0).cores is None  # type: ignore[union-attr]


@pytest.mark.parametrize("after", [Totals(3.0, 5.0, at=12.0), Totals(130.0, 1.0, at=12.0), Totals(130.0, 5.0, 10.0)])
def test_a_counter_reset_or_no_elapsed_time_gives_no_rate(after: Totals) -> None:
    assert rates(Totals(100.0, 4.0, at=10.0), after, multiplier=1.0) is None


@pytest.mark.parametrize(("options", "message"), [({"multiplier": 0.0}, "multiplier"),
                                                  ({"interval_s": -1.0}, "interval_s"),
                                                  ({"multiplier": float("nan")}, "multiplier")])
def test_a_source_with_a_bad_knob_is_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewaySource("http://127.0.0.1:1", "ai-prod", "ai-api", **options)


@pytest.fixture
def fed(standin: Callable[..., Any], gateway: Callable[[dict[str, Any]], RunningGateway]
        ) -> Iterator[tuple[RunningGateway, KubeSim]]:
    """A real gateway in front of a stand-in upstream, and a kubesim whose board it feeds every 0.2 s."""
    upstream = standin(name="up")
    running = gateway({**fast_settings(), "targets": {"a": openai_target(upstream.url)},
                       "pools": {"p": {"targets": {"a": 100}}}, "routes": {"r": {"pool": "p"}}})
    source = GatewaySource(running.url, "ai-prod", "ai-api", multiplier=10.0, interval_s=0.2)
    sim = KubeSim({}, tls=False, controllers=Settings(), sources=(source,)).start()
    yield running, sim
    sim.stop()


def sample(sim: KubeSim, series: Series) -> Sample | None:
    assert sim.controllers is not None
    board = sim.controllers.board
    return sim.call(lambda: board.get(series))




def test_requests_through_the_gateway_become_the_workloads_rate_and_a_stopped_gateway_clears_it(
        fed: tuple[RunningGateway, KubeSim]) -> None:
    running, sim = fed
    idle = wait_for("the first rate (two scrapes)", lambda: sample(sim, RATE))
    assert (idle.value, idle.source) == (0.0, "gateway")
    cpu = wait_for("the cpu series", lambda: sample(sim, CPU))
    assert cpu.value >= 0.0 and cpu.source == "gateway"

    client = openai.OpenAI(base_url=running.url + "/v1", api_key="client-key", max_retries=0)

    def busy() -> Sample | None:
        reply = client.chat.completions.create(model="r", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Hello from up"
        found = sample(sim, RATE)
        return found if found is not None and found.value > 0 else None

    wait_for("a request rate above 0", busy)

    running.stop()
    wait_for("both series cleared", lambda: sample(sim, RATE) is None and sample(sim, CPU) is None)


def test_an_unreachable_gateway_writes_nothing() -> None:
    source = GatewaySource("http://127.0.0.1:9", "ai-prod", "ai-api", interval_s=0.05)
    sim = KubeSim({}, tls=False, controllers=Settings(), sources=(source,)).start()
    try:
        assert sim.controllers is not None
        board = sim.controllers.board
        sim.call(lambda: board.set(RATE, 123.0, 0.0, "stale"))
        wait_for("the stale rate cleared", lambda: sample(sim, RATE) is None)
        assert sample(sim, CPU) is None
    finally:
        sim.stop()
