"""Every metric name that manifests/ and docker/ name (AnalysisTemplate and KEDA queries, HPA custom metrics through
the prometheus-adapter rules, alert and recording rules, Grafana panels) is one that something really exports: a
live gateway's /metrics (configured as the manifests deploy it, on a real Redis so its batch gauges are there), the
batch worker's registry, or vLLM's list. vLLM's names come from the list below (../shared/reference/vllm.md 1.3, the
names of the vLLM the backend pins), not a running engine: starting one costs minutes of CPU; where the reference is
beside the clone, a test checks each listed name appears in it."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from services.worker.metrics import WorkerMetrics
from tests.deploy.manifests import MANIFESTS, ROOT
from tests.gateway_harness import RunningGateway
from tests.redis_server import RedisServer

DOCKER = ROOT / "docker"
VLLM_REFERENCE = ROOT.parent / "shared" / "reference" / "vllm.md"
PROMQL_KEYS = {"query", "expr", "seriesQuery"}  # where PromQL lives: Argo and KEDA, rules and Grafana, the adapter
HPA_SOURCES = ("pods", "object", "external")
VLLM_METRICS = {  # name as exposed -> type (../shared/reference/vllm.md 1.3)
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:request_success_total": "counter",
    "vllm:num_preemptions_total": "counter",
    "vllm:prefix_cache_queries_total": "counter",
    "vllm:prefix_cache_hits_total": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:iteration_tokens_total": "histogram",
}
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
               "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads, parsed loosely: string literals (Argo's {{args.x}} is inside
    one), label matchers, ranges, grouping clauses and Grafana $variables are removed; an identifier left that is
    not a function call or a keyword is a metric name."""
    text = _STRING.sub('""', expression)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = _GROUPING.sub(" ", text)
    return {match.group(1) for match in _IDENTIFIER.finditer(text)
            if not match.group(2) and match.group(1).lower() not in NOT_METRICS}


def exposed(families: dict[str, str]) -> set[str]:
    """Every series name a family exposes (what a query may name), from the name and type of each family."""
    names = set()
    for name, kind in families.items():
        if kind == "counter":
            base = name.removesuffix("_total")
            names |= {f"{base}_total", f"{base}_created"}
        elif kind in ("histogram", "summary"):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"} | (
                {name} if kind == "summary" else set())
        else:
            names.add(name)
    return names


def families_of(exposition: str) -> dict[str, str]:
    found = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            found[name] = kind
    return found


def documents(directory: Path) -> Iterator[tuple[Path, Any]]:
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            for document in yaml.safe_load_all(path.read_text()):
                yield path, document
        elif path.suffix == ".json":
            yield path, yaml.safe_load(path.read_text())  # JSON is YAML


def walk(node: Any) -> Iterator[tuple[str, Any, Any]]:
    """(key, value, the mapping holding it) for every mapping entry, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value, node
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def collected() -> tuple[dict[str, set[str]], set[str], dict[str, set[str]]]:
    """(metric name -> where it is used, names recording rules define, adapter metric -> the series it serves)."""
    used: dict[str, set[str]] = {}
    recorded: set[str] = set()
    adapted: dict[str, set[str]] = {}
    for directory in (MANIFESTS, DOCKER):
        for path, document in documents(directory):
            where = str(path.relative_to(ROOT))
            for key, value, holder in walk(document):
                if key in PROMQL_KEYS and isinstance(value, str):
                    for name in metric_names(value):
                        used.setdefault(name, set()).add(where)
                if key == "record" and isinstance(value, str):
                    recorded.add(value)
                if key == "seriesQuery" and isinstance(holder.get("name"), dict) and "as" in holder["name"]:
                    adapted[holder["name"]["as"]] = metric_names(value)
                if key == "metric" and isinstance(value, dict) and "name" in value and isinstance(
                        document, dict) and document.get("kind") == "HorizontalPodAutoscaler":
                    used.setdefault(f"hpa:{value['name']}", set()).add(where)
    return used, recorded, adapted


@pytest.fixture(scope="module")
def gateway_exports() -> set[str]:
    """The live gateway's /metrics families, configured as manifests/ deploys it (listeners and Redis local)."""
    config = yaml.safe_load((MANIFESTS / "base" / "gateway" / "gateway.yaml").read_text())
    with RedisServer() as redis_server:
        config["server"]["host"] = "127.0.0.1"
        config["admin"] = {"tokens": config["admin"]["tokens"]}  # one listener: the harness serves one port
        config["state"]["redis_url"] = config["batch"]["redis_url"] = redis_server.url
        with RunningGateway(config) as gateway:
            exposition = gateway.metrics()
    families = families_of(exposition)
    assert "switchboard_batch_queue_length" in families  # the batch gauges: the queue's Redis answered
    return exposed(families)


def unknown(exports: set[str]) -> dict[str, set[str]]:
    used, recorded, adapted = collected()
    known = exports | recorded
    missing = {}
    for name, where in used.items():
        if name.startswith("hpa:"):
            served = adapted.get(name.removeprefix("hpa:"))
            if served is None or not served <= known:
                missing[name] = where
        elif name not in known:
            missing[name] = where
    return missing


def test_every_metric_named_in_manifests_and_docker_is_exported(gateway_exports: set[str]) -> None:
    worker = exposed(families_of(generate_latest(WorkerMetrics().registry).decode()))
    exports = gateway_exports | worker | exposed(VLLM_METRICS)
    used, _, adapted = collected()
    # The checker reads what it must: the canary gates, KEDA's vLLM queue, the HPA's request rate, the dashboards.
    assert {"switchboard_upstream_requests_total", "switchboard_upstream_latency_seconds_bucket",
            "vllm:num_requests_waiting", "hpa:switchboard_requests_per_second"} <= set(used)
    assert adapted == {"switchboard_requests_per_second": {"switchboard_requests_total"}}
    assert unknown(exports) == {}


def test_the_checker_flags_a_name_nothing_exports(gateway_exports: set[str]) -> None:
    assert metric_names('sum(rate(http_requests_total{service="{{args.service-name}}", status=~"5.."}[5m]))'
                        ' / sum by (le) (vllm:num_requests_waiting offset 5m) * 1000') == {
        "http_requests_total", "vllm:num_requests_waiting"}
    assert metric_names("histogram_quantile(0.99, sum by (le, target) (rate(x_bucket[$__rate_interval])))") == {
        "x_bucket"}
    without = gateway_exports - {"switchboard_upstream_requests_total"}
    assert "switchboard_upstream_requests_total" in unknown(without | exposed(VLLM_METRICS))
    assert "vllm:num_requests_waiting" in unknown(gateway_exports)
    assert "switchboard_requests_total" not in exposed({"switchboard_requests_totals": "gauge"})
    assert "hpa:switchboard_requests_per_second" in unknown(gateway_exports - {"switchboard_requests_total"})


def test_the_vllm_list_is_the_references() -> None:
    if not VLLM_REFERENCE.is_file():  # a clone with no ../shared beside it (as tests/contract does for the CRDs)
        warnings.warn(f"{VLLM_REFERENCE} does not exist here: the vLLM list was not compared", stacklevel=1)
        assert all(name.startswith("vllm:") for name in VLLM_METRICS)
        return
    text = VLLM_REFERENCE.read_text()
    assert [name for name in VLLM_METRICS if f"`{name}" not in text] == []
