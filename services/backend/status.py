"""``switchboard backend status``: /health, /v1/models and /metrics of a running engine, in a few lines."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from services.backend.metrics import EngineMetrics, LatencySummary, parse

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_UNREACHABLE = 2


@dataclass(frozen=True)
class BackendStatus:
    url: str
    reachable: bool
    healthy: bool
    models: tuple[str, ...]
    metrics: EngineMetrics | None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if not self.reachable:
            return EXIT_UNREACHABLE
        return EXIT_HEALTHY if self.healthy else EXIT_UNHEALTHY


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fetch(url: str, timeout: float = 5.0) -> BackendStatus:
    url = url.rstrip("/")
    try:
        code, _ = _get(url + "/health", timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return BackendStatus(url, reachable=False, healthy=False, models=(), metrics=None, error=str(reason))
    models: tuple[str, ...] = ()
    metrics = None
    errors = []
    try:
        code_models, body = _get(url + "/v1/models", timeout)
        if code_models == 200:
            models = tuple(m["id"] for m in json.loads(body).get("data", []))
        else:
            errors.append(f"/v1/models answered {code_models}")
        code_metrics, body = _get(url + "/metrics", timeout)
        if code_metrics == 200:
            metrics = parse(body.decode())
        else:
            errors.append(f"/metrics answered {code_metrics}")
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        errors.append(str(exc))
    return BackendStatus(url, True, code == 200, models, metrics, "; ".join(errors) or None)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def _secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _latency_line(label: str, summary: LatencySummary | None) -> str:
    if summary is None:
        return f"{label:<5} n/a (no histogram on /metrics)"
    if not summary.count:
        return f"{label:<5} no requests yet ({summary.name})"
    return (
        f"{label:<5} p50 {_secs(summary.p50)}  p90 {_secs(summary.p90)}  p99 {_secs(summary.p99)}  "
        f"mean {_secs(summary.mean)}  n={summary.count:g}  ({summary.name})"
    )


def render(status: BackendStatus) -> str:
    if not status.reachable:
        return f"backend {status.url}: UNREACHABLE ({status.error})"
    lines = [f"backend {status.url}: {'healthy' if status.healthy else 'UNHEALTHY'}"]
    lines.append(f"models: {', '.join(status.models) or 'none listed'}")
    m = status.metrics
    if m is not None:
        lines.append(
            f"requests: running {_num(m.running)}, waiting {_num(m.waiting)}, finished {_num(m.requests_finished)}"
        )
        lines.append(f"KV cache usage: {_pct(m.kv_cache_usage)}")
        prefix = _pct(m.prefix_cache_hit_rate)
        if m.prefix_cache_queries is not None:
            prefix += f" ({_num(m.prefix_cache_hits)} of {_num(m.prefix_cache_queries)} prompt tokens)"
        lines.append(f"prefix cache hit rate: {prefix}")
        lines.append(f"tokens: prompt {_num(m.prompt_tokens)}, generated {_num(m.generation_tokens)}")
        lines.append(_latency_line("TTFT", m.ttft))
        lines.append(_latency_line("ITL", m.itl))
        lines.append(_latency_line("E2E", m.e2e))
    if status.error:
        lines.append(f"warning: {status.error}")
    return "\n".join(lines)
