"""The benchmark form's model: named presets from the console config, the form's fields as text, and the
``BenchSpec`` they make. Pure and Textual-free, so the same rules check a preset when the config loads and the
form when the operator presses Run.

A preset (per context, ``bench_presets`` in the console config) sets any of the form's fields; the rest keep the
form's defaults::

    bench_presets:
      smoke: {target: gateway, api_key_env: OPENAI_API_KEY, input_len: 128, output_len: 32, num_prompts: 20,
              concurrency: 4, slo: {ttft: 500}}
      sweep: {target: backend, sweep_rates: [1, 2, 4], num_prompts: 60}

The key's value is never in the form or the config: only the name of the environment variable holding it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.bench.spec import SLO_KEYS, BenchSpec, JsonlDataset, RandomDataset, ShareGptDataset

TARGETS = ("gateway", "backend", "url")
RUNNERS = ("builtin", "vllm", "job")
ENDPOINTS = ("completions", "chat")
DATASETS = ("random", "jsonl", "sharegpt")
DEFAULT_KEY_ENV = "OPENAI_API_KEY"  # what `vllm bench serve` and the openai SDK read too
DEFAULTS: dict[str, str] = {
    "preset": "", "target": "gateway", "base_url": "", "api_key_env": DEFAULT_KEY_ENV, "runner": "builtin",
    "endpoint": "completions", "model": "", "dataset": "random", "dataset_path": "", "input_len": "512",
    "output_len": "128", "num_prompts": "100", "concurrency": "8", "request_rate": "inf", "sweep_rates": "",
    "slo_ttft": "", "slo_tpot": "", "slo_e2el": "", "label": "",
}
LABELS: dict[str, str] = {  # how the form names its fields in errors
    "target": "Target", "base_url": "URL", "api_key_env": "Key env", "runner": "Runner", "endpoint": "Endpoint",
    "model": "Model", "dataset": "Dataset", "dataset_path": "Path", "input_len": "Input len",
    "output_len": "Output len", "num_prompts": "Prompts", "concurrency": "Concurrency", "request_rate": "Rate",
    "sweep_rates": "Sweep", "slo_ttft": "TTFT SLO", "slo_tpot": "TPOT SLO", "slo_e2el": "E2EL SLO", "label": "Label",
}
Positive = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]


class BenchPreset(BaseModel):
    """Any of the form's fields; what is not set keeps the form's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str | None = Field(None, description="gateway, backend, or an http(s):// base URL")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the client key")
    runner: Literal["builtin", "vllm", "job"] | None = None
    endpoint: Literal["completions", "chat"] | None = None
    model: str | None = None
    dataset: Literal["random", "jsonl", "sharegpt"] | None = None
    dataset_path: str | None = None
    input_len: Positive | None = None
    output_len: Positive | None = None
    num_prompts: Positive | None = None
    concurrency: Positive | None = None
    request_rate: PositiveFloat | None = None
    sweep_rates: list[PositiveFloat] | None = None
    slo: dict[Literal["ttft", "tpot", "e2el"], PositiveFloat] = {}
    label: str | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None and value not in ("gateway", "backend") and not value.startswith(("http://", "https://")):
            raise ValueError("target is gateway, backend or an http(s):// URL")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _key_name(cls, value: str | None) -> str | None:
        if value and not value.replace("_", "").isalnum():
            raise ValueError("api_key_env is the NAME of an environment variable, not a key")
        return value


@dataclass(frozen=True)
class BenchTargets:
    """The base URLs the target choice fills in: the gateway's (clients' side) and the backend's; None: unknown."""

    gateway: str | None
    backend: str | None

    def url(self, target: str) -> str:
        return {"gateway": self.gateway, "backend": self.backend}.get(target) or ""


