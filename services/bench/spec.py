"""What a benchmark run does: ``BenchSpec``, saved with every result (it never holds a secret, only the name of
the environment variable that holds the key)."""

from __future__ import annotations

import math
import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomDataset(_Strict):
    """Random prompts of ``input_len`` tokens asking for ``output_len`` tokens (``ignore_eos``, as vLLM forces).

    ``range_ratio`` spreads both lengths uniformly over ``[len*(1-r), len*(1+r)]``, as ``--random-range-ratio``.
    """

    kind: Literal["random"] = "random"
    input_len: int = Field(1024, ge=1)
    output_len: int = Field(128, ge=1)
    range_ratio: float = Field(0.0, ge=0.0, lt=1.0)


class JsonlDataset(_Strict):
    """One JSON object a line: ``{"prompt": str, "output_len"?: int}`` (``output_tokens``/``max_tokens`` too)."""

    kind: Literal["jsonl"] = "jsonl"
    path: str
    output_len: int | None = Field(None, ge=1, description="overrides each line's output length")


class ShareGptDataset(_Strict):
    """ShareGPT JSON: a list of ``{"conversations": [{"from", "value"}, ...]}``; the first turn is the prompt and
    the second's length (estimated) the output length, as ``vllm bench serve --dataset-name sharegpt``."""

    kind: Literal["sharegpt"] = "sharegpt"
    path: str
    output_len: int | None = Field(None, ge=1, description="as --sharegpt-output-len")


Dataset = Annotated[RandomDataset | JsonlDataset | ShareGptDataset, Field(discriminator="kind")]

SLO_KEYS = ("ttft", "tpot", "e2el")


class BenchSpec(_Strict):
    base_url: str = Field(description="the server's base URL, with or without /v1")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    endpoint: Literal["chat", "completions"] = "completions"
    model: str | None = Field(None, description="None: the first id of GET /v1/models")
    dataset: Dataset = Field(default_factory=RandomDataset)
    num_prompts: int = Field(100, ge=1)
    max_concurrency: int | None = Field(None, ge=1)
    request_rate: float = Field(math.inf, gt=0)
    burstiness: float = Field(1.0, gt=0)
    sweep_rates: list[float] = Field(default_factory=list)
    warmups: int = Field(0, ge=0)
    seed: int = 0
    goodput: dict[str, float] = Field(default_factory=dict, description="SLOs in ms: ttft, tpot, e2el")
    percentiles: list[float] = Field(default_factory=lambda: [50.0, 90.0, 99.0])
    tokenizer: str | None = Field(None, description="a local tokenizer.json; None: token counts are estimated")
    label: str = ""
    runner: Literal["builtin", "vllm", "job"] = "builtin"
    timeout_s: float = Field(600.0, gt=0, description="per request")

    @field_serializer("request_rate")
    def _rate_out(self, value: float) -> float | str:
        return "inf" if math.isinf(value) else value  # JSON has no infinity; vLLM's files write "inf" too

    @field_serializer("sweep_rates")
    def _rates_out(self, value: list[float]) -> list[float | str]:
        return ["inf" if math.isinf(r) else r for r in value]

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("goodput")
    @classmethod
    def _slo_keys(cls, value: dict[str, float]) -> dict[str, float]:
        for key, ms in value.items():
            if key not in SLO_KEYS:
                raise ValueError(f"goodput key {key!r} is not one of {', '.join(SLO_KEYS)}")
            if not ms > 0:
                raise ValueError(f"goodput {key} must be a positive number of ms")
        return value

    @field_validator("percentiles")
    @classmethod
    def _percentiles(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < p <= 100 for p in value):
            raise ValueError("percentiles must be in (0, 100]")
        return value

    @field_validator("sweep_rates")
    @classmethod
    def _rates(cls, value: list[float]) -> list[float]:
        if any(not r > 0 for r in value):
            raise ValueError("sweep rates must be positive (inf allowed)")
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if value and not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("label may hold only letters, digits, '-', '_' and '.'")
        if len(value) > 64:
            raise ValueError("label is at most 64 characters")
        return value

    @model_validator(mode="after")
    def _key_is_a_name(self) -> BenchSpec:
        if self.api_key_env is not None and not self.api_key_env.replace("_", "").isalnum():
            raise ValueError("api_key_env is the NAME of an environment variable (letters, digits, '_'), not a key")
        return self

    @property
    def api_url(self) -> str:
        """The URL requests go to: ``{base}/v1/chat/completions`` or ``{base}/v1/completions``."""
        return f"{self.v1_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"

    @property
    def v1_url(self) -> str:
        return self.base_url if self.base_url.endswith("/v1") else f"{self.base_url}/v1"

    def api_key(self) -> str | None:
        """The key from ``api_key_env``; a named variable that is unset is an error (KeyError names it)."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise KeyError(f"environment variable {self.api_key_env} (api_key_env) is not set")
        return value

    def runs(self) -> list[BenchSpec]:
        """One spec per run: each sweep rate in turn, or this spec alone."""
        if not self.sweep_rates:
            return [self]
        return [self.model_copy(update={"request_rate": rate, "sweep_rates": []}) for rate in self.sweep_rates]
