"""ProvidersView: what the Providers pane shows when a context names a Prometheus, for every pair of source states."""

from __future__ import annotations

from console.sources.poller import Health, Observed
from console.sources.prometheus import PrometheusFigures, ProvidersView, TargetFigures
from tests.console.sample_data import gateway_state

FIGURES = PrometheusFigures("1m", {"openai-mini": TargetFigures(requests_per_s=40.0, error_rate=0.25,
                                                                 total_p50_ms=900.0, total_p99_ms=4700.0,
                                                                 ttft_p50_ms=None, ttft_p99_ms=1200.0)})


def gateway(health: Health = Health.LIVE, error: str | None = None) -> Observed:
    return Observed("gateway", gateway_state(), 100.0, health, error)


def prometheus(health: Health = Health.LIVE, error: str | None = None, data: PrometheusFigures | None = FIGURES,
               fetched_at: float | None = 90.0) -> Observed:
    return Observed("prometheus", data, fetched_at, health, error)


def test_without_prometheus_the_gateway_snapshot_is_shown_as_it_is() -> None:
    shown = gateway()
    assert ProvidersView().view(shown, None) is shown


def test_prometheus_figures_replace_the_replicas_own_and_a_target_without_series_had_no_traffic() -> None:
    shown = ProvidersView().view(gateway(), prometheus())
    mini, haiku = shown.data.targets[0], shown.data.targets[1]
    assert (mini.requests_per_s, mini.error_rate, mini.total_p50_ms, mini.total_p99_ms) == (40.0, 0.25, 900.0, 4700.0)
    assert (mini.ttft_p50_ms, mini.ttft_p99_ms) == (None, 1200.0)
    assert (mini.breaker, mini.status, mini.ema_latency_ms) == ("closed", "healthy", 180.0), "health: the gateway"
    assert (haiku.requests_per_s, haiku.error_rate, haiku.total_p99_ms) == (0.0, 0.0, None)
    assert (shown.health, shown.error, shown.fetched_at) == (Health.LIVE, None, 90.0), "the older fetch's age"


def test_an_unchanged_pair_of_snapshots_gives_the_same_object_so_the_pane_is_not_redrawn() -> None:
    view, g, p = ProvidersView(), gateway(), prometheus()
    first = view.view(g, p)
    assert view.view(g, p) is first
    assert view.view(g, prometheus()) is not first


def test_a_failing_prometheus_is_stale_with_its_last_figures_then_down_without_them() -> None:
    stale = ProvidersView().view(gateway(), prometheus(Health.STALE, "timed out"))
    assert (stale.health, stale.error) == (Health.STALE, "prometheus: timed out")
    assert stale.data.targets[0].error_rate == 0.25
    down = ProvidersView().view(gateway(), prometheus(Health.DOWN, "http://p:9090 unreachable: [Errno 111] refused"))
    assert (down.health, down.data) == (Health.DOWN, None)
    assert down.error == "prometheus: http://p:9090 unreachable: [Errno 111] refused"
    waiting = ProvidersView().view(gateway(), prometheus(Health.WAITING, data=None, fetched_at=None))
    assert (waiting.health, waiting.data, waiting.error) == (Health.WAITING, None, "waiting for prometheus")


def test_the_gateways_own_failure_wins_when_it_is_the_worse() -> None:
    shown = ProvidersView().view(gateway(Health.DOWN, "gateway unreachable"), prometheus())
    assert (shown.health, shown.error) == (Health.DOWN, "gateway unreachable")
    assert shown.data.targets[0].error_rate == 0.25
    nothing = Observed("gateway", None, None, Health.DOWN, "never answered")
    assert ProvidersView().view(nothing, prometheus()) is nothing
