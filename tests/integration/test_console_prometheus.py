"""The console on Prometheus: a real ``prometheus`` scrapes two gateway processes (replicas of one config) under known
traffic, and the console's Prometheus source reads the error rate and p99 that were sent; a down or hung Prometheus
shows DOWN with the reason in the Providers pane and never raises into it.

The replicas share target ``t`` but reach it through different stand-ins, so the replicas see different latencies:
replica ``slow`` answers every request 400 ms late, replica ``fast`` at once but fails 3 in 10 (two 500s, one
connection cut). A p99 from buckets summed across replicas lands in the slow bucket (250, 500] ms; an average of
the replicas' own p99s would read below 300 ms.

Tolerances: the error rate within 0.03 of the share sent (Prometheus' ``rate`` extrapolates each replica's counters
over slightly different scrape times); p99 inside the histogram bucket of the latency sent, above the sent 400 ms
(bucket width is what ``histogram_quantile`` resolves); p50 below that bucket.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.app import create_app
from console.panes import ProvidersPane, RoutingPane
from console.sources.poller import Health, Observed, Poller
from console.sources.prometheus import PrometheusClient, PrometheusFigures, ProvidersView
from tests.console.pilot_helpers import console_context
from tests.console.pilot_helpers import wait_for as wait_in_pilot
from tests.gateway_harness import GatewayProcess, RunningGateway, fast_settings, openai_target
from tests.prometheus_server import PrometheusServer
from tests.server_process import free_port
from tests.standins import Fault, Standin

SLOW_S = 0.4
SLOW_REQUESTS = 20
FAST_CYCLES = 30  # of 10 requests: 7 answered, two 500s, one cut connection
FAST_PATTERN = (Fault.ok(),) * 7 + (Fault.status(500), Fault.status(500), Fault.cut())
SENT_ERRORS = FAST_CYCLES * 3
SENT_ATTEMPTS = SLOW_REQUESTS + FAST_CYCLES * len(FAST_PATTERN)
SETTLED_SAMPLES = 40  # per series: 10 s of scrapes at 0.25 s


def replica_config(upstream: Standin) -> dict[str, Any]:
    """One replica's config: no retries (each request one attempt) and a breaker that never opens."""
    return {
        **fast_settings(retry={"max_retries": 0, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "budget_s": 1.0},
                        health={"error_window_s": 60,
                                "breaker": {"error_rate_threshold": 1.0, "min_requests": 1000, "cooldown_s": 1.0}}),
        "targets": {"t": openai_target(upstream.url, "model-t")},
        "pools": {"p": {"targets": {"t": 100}}},
        "routes": {"r": {"pool": "p"}},
    }


def send(url: str, count: int, workers: int) -> list[int]:
    body = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: client.post(url + "/v1/chat/completions", json=body).status_code,
                             range(count)))


def settle(prometheus: PrometheusServer) -> None:
    """Waits until every request series has ``SETTLED_SAMPLES`` samples in the window.

    ``rate`` extrapolates each series past its first and last samples by up to 1.5 scrape intervals, in proportion
    to the span it has samples for, and each replica is scraped at its own moments. Right after quick traffic that
    span is about a second, and the two replicas' factors can differ by a third: a CI run read 28.9% for 25% sent.
    Over ten seconds of samples the difference stays under 4%, a fraction of a point on the error rate."""
    prometheus.wait_for("min(count_over_time(switchboard_upstream_requests_total[1m]))",
                        lambda v: bool(v) and v[0] >= SETTLED_SAMPLES)


def cycling(faults: tuple[Fault, ...]) -> Callable[[], Fault]:
    lock, cycle = threading.Lock(), itertools.cycle(faults)

    def next_fault() -> Fault:
        with lock:
            return next(cycle)

    return next_fault


@pytest.fixture
def upstreams() -> Iterator[tuple[Standin, Standin]]:
    slow, fast = Standin(name="slow").start(), Standin(name="fast").start()
    yield slow, fast
    slow.stop()
    fast.stop()


