"""Where the backend keeps its engine virtualenv, converted model and logs."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/switchboard/backend`` (``~/.cache/switchboard/backend`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard" / "backend"


def requirements_key(lines: Iterable[str]) -> str:
    """A short hash of the pinned requirement lines: a change of pins gives a new engine folder."""
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return digest[:12]


def engine_dir(flavor: str, lines: Iterable[str]) -> Path:
    """The engine's virtualenv folder, e.g. ``.../backend/engine-cpu-3f2a9c01b7de``."""
    return cache_root() / f"engine-{flavor}-{requirements_key(lines)}"


def engine_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def models_dir() -> Path:
    return cache_root() / "models"


def logs_dir() -> Path:
    return cache_root() / "logs"


@contextmanager
def locked(name: str) -> Iterator[None]:
    """Holds an exclusive lock file under the cache root: two installs or conversions never interleave."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
