"""kubesim's metric sources against the real things: lengths from a real redis-server (tests/redis_server.py) and
instant queries against a real prometheus (tests/prometheus_server.py) scraping a gauge the test sets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from services.kubesim.controllers.base import Settings
from services.kubesim.controllers.runner import Controllers
from services.kubesim.metrics import MetricBoard, Series
from services.kubesim.server import KubeApi
from services.kubesim.sources.prometheus import PrometheusSource, QueryFailed, instant_query
from services.kubesim.sources.redis_length import (
    LengthFailed,
    RedisLengthSource,
    key_length,
    list_length,
    pending_count,
    stream_length,
)
from tests.prometheus_server import GaugeExporter, PrometheusServer
from tests.redis_server import RedisServer
from tests.server_process import free_port
from tests.waiting import until

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def gauges() -> Iterator[GaugeExporter]:
    with GaugeExporter() as exporter:
        exporter.set("queue_depth", 7)
        exporter.set("nan_gauge", float("nan"))
        yield exporter


@pytest.fixture(scope="module")
def prometheus(gauges: GaugeExporter) -> Iterator[PrometheusServer]:
    with PrometheusServer([gauges.target], scrape_interval_s=0.5) as running:
        running.wait_for("queue_depth", lambda values: values == [7.0])
        yield running


def run(body: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(body(*args))




# --- Redis -------------------------------------------------------------------------------------------------


def test_list_and_stream_lengths_are_read_from_redis(redis_server: RedisServer, db: redis.Redis) -> None:
    db.rpush("jobs", *range(23))
    for item in range(4):
        db.xadd("events", {"n": item})
    db.xgroup_create("events", "workers", id="0")
    db.xreadgroup("workers", "w1", {"events": ">"}, count=3)  # three delivered, none acknowledged: pending
    url = redis_server.url
    assert run(list_length, url, "jobs") == 23
    assert run(list_length, url, "nothing-here") == 0
    assert run(stream_length, url, "events") == 4
    assert run(pending_count, url, "events", "workers") == 3
    assert run(key_length, url, "events") == 4
    assert run(key_length, url, "jobs") == 23
    assert run(key_length, url, "nothing-here") == 0


def test_a_key_without_a_length_or_a_missing_group_is_a_clear_failure(redis_server: RedisServer,
                                                                      db: redis.Redis) -> None:
    db.set("plain", "text")
    with pytest.raises(LengthFailed, match="holds a string"):
        run(key_length, redis_server.url, "plain")
    with pytest.raises(LengthFailed, match="list 'plain'"):
        run(list_length, redis_server.url, "plain")
    db.xadd("events", {"n": 1})
    with pytest.raises(LengthFailed, match="group 'nobody'"):
        run(pending_count, redis_server.url, "events", "nobody")


def test_an_unreachable_redis_is_a_failure_naming_where_not_who() -> None:
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(LengthFailed, match=r"127\.0\.0\.1") as failed:
        run(list_length, url, "jobs")
    assert "secret" not in str(failed.value)


def test_the_redis_source_follows_the_key_and_clears_the_series_when_redis_goes() -> None:
    series = Series("inference", "queue", "")
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.rpush("queue", "a", "b", "c")
        board = MetricBoard()

        async def body() -> None:
            source = RedisLengthSource(server.url, "queue", series, interval_s=0.05)
            task = asyncio.create_task(source.run(board, lambda: 42.0))
            await until("the length 3", lambda: board.get(series) is not None and board.get(series).value == 3)
            sample = board.get(series)
            assert sample is not None and sample.source == "redis" and sample.at == 42.0
            client.rpush("queue", "d")
            await until("the length 4", lambda: board.get(series) is not None and board.get(series).value == 4)
            await asyncio.to_thread(server.kill)
            await until("the series to clear", lambda: board.get(series) is None)
            task.cancel()

        asyncio.run(body())
        client.close()


# --- Prometheus ----------------------------------------------------------------------------------------------


def test_instant_query_reads_vectors_scalars_and_empty_results(prometheus: PrometheusServer) -> None:
    assert run(instant_query, prometheus.url, "queue_depth") == [7.0]
    assert run(instant_query, prometheus.url, "scalar(queue_depth) * 2") == [14.0]
    assert run(instant_query, prometheus.url, "vector(1) or vector(2)") == [1.0]
    assert run(instant_query, prometheus.url, "no_such_metric") == []
    assert sorted(run(instant_query, prometheus.url, 'label_replace(queue_depth, "x", "1", "", "") '
                                                     'or label_replace(queue_depth * 0, "y", "2", "", "")')) \
        == [0.0, 7.0]


def test_instant_query_refuses_a_bad_query_nan_and_an_unreachable_server(prometheus: PrometheusServer) -> None:
    with pytest.raises(QueryFailed, match=r"refused the query: .*parse error"):
        run(instant_query, prometheus.url, "sum(")
    with pytest.raises(QueryFailed, match="NaN"):
        run(instant_query, prometheus.url, "nan_gauge")
    with pytest.raises(QueryFailed, match="cannot reach Prometheus"):
        run(instant_query, f"http://127.0.0.1:{free_port()}", "up")
    with pytest.raises(QueryFailed, match="must give a vector or a scalar"):
        run(instant_query, prometheus.url, "queue_depth[1m]")


def test_the_prometheus_source_feeds_the_series_and_clears_it_when_the_query_has_nothing(
        prometheus: PrometheusServer, gauges: GaugeExporter) -> None:
    board = MetricBoard()
    series = Series("inference", "cpu", "vllm")

    async def body() -> None:
        tasks = [asyncio.create_task(PrometheusSource(prometheus.url, "queue_depth * 2", series, 0.05)
                                     .run(board, lambda: 1.0))]
        await until("14", lambda: board.get(series) is not None and board.get(series).value == 14.0)
        assert board.get(series).source == "prometheus"  # type: ignore[union-attr]
        gone = Series("inference", "gone", "")
        board.set(gone, 1.0, 0.0, "test")
        tasks.append(asyncio.create_task(PrometheusSource(prometheus.url, "no_such_metric", gone, 0.05)
                                         .run(board, lambda: 1.0)))
        await until("an empty result to clear the series", lambda: board.get(gone) is None)
        broken = Series("inference", "broken", "")
        board.set(broken, 1.0, 0.0, "test")
        tasks.append(asyncio.create_task(PrometheusSource(prometheus.url, "sum(", broken, 0.05)
                                         .run(board, lambda: 1.0)))
        await until("a bad query to clear the series", lambda: board.get(broken) is None)
        for task in tasks:
            task.cancel()

    asyncio.run(body())


def test_both_sources_run_under_the_controllers_runner(redis_server: RedisServer, db: redis.Redis,
                                                       prometheus: PrometheusServer) -> None:
    db.rpush("jobs", "a", "b")
    queue, waiting = Series("inference", "queue", ""), Series("inference", "waiting", "")
    api = KubeApi({})

    async def body() -> None:
        runner = Controllers(api.store, api.registry, Settings(tick=3600.0), sources=(
            RedisLengthSource(redis_server.url, "jobs", queue, interval_s=0.05),
            PrometheusSource(prometheus.url, "queue_depth", waiting, interval_s=0.05)))
        runner.start()
        try:
            await until("both sources' first readings",
                        lambda: runner.board.get(queue) is not None and runner.board.get(waiting) is not None)
            readings = runner.board.get(queue), runner.board.get(waiting)
            assert [reading.value for reading in readings if reading] == [2.0, 7.0]
        finally:
            runner.stop()

    asyncio.run(body())
