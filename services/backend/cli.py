"""Handlers for ``switchboard backend install|model|up|status`` (the parser lives in console/cli.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services.backend import install, launch, model, paths, settings, status
from services.backend.hardware import has_cuda_gpu

SMALL_HOST_CORES = 4  # at most this many cores: the engine's threads use all of them


def _say(message: str) -> None:
    print(message, flush=True)


def _gpu(args: argparse.Namespace) -> bool:
    device = getattr(args, "device", "auto")
    return has_cuda_gpu() if device == "auto" else device == "gpu"


def _engine_python(gpu: bool) -> Path | None:
    venv = install.installed_venv(gpu)
    if venv is None:
        _say(f"error: the {'GPU' if gpu else 'CPU'} engine is not installed; run `switchboard backend install`")
        return None
    return paths.engine_python(venv)


def cmd_install(args: argparse.Namespace) -> int:
    return install.install(gpu=_gpu(args), force=args.force, say=_say)


def cmd_model(args: argparse.Namespace) -> int:
    python = _engine_python(_gpu(args))
    if python is None:
        return 1
    try:
        model.ensure_model(python, say=_say, force=args.force)
    except model.ModelError as exc:
        _say(f"error: {exc}")
        return 1
    return 0


def resolve_model(name: str) -> tuple[str | None, str]:
    """(model argument for vLLM, or None with a reason). Empty: the converted SmolLM2."""
    if not name:
        folder = model.default_model_dir()
        if not folder.is_dir():
            return None, f"the SmolLM2 model is not converted yet ({folder}); run `switchboard backend model`"
        if not model.verify(folder):
            return None, f"the model at {folder} fails its checksums; run `switchboard backend model` to convert again"
        return str(folder), ""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), ""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return None, f"model folder {name} does not exist"
    return name, ""  # a Hugging Face id: vLLM fetches it (needs network access to the Hub)


def cmd_up(args: argparse.Namespace) -> int:
    gpu = _gpu(args)
    python = _engine_python(gpu)
    if python is None:
        return 1
    try:
        base = settings.load(Path(args.config) if args.config else None)
    except (OSError, ValueError) as exc:
        _say(f"error: {exc}")
        return 1
    chosen = base.replace(python=str(python), host=args.host, port=args.port, model=args.model,
                          served_model_name=args.served_model_name)  # fmt: skip
    model_arg, reason = resolve_model(chosen.model)
    if model_arg is None:
        _say(f"error: {reason}")
        return 1
    chosen = chosen.replace(model=model_arg)
    if not gpu and chosen.reserved_cpus is None and (os.cpu_count() or 1) <= SMALL_HOST_CORES:
        chosen = chosen.replace(reserved_cpus=0)  # measured: see settings.THREADS
    log_path = paths.logs_dir() / f"backend-{chosen.port}.log"
    return launch.run(chosen, gpu, log_path, say=_say, start_timeout_s=args.start_timeout)


def cmd_status(args: argparse.Namespace) -> int:
    result = status.fetch(args.url, timeout=args.timeout)
    _say(status.render(result))
    return result.exit_code


HANDLERS = {"install": cmd_install, "model": cmd_model, "up": cmd_up, "status": cmd_status}


def run(args: argparse.Namespace) -> int:
    return HANDLERS[args.backend_command](args)


if __name__ == "__main__":
    sys.exit("use `switchboard backend ...`")
