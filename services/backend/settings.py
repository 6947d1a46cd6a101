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
    # Threads (see THREADS below): VLLM_CPU_OMP_THREADS_BIND (auto, nobind, or a core list "0-1"),
    # VLLM_CPU_NUM_OF_RESERVED_CPU (None: vLLM's own choice, 1 core on x86; `backend up` makes it 0
    # on hosts with 4 cores or fewer), OMP_NUM_THREADS (only matters with nobind).
    omp_threads_bind: str = "auto"
    reserved_cpus: int | None = None
    omp_num_threads: int | None = None
    extra_args: tuple[str, ...] = ()  # appended verbatim to the engine's command line

    def replace(self, **changes: Any) -> BackendSettings:
        """A copy with the given fields changed; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


THREADS = """Thread settings measured on a 2-core x86 host (AVX2, no AVX-512), vllm-cpu 0.32.0, SmolLM2-135M
in float32, --enforce-eager: 24 chat requests (~270 prompt tokens sharing a system prompt, 32 output
tokens each) at concurrency 8, then 4 one at a time. Output tokens/s of two quiet runs, each setting
on a freshly started engine, the settings interleaved:

  setting                                                   c=8           c=1
  auto (vLLM's default: 1 OMP thread on core 0, core 1      51.0, 47.2    12.6, 12.2
        reserved for the API server and scheduler)
  auto + VLLM_CPU_NUM_OF_RESERVED_CPU=0 (binds cores 0-1)   73.4, 80.2    19.6, 18.8
  VLLM_CPU_OMP_THREADS_BIND=0-1 (the same binding)          76.9, 70.9    16.8, 19.1
  nobind, OMP_NUM_THREADS=2                                 56.2, 67.3    13.1, 13.8
  nobind, OMP_NUM_THREADS=1                                 54.0, 54.9    13.9, 14.6

Two threads bound to both cores win by about 50 percent: the API server and the engine-core
scheduler are mostly idle while the worker computes, so a core reserved for them wastes half the
machine. Unbound threads lose part of the gain to migrations. In an earlier round run while another
engineer's gateway benchmark loaded the host, every setting fell to 47-62 tok/s and the two-thread
binding lost its lead (47-51 vs 53 for auto), so it costs little there. Hence: auto binding with no
reserved core on hosts with 4 cores or fewer; vLLM's default (reserve one) on larger hosts.
"""

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
