"""``switchboard up --sim-cluster``: kubesim joins the stack after the gateway, its kubeconfig lands in the state
directory (0600) and in the stack's record, the console runs with ``$KUBECONFIG`` on it, and it stops with the
stack. The stack runs with ``--no-backend`` and a gateway whose targets are unreachable; the console is a stand-in
that does what a console on the embedded local context would do: read the record and reach the cluster."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from console.stack import run_stack
from console.statedir import read_stack_record
from tests.console.harness import NO_UPSTREAM
from tests.gateway_harness import free_port, openai_target

TOKEN_VARIABLES = ("SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_VIEWER_TOKEN")
WITHIN_S = 60.0  # a loaded 2-core machine ticks slowly; the wait ends as soon as the pod is there


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the gateway config, the state directory) in private XDG homes, no admin tokens in the environment."""
    for kind in ("state", "data", "config"):
        (tmp_path / kind).mkdir()
        monkeypatch.setenv(f"XDG_{kind.upper()}_HOME", str(tmp_path / kind))
    for name in TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": free_port(), "grace_period_s": 1, "log_level": "warning"},
        "admin": {"tokens": [{"name": "operator", "role": "operator", "token_env": TOKEN_VARIABLES[0]},
                             {"name": "viewer", "role": "viewer", "token_env": TOKEN_VARIABLES[1]}]},
        "targets": {"a": openai_target(NO_UPSTREAM, "model-a")},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"r": {"pool": "p"}},
    }, sort_keys=False))
    return config_path, tmp_path / "state" / "switchboard"


def test_up_with_a_sim_cluster_records_its_kubeconfig_and_stops_it(stack: tuple[Path, Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    gateway_config, state = stack
    seen: dict[str, Any] = {}

    def console() -> int:
        kubeconfig = os.environ["KUBECONFIG"]
        record = read_stack_record()
        assert record is not None and record.kubeconfig == kubeconfig == str(state / "kubesim.kubeconfig")
        assert stat.S_IMODE(Path(kubeconfig).stat().st_mode) == 0o600  # it holds bearer tokens
        # The file $KUBECONFIG names, read now: the client library takes its default path from $KUBECONFIG when
        # it is first imported, which in this process was before the stack set it.
        core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        deadline = time.monotonic() + WITHIN_S
        while not [p for p in core.list_namespaced_pod("ai-prod").items if p.metadata.name == "vllm-server-0"]:
            assert time.monotonic() < deadline, "the seed's vllm-server-0 never appeared"
            time.sleep(0.2)
        seen["server"] = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
        seen["gateway_fed"] = "not fed" not in (state / "kubesim.log").read_text()
        return 0

    assert run_stack(str(gateway_config), console, start_backend=False, sim_cluster="seed") == 0
    out = capsys.readouterr().out
    assert f"kubeconfig: {state / 'kubesim.kubeconfig'} (mode 0600" in out and "SIMULATED" in out
    assert seen["gateway_fed"], "kubesim was started without the gateway's URL"
    assert "KUBECONFIG" not in os.environ, "the console's environment is restored"
    with pytest.raises(httpx.TransportError):
        httpx.get(seen["server"] + "/healthz", verify=False, timeout=2)
    assert read_stack_record(state) is None


def test_a_bad_sim_cluster_scenario_stops_the_stack_with_its_error(stack: tuple[Path, Path], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    gateway_config, _ = stack
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("name: bad\nclusterr: {}\n")
    console: Callable[[], int] = lambda: pytest.fail("the console must not start")  # noqa: E731
    assert run_stack(str(gateway_config), console, start_backend=False, sim_cluster=str(scenario)) == 1
    err = capsys.readouterr().err
    assert "kubesim exited with 2" in err and f"{scenario}: the top level: unknown key 'clusterr'" in err
    url = yaml.safe_load(gateway_config.read_text())["server"]["port"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{url}/health", timeout=2)