class FormError(ValueError):
    """A field the form cannot turn into a spec; ``field`` is its id, the message names it as the form does."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{LABELS.get(field, field)}: {message}")
        self.field = field


def _text(value: float | int) -> str:
    return "inf" if isinstance(value, float) and math.isinf(value) else f"{value:g}"


def form_values(targets: BenchTargets, preset: BenchPreset | None = None, name: str = "") -> dict[str, str]:
    """The form's fields, as text: the defaults, then what the preset sets."""
    values = dict(DEFAULTS, preset=name, base_url=targets.url("gateway"))
    if preset is None:
        return values
    if preset.target in ("gateway", "backend"):
        values.update(target=preset.target, base_url=targets.url(preset.target))
        if preset.target == "backend":
            values["api_key_env"] = ""
    elif preset.target:
        values.update(target="url", base_url=preset.target)
    for field in ("api_key_env", "runner", "endpoint", "model", "dataset", "dataset_path", "label"):
        if (value := getattr(preset, field)) is not None:
            values[field] = value
    for field in ("input_len", "output_len", "num_prompts", "concurrency", "request_rate"):
        if (number := getattr(preset, field)) is not None:
            values[field] = _text(number)
    if preset.sweep_rates is not None:
        values["sweep_rates"] = ", ".join(_text(r) for r in preset.sweep_rates)
    for key, ms in preset.slo.items():
        values[f"slo_{key}"] = _text(ms)
    return values


def _int(values: Mapping[str, str], field: str, blank: int | None = None) -> int | None:
    text = values.get(field, "").strip()
    if not text:
        if blank is None:
            raise FormError(field, "required")
        return blank
    try:
        number = int(text)
    except ValueError:
        raise FormError(field, f"{text!r} is not a whole number") from None
    if number < 1:
        raise FormError(field, "must be at least 1")
    return number


def _float(field: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise FormError(field, f"{text!r} is not a number") from None
    if not number > 0:
        raise FormError(field, "must be above 0")
    return number


def _dataset(values: Mapping[str, str]) -> RandomDataset | JsonlDataset | ShareGptDataset:
    kind, path = values.get("dataset", "random"), values.get("dataset_path", "").strip()
    output_len = _int(values, "output_len")
    if kind == "random":
        return RandomDataset(input_len=_int(values, "input_len") or 1, output_len=output_len or 1)
    if not path:
        raise FormError("dataset_path", f"a {kind} dataset needs the path of its file")
    return JsonlDataset(path=path, output_len=output_len) if kind == "jsonl" else ShareGptDataset(
        path=path, output_len=output_len)


def spec_from_form(values: Mapping[str, str]) -> BenchSpec:
    """The spec the form's fields describe; FormError naming the first field that is wrong."""
    rate_text = values.get("request_rate", "").strip() or "inf"
    sweep = [_float("sweep_rates", part.strip()) for part in values.get("sweep_rates", "").split(",") if part.strip()]
    slo = {key: _float(f"slo_{key}", text) for key in SLO_KEYS if (text := values.get(f"slo_{key}", "").strip())}
    key_env = values.get("api_key_env", "").strip()
    if key_env and not key_env.replace("_", "").isalnum():
        raise FormError("api_key_env", "the NAME of an environment variable (letters, digits, '_'), not a key")
    fields: dict[str, Any] = {
        "base_url": values.get("base_url", "").strip(),
        "api_key_env": key_env or None,
        "endpoint": values.get("endpoint", "completions"),
        "model": values.get("model", "").strip() or None,
        "dataset": _dataset(values),
        "num_prompts": _int(values, "num_prompts"),
        "max_concurrency": _int(values, "concurrency", blank=0) or None,
        "request_rate": _float("request_rate", rate_text),
        "sweep_rates": sweep,
        "goodput": slo,
        "label": values.get("label", "").strip(),
        "runner": values.get("runner", "builtin"),
    }
    if not fields["base_url"]:
        raise FormError("base_url", "required (the server's base URL)")
    try:
        return BenchSpec(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = str(error["loc"][0]) if error["loc"] else "base_url"
        field = {"max_concurrency": "concurrency", "goodput": "slo_ttft"}.get(where, where)
        raise FormError(field, str(error["msg"]).removeprefix("Value error, ")) from None
