"""What the benchmarks read about a process and the machine from /proc: CPU time, RSS, the CPU model."""

from __future__ import annotations

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
