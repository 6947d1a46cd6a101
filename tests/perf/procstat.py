"""What the benchmarks share: what they read about a process and the machine from /proc (CPU time, RSS, the CPU
model), and how they print ratios and save their results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` (fields 14 and 15 of stat(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> dict[str, float]:
    """The share of one core ``pid`` used over the next ``seconds``."""
    first, began = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu_seconds(pid) - first, time.monotonic() - began
    return {"cpu_s": round(used, 3), "wall_s": round(wall, 3), "share_of_one_core": round(used / wall, 4)}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def machine_info() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "loadavg_at_start": list(os.getloadavg())}


def ratio(a: float, b: float) -> str:
    """``a`` against ``b`` as the reports print it: ``3.3x``, or ``-`` when ``b`` is zero."""
    return f"{a / b:.1f}x" if b else "-"


def save_result(results_dir: Path, benchmark: str, result: dict[str, Any]) -> Path:
    """Writes ``<benchmark>-<utc>.json`` and ``<benchmark>-latest.json``; prints and returns the first."""
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    stamped = results_dir / f"{benchmark}-{result['utc']}.json"
    for path in (stamped, results_dir / f"{benchmark}-latest.json"):
        path.write_text(text)
    print(f"\nwritten: {stamped}")
    return stamped
