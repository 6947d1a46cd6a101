"""The engine's command line and environment (CPU and GPU), settings, port checks, model resolution."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.backend import settings
from services.backend.cli import resolve_model
from services.backend.launch import build_command, port_in_use
from services.backend.settings import BackendSettings

BASE = BackendSettings(python="/e/bin/python", model="/models/smollm2")


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def test_cpu_command_has_the_production_and_cpu_flags() -> None:
    argv, env = build_command(BASE, gpu=False)
    assert argv[:3] == ["/e/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag(argv, "--model") == "/models/smollm2"
    assert flag(argv, "--served-model-name") == "smollm2"
    assert flag(argv, "--host") == "127.0.0.1" and flag(argv, "--port") == "8000"
    assert flag(argv, "--max-model-len") == "2048"
    assert flag(argv, "--max-num-batched-tokens") == "2048" and flag(argv, "--max-num-seqs") == "32"
    assert "--enable-prefix-caching" in argv
    assert flag(argv, "--dtype") == "float32" and "--enforce-eager" in argv
    assert "--gpu-memory-utilization" not in argv and "--tensor-parallel-size" not in argv
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == BackendSettings().omp_threads_bind
    assert "OMP_NUM_THREADS" not in env and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"


def test_gpu_command_has_gpu_flags_and_no_cpu_ones() -> None:
    argv, env = build_command(BASE.replace(gpu_memory_utilization=0.8, tensor_parallel_size=2), gpu=True)
    assert flag(argv, "--gpu-memory-utilization") == "0.8" and flag(argv, "--tensor-parallel-size") == "2"
    assert flag(argv, "--max-num-batched-tokens") == "8192" and flag(argv, "--max-num-seqs") == "256"
    assert "--enable-prefix-caching" in argv
    assert "--dtype" not in argv and "--enforce-eager" not in argv
    assert not any(key.startswith("VLLM_CPU_") or key == "OMP_NUM_THREADS" for key in env)


def test_cpu_threads_kv_space_and_overrides() -> None:
    chosen = BASE.replace(
        omp_threads_bind="nobind", omp_num_threads=2, reserved_cpus=0, kv_cache_space_gib=4, max_num_seqs=8,
        max_num_batched_tokens=512, enable_prefix_caching=False, enforce_eager=False, dtype="bfloat16",
        served_model_name="tiny", port=9001, extra_args=("--seed", "7"),
    )  # fmt: skip
    argv, env = build_command(chosen, gpu=False)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" and env["OMP_NUM_THREADS"] == "2"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert flag(argv, "--max-num-seqs") == "8" and flag(argv, "--max-num-batched-tokens") == "512"
    assert "--enable-prefix-caching" not in argv and "--enforce-eager" not in argv
    assert flag(argv, "--dtype") == "bfloat16" and flag(argv, "--served-model-name") == "tiny"
    assert flag(argv, "--port") == "9001" and argv[-2:] == ["--seed", "7"]


def test_a_hub_id_leaves_the_hub_reachable() -> None:
    _, env = build_command(BASE.replace(model="HuggingFaceTB/SmolLM2-135M-Instruct"), gpu=False)
    assert "HF_HUB_OFFLINE" not in env


def test_build_command_is_pure() -> None:
    assert build_command(BASE, gpu=False) == build_command(BASE, gpu=False)


def test_replace_ignores_none() -> None:
    assert BASE.replace(port=None, host=None) == BASE


def test_settings_from_yaml_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("backend:\n  model: /m\n  port: 8200\n  omp_threads_bind: nobind\n  extra_args: [--seed, 1]\n")
    loaded = settings.load(path)
    assert (loaded.model, loaded.port, loaded.omp_threads_bind, loaded.extra_args) == (
        "/m", 8200, "nobind", ("--seed", "1"),
    )  # fmt: skip
    path.write_text("backend:\n  gpu_memory: 0.5\n")
    with pytest.raises(ValueError, match="unknown backend settings: gpu_memory"):
        settings.load(path)
    assert settings.load(None) == BackendSettings()


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_resolve_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model_arg, reason = resolve_model("")
    assert model_arg is None and "switchboard backend model" in reason
    assert resolve_model(str(tmp_path)) == (str(tmp_path.resolve()), "")
    missing, reason = resolve_model(str(tmp_path / "nope"))
    assert missing is None and "does not exist" in reason
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", "")


def test_the_console_cli_wires_the_backend_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from console.cli import build_parser, main

    args = build_parser().parse_args(["backend", "up", "--port", "9100", "--model", "/m", "--device", "cpu"])
    assert (args.backend_command, args.port, args.model, args.device, args.host) == ("up", 9100, "/m", "cpu", None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["backend", "status", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 2
    assert "UNREACHABLE" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["backend"])  # a subcommand is required
