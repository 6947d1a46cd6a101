"""Backend settings: defaults, the ``backend:`` section of a YAML file, and command-line overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class BackendSettings:
    """What ``backend up`` runs. ``None`` in a per-device field means "this device's default"."""

    python: str = "python"  # the engine virtualenv's interpreter
    model: str = ""  # a local folder or a Hugging Face id; empty: the converted SmolLM2
    served_model_name: str = "smollm2"
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 2048
    enable_prefix_caching: bool = True
    max_num_batched_tokens: int | None = None  # CPU 2048, GPU 8192 (the seed's production value)
    max_num_seqs: int | None = None  # CPU 32, GPU 256
    # GPU only
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    # CPU only. float32 because this CPU has no native bf16 (bf16 measured slower here);
    # eager mode starts in ~40 s instead of compiling for ~3.5 min.
    dtype: str = "float32"
    enforce_eager: bool = True
    kv_cache_space_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE; SmolLM2 needs ~46 KiB per token in fp32
    omp_threads_bind: str = "auto"  # VLLM_CPU_OMP_THREADS_BIND: auto, nobind, or a core list "0-1"
    omp_num_threads: int | None = None  # OMP_NUM_THREADS; applies with omp_threads_bind="nobind"
    extra_args: tuple[str, ...] = ()  # appended verbatim to the engine's command line

    def replace(self, **changes: Any) -> BackendSettings:
        """A copy with the given fields changed; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


FIELDS = {f.name for f in dataclasses.fields(BackendSettings)}


def from_mapping(data: Mapping[str, Any], base: BackendSettings | None = None) -> BackendSettings:
    unknown = set(data) - FIELDS
    if unknown:
        raise ValueError(f"unknown backend settings: {', '.join(sorted(unknown))} (known: {', '.join(sorted(FIELDS))})")
    values = dict(data)
    if "extra_args" in values:
        values["extra_args"] = tuple(str(a) for a in values["extra_args"])
    return dataclasses.replace(base or BackendSettings(), **values)


def load(path: Path | None) -> BackendSettings:
    """Settings from the ``backend:`` section of a YAML file (or defaults when no file is named)."""
    if path is None:
        return BackendSettings()
    document = yaml.safe_load(path.read_text()) or {}
    section = document.get("backend", {}) if isinstance(document, dict) else {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: 'backend' must be a mapping")
    return from_mapping(section)
