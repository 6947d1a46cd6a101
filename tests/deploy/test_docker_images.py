"""The Dockerfiles in docker/: hadolint clean, pinned bases, non-root, a health check, and the images doing what
the compose stack and the backend code expect of them. No Docker engine runs on these machines, so nothing here
builds an image; what can be checked without one is."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from services.backend import install
from tests.deploy.dockerfile import Stage, stages
from tests.deploy.tools import DOCKER, ROOT, run_tool

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu", "Dockerfile.cpu-backend")
# Built with the repository root as the context (Dockerfile.gpu copies nothing and builds from docker/).
ROOT_CONTEXT = ("Dockerfile", "Dockerfile.cpu-backend")
PINNED_TAG = re.compile(r"^[a-z0-9./-]+:(?!latest$)v?\d+(\.\d+)+[\w.-]*(@sha256:[0-9a-f]{64})?$")


def dockerfile(name: str) -> Path:
    return DOCKER / name


def final(name: str) -> Stage:
    return stages(dockerfile(name))[-1]


def exec_words(stage: Stage, keyword: str) -> list[str]:
    found = stage.all(keyword)
    assert found, f"the final stage has no {keyword}"
    return found[-1].words()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name: str) -> None:
    # Threshold "style": any finding at all, down to style, fails.
    result = run_tool("hadolint", "--no-color", "--failure-threshold", "style", str(dockerfile(name)))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_reports_what_it_is_run_for() -> None:
    """The lint above would pass vacuously if hadolint read nothing: an unpinned, root-run image must fail."""
    bad = "FROM python:latest\nRUN pip install requests\nUSER root\nCMD python app.py\n"
    result = run_tool("hadolint", "--no-color", "--failure-threshold", "style", "-", stdin=bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002", "DL3025"):  # latest tag, unpinned pip, root user, shell-form CMD
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_base_image_is_pinned(name: str) -> None:
    for stage in stages(dockerfile(name)):
        assert PINNED_TAG.match(stage.base), f"{name}: FROM {stage.base} is not a pinned version tag"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_as_a_non_root_user_with_a_health_check(name: str) -> None:
    last = final(name)
    user = exec_words(last, "USER")[0]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: runs as {user}; a numeric non-zero uid is expected"
    check = last.all("HEALTHCHECK")
    assert len(check) == 1 and " CMD " in f" {check[0].rest} ", f"{name}: one HEALTHCHECK with a command is expected"
    assert "/health" in check[0].rest or "SWITCHBOARD_HEALTHCHECK_URL" in check[0].rest  # the latter: tested below


@pytest.mark.parametrize("name", ROOT_CONTEXT)
def test_multi_stage_images_ship_only_what_the_build_stage_made(name: str) -> None:
    built = stages(dockerfile(name))
    assert len(built) >= 2, f"{name}: a build stage and a runtime stage are expected"
    assert len({stage.base for stage in built}) == 1, (
        f"{name}: the virtualenvs are copied between stages at the same paths, so every stage needs the same base")
    runtime_copies = final(name).all("COPY")
    assert runtime_copies and all(c.rest.startswith("--from=build ") for c in runtime_copies), (
        f"{name}: the runtime stage copies from the build stage only (no sources, no build tools)")


@pytest.mark.parametrize("name", ROOT_CONTEXT)
def test_copied_sources_exist_and_pass_the_dockerignore(name: str) -> None:
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    kept = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore, f"{name}.dockerignore should exclude everything by default (the context is the repo root)"
    for stage in stages(dockerfile(name)):
        for copy in stage.all("COPY"):
            words = copy.words()
            if any(word.startswith("--from=") for word in words):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path in the repository"
                assert source in kept, f"{name}: COPY {source} is excluded by {name}.dockerignore"


def test_the_main_image_runs_the_switchboard_command_on_the_composed_config() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("switchboard") == "console.cli:main"
    last = final("Dockerfile")
    assert exec_words(last, "ENTRYPOINT") == ["switchboard"]
    command = exec_words(last, "CMD")
    assert command[:2] == ["gateway", "--config"]
    compose = yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())
    mounts = compose["services"]["gateway"]["volumes"]
    assert f"./gateway.yaml:{command[2]}:ro" in mounts, "the image's default config path is where compose mounts it"


def test_the_main_image_health_check_asks_the_gateway_port_of_the_composed_config() -> None:
    env = " ".join(i.rest for i in final("Dockerfile").all("ENV"))
    url = re.search(r"SWITCHBOARD_HEALTHCHECK_URL=(\S+)", env)
    assert url, "the health check URL is an environment variable a worker container can point elsewhere"
    port = yaml.safe_load((DOCKER / "gateway.yaml").read_text())["server"]["port"]
    assert url.group(1) == f"http://127.0.0.1:{port}/health"
    assert "SWITCHBOARD_HEALTHCHECK_URL" in final("Dockerfile").all("HEALTHCHECK")[0].rest


def test_the_gpu_image_is_the_vllm_release_the_backend_installs() -> None:
    version = install.GPU_VLLM.removeprefix("vllm==")
    assert stages(dockerfile("Dockerfile.gpu"))[0].base == f"vllm/vllm-openai:v{version}"


def test_the_cpu_backend_is_prepared_by_the_backend_commands_not_a_copy_of_them() -> None:
    built = stages(dockerfile("Dockerfile.cpu-backend"))
    runs = " ".join(run.rest for stage in built for run in stage.all("RUN"))
    assert "switchboard backend install --device cpu" in runs
    assert "switchboard backend model --device cpu" in runs
    # The pins and the conversion live in services/backend only: no instruction may repeat them.
    every = " ".join(i.rest for stage in built for i in stage.instructions)
    for pinned in (install.CPU_TORCH, install.CPU_VLLM, install.SMOLLM2, *install.CONVERSION, "convert_gguf"):
        assert pinned not in every, f"{pinned} is duplicated from services/backend/install.py"
    entry = exec_words(final("Dockerfile.cpu-backend"), "ENTRYPOINT") + exec_words(final("Dockerfile.cpu-backend"),
                                                                                   "CMD")
    assert entry[:4] == ["switchboard", "backend", "up", "--device"] and "0.0.0.0" in entry


def test_the_cpu_backend_finds_its_engine_and_model_at_run_time_where_the_build_put_them() -> None:
    """``backend up`` looks for the engine and the model under $XDG_CACHE_HOME: both stages must agree on it."""
    cache_homes = []
    for stage in stages(dockerfile("Dockerfile.cpu-backend")):
        env = " ".join(i.rest for i in stage.all("ENV"))
        found = re.search(r"XDG_CACHE_HOME=(\S+)", env)
        assert found, f"stage {stage.name}: XDG_CACHE_HOME is not set"
        cache_homes.append(found.group(1))
    assert len(set(cache_homes)) == 1
    copied = [c.words()[-1] for c in final("Dockerfile.cpu-backend").all("COPY")]
    assert cache_homes[0] in copied


def test_the_sources_the_images_copy_build_the_distribution_with_what_the_commands_read(tmp_path: Path) -> None:
    """What the build stage runs, without Docker: the paths its COPY lines take (as the .dockerignore admits them)
    build the wheel `pip install .` installs, with the entry point and the files the commands open at run time."""
    context = tmp_path / "context"
    for copy in stages(dockerfile("Dockerfile"))[0].all("COPY"):
        *sources, _ = copy.words()
        for source in sources:
            origin, target = ROOT / source, context / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    wheels = tmp_path / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
                             str(context)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("switchboard-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "switchboard = console.cli:main" in entry_points
    for needed in ("services/gateway/examples/gateway.example.yaml",  # the gateway's default config
                   "services/backend/convert_gguf.py",  # `switchboard backend model` in Dockerfile.cpu-backend
                   "services/worker/keda-scaledobject.yaml"):
        assert needed in names, f"{needed} is not in the wheel the image installs"
    assert any(name.startswith("services/kubesim/crds/") for name in names)