@pytest.fixture
def replicas(upstreams: tuple[Standin, Standin], tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    started: list[GatewayProcess] = []
    try:
        for upstream in upstreams:
            workdir = tmp_path / upstream.name
            workdir.mkdir()
            started.append(GatewayProcess(replica_config(upstream), str(workdir), upstream.name).start())
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


def test_error_rate_and_p99_across_two_replicas_match_what_was_sent(
        upstreams: tuple[Standin, Standin], replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    slow, fast = upstreams
    slow_gw, fast_gw = replicas
    with PrometheusServer([f"127.0.0.1:{r.port}" for r in replicas], scrape_interval_s=0.25) as prometheus:
        # Every series exists and has been scraped once before the measured traffic: rate() counts what follows.
        slow.set_default(Fault.delay(SLOW_S))
        fast.push(Fault.ok(), Fault.status(500), Fault.cut())
        assert send(slow_gw.url, 1, 1) == [200] and sorted(send(fast_gw.url, 3, 1)) == [200, 502, 502]
        prometheus.wait_for("count(switchboard_upstream_requests_total)", lambda v: v == [4.0])
        prometheus.wait_for('count(switchboard_upstream_latency_seconds_bucket{le="+Inf"})', lambda v: v == [2.0])

        fast.set_default(cycling(FAST_PATTERN))
        slow_codes = send(slow_gw.url, SLOW_REQUESTS, 10)
        fast_codes = send(fast_gw.url, FAST_CYCLES * len(FAST_PATTERN), 4)
        assert slow_codes.count(200) == SLOW_REQUESTS and fast_codes.count(200) == FAST_CYCLES * 7
        assert (len(slow.requests), len(fast.requests)) == (1 + SLOW_REQUESTS, 3 + FAST_CYCLES * len(FAST_PATTERN))
        prometheus.wait_for("sum(switchboard_upstream_requests_total)", lambda v: v == [4.0 + SENT_ATTEMPTS])
        settle(prometheus)

        client = PrometheusClient(prometheus.url, timeout_s=10, window="5m")
        try:
            figures = asyncio.run(client.figures()).target("t")
        finally:
            client.close()

    sent_error_rate = SENT_ERRORS / SENT_ATTEMPTS  # 90 / 320 = 0.28125
    print(f"error rate sent {sent_error_rate:.4f} measured {figures.error_rate:.4f}; "
          f"latency sent {SLOW_S * 1000:.0f} ms on {SLOW_REQUESTS} of {SLOW_REQUESTS + FAST_CYCLES * 7} answers, "
          f"p99 measured {figures.total_p99_ms:.1f} ms, p50 {figures.total_p50_ms:.1f} ms")
    assert figures.error_rate == pytest.approx(sent_error_rate, abs=0.03)
    assert figures.total_p99_ms is not None and SLOW_S * 1000 < figures.total_p99_ms <= 500
    assert figures.total_p50_ms is not None and figures.total_p50_ms < 250
    assert figures.requests_per_s > 0


def test_a_prometheus_context_feeds_the_providers_pane_from_prometheus(
        upstreams: tuple[Standin, Standin], replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    """The console asks replica ``slow`` (no errors of its own) for its state; the pane's Err is Prometheus'
    figure across both replicas."""
    slow, fast = upstreams
    slow_gw, fast_gw = replicas
    slow.set_default(Fault.delay(0.05))
    fast.set_default(cycling((Fault.ok(), Fault.status(500))))
    with PrometheusServer([f"127.0.0.1:{r.port}" for r in replicas], scrape_interval_s=0.25) as prometheus:
        assert send(slow_gw.url, 1, 1) + send(fast_gw.url, 2, 1) == [200, 200, 502]  # every series once, scraped
        prometheus.wait_for("count(switchboard_upstream_requests_total)", lambda v: v == [3.0])
        send(fast_gw.url, 20, 2)
        send(slow_gw.url, 20, 4)
        prometheus.wait_for("sum(switchboard_upstream_requests_total)", lambda v: v == [43.0])
        settle(prometheus)
        context = console_context(slow_gw, prometheus_url=prometheus.url, timeout_s=5.0)  # type: ignore[arg-type]

        async def watch() -> None:
            app = create_app(context, poll=True)
            async with app.run_test(size=(160, 50)) as pilot:
                table = app.query_one(ProvidersPane).body
                await wait_in_pilot(pilot, lambda: "t" in table.row_keys, 30.0, "target t in the Providers pane")
                # 10 of 40 measured attempts failed, all on replica fast: about 25% (±3 points of extrapolation)
                err = float(table.get_cell("t", "err").rstrip("%"))
                assert 22 <= err <= 28, err
                assert app.snapshots["gateway"].data is not None
                assert app.snapshots["gateway"].data.targets[0].error_rate == 0.0, "replica slow saw no errors"

        asyncio.run(watch())


def test_a_down_prometheus_shows_down_with_the_reason_and_a_hung_one_times_out(gateway: Any) -> None:
    gw: RunningGateway = gateway({**fast_settings(), "targets": {"t": openai_target("http://127.0.0.1:9")},
                                  "pools": {"p": {"targets": {"t": 100}}}, "routes": {"r": {"pool": "p"}}})
    dead = f"http://127.0.0.1:{free_port()}"
    with socket.socket() as hung:  # listens, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}"

        async def poll(url: str) -> Observed[PrometheusFigures]:
            client = PrometheusClient(url, timeout_s=0.5)
            try:
                return await Poller("prometheus", client.figures, lambda _: None, timeout_s=1.0).poll_once()
            finally:
                client.close()

        down, timed_out = asyncio.run(poll(dead)), asyncio.run(poll(hung_url))
    assert (down.health, down.data) == (Health.DOWN, None)
    assert down.error == f"{dead} unreachable: [Errno 111] Connection refused", down.error
    assert timed_out.health is Health.DOWN and timed_out.error is not None and "timed out" in timed_out.error

    async def watch() -> None:
        app = create_app(console_context(gw, prometheus_url=dead), poll=True)
        async with app.run_test(size=(160, 50)) as pilot:
            pane = app.query_one(ProvidersPane)
            await wait_in_pilot(pilot, lambda: "DOWN" in pane.title_plain, 10.0, "Providers DOWN")
            assert "prometheus:" in pane.title_plain, pane.title_plain
            assert pane.body.row_keys == []
            shown = ProvidersView().view(app.snapshots["gateway"], app.snapshots["prometheus"])
            assert shown.error is not None and shown.error.startswith(f"prometheus: {dead} unreachable")
            assert "LIVE" in app.query_one(RoutingPane).title_plain, "the gateway's own panes go on"

    asyncio.run(watch())
