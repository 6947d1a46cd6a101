"""A benchmark's result: the ``vllm bench serve --save-result`` JSON (same keys, so tools that read those read ours)
plus a ``switchboard`` block (spec, runner, target identity, tokenizer or "estimate")."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.bench.spec import BenchSpec, RandomDataset

# Keys of vLLM's result file that describe the setup rather than the measurements.
SETUP_KEYS = ("date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
              "request_rate", "burstiness", "max_concurrency")
# Per-request arrays (``--save-detailed``); kept out of our stored files.
DETAIL_KEYS = ("input_lens", "output_lens", "ttfts", "itls", "start_times", "generated_texts", "errors",
               "latencies", "queue_times")
SUMMARY_KEYS = ("duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
                "request_goodput", "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
                "max_concurrent_requests")
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
ESTIMATE = "estimate"


class ResultError(ValueError):
    """A result file that cannot be read; the message says why."""


class TargetIdentity(BaseModel):
    """What was measured: the model, and the engine's version and flags when the engine says (vLLM's /version)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = ""
    model: str = ""
    engine: str | None = None
    engine_version: str | None = None
    engine_flags: dict[str, Any] | None = None


class BenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: BenchSpec
    runner: str
    metrics: dict[str, Any] = Field(description="vLLM's result keys: duration, completed, ..., p99_ttft_ms")
    target: TargetIdentity = Field(default_factory=TargetIdentity)
    tokenizer: str = ESTIMATE
    date: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    cancelled: bool = False
    sweep_id: str | None = Field(None, description="shared by the runs of one sweep")
    warmups_done: int = 0
    errors: dict[str, int] = Field(default_factory=dict, description="failed requests by error text (first 40)")
    log: str | None = Field(None, description="the runner's output (vllm and job runners)")

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def to_json(self) -> dict[str, Any]:
        """The ``--save-result`` shape: setup keys, the metrics at top level, and our ``switchboard`` block."""
        spec = self.spec
        rate: float | str = "inf" if math.isinf(spec.request_rate) else spec.request_rate
        backend = "openai-chat" if spec.endpoint == "chat" else "openai"
        out: dict[str, Any] = {
            "date": self.date,
            "endpoint_type": backend,
            "backend": backend,
            "label": spec.label or None,
            "model_id": self.target.model or spec.model,
            "tokenizer_id": spec.tokenizer if self.tokenizer != ESTIMATE else None,
            "num_prompts": spec.num_prompts,
            "request_rate": rate,
            "burstiness": spec.burstiness,
            "max_concurrency": spec.max_concurrency,
        }
        out.update(self.metrics)
        out["switchboard"] = {
            "spec": spec.model_dump(mode="json"),
            "runner": self.runner,
            "target": self.target.model_dump(mode="json"),
            "tokenizer": self.tokenizer,
            "cancelled": self.cancelled,
            "sweep_id": self.sweep_id,
            "warmups_done": self.warmups_done,
            "errors": self.errors,
            "log": self.log,
        }
        return out

    @classmethod
    def from_json(cls, data: Any) -> BenchResult:
        """A file we wrote, or (without a ``switchboard`` block) one ``vllm bench serve`` wrote."""
        if not isinstance(data, dict):
            raise ResultError("a result file holds one JSON object")
        block = data.get("switchboard")
        if block is None:
            return parse_vllm_result(data)
        if not isinstance(block, dict):
            raise ResultError("the switchboard block is not an object")
        try:
            return cls(
                spec=BenchSpec.model_validate(block.get("spec")),
                runner=block.get("runner", "builtin"),
                metrics=_metrics_of(data),
                target=TargetIdentity.model_validate(block.get("target") or {}),
                tokenizer=block.get("tokenizer", ESTIMATE),
                date=str(data.get("date") or ""),
                cancelled=bool(block.get("cancelled", False)),
                sweep_id=block.get("sweep_id"),
                warmups_done=int(block.get("warmups_done", 0)),
                errors=block.get("errors") or {},
                log=block.get("log"),
            )
        except (ValidationError, TypeError, ValueError) as exc:
            raise ResultError(f"not a switchboard result: {exc}") from None


def _metrics_of(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in SETUP_KEYS and k not in DETAIL_KEYS and k != "switchboard"}


def _rate(value: Any) -> float:
    if value in (None, "inf", "Infinity"):
        return math.inf
    return float(value)


def parse_vllm_result(data: Any, spec: BenchSpec | None = None, runner: str = "vllm",
                      base_url: str = "") -> BenchResult:
    """A ``BenchResult`` from the JSON ``vllm bench serve --save-result`` writes (a dict, or its text).

    ``spec`` is what was asked for (the vllm and job runners know it); without one, a spec is rebuilt from the
    file's setup keys. Per-request arrays (``--save-detailed``) are dropped; ``metadata`` keys are kept.
    """
    if isinstance(data, str | bytes):
        import json

        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ResultError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultError("a vllm bench serve result is one JSON object")
    missing = [k for k in ("duration", "completed") if k not in data]
    if missing:
        raise ResultError(f"not a vllm bench serve result: no {', '.join(missing)}")
    try:
        if spec is None:
            backend = str(data.get("backend") or data.get("endpoint_type") or "openai")
            spec = BenchSpec(
                base_url=base_url or "http://unknown",
                endpoint="chat" if "chat" in backend else "completions",
                model=data.get("model_id"),
                dataset=RandomDataset(),
                num_prompts=int(data.get("num_prompts") or max(1, int(data["completed"]) + int(data.get("failed", 0)))),
                max_concurrency=data.get("max_concurrency"),
                request_rate=_rate(data.get("request_rate")),
                burstiness=float(data.get("burstiness") or 1.0),
                label=str(data.get("label") or "").replace(" ", "_")[:64],
                runner="vllm" if runner == "vllm" else "job",
            )
    except (ValidationError, TypeError, ValueError) as exc:
        raise ResultError(f"cannot read the setup of this vllm result: {exc}") from None
    tokenizer_id = data.get("tokenizer_id")
    return BenchResult(
        spec=spec,
        runner=runner,
        metrics=_metrics_of(data),
        target=TargetIdentity(base_url=spec.base_url, model=str(data.get("model_id") or spec.model or ""),
                              engine="vllm"),
        tokenizer=str(tokenizer_id) if tokenizer_id else ESTIMATE,
        date=str(data.get("date") or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")),
    )
