"""`switchboard status|weights|drain|undrain|audit` as a runbook would call them, against a real gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.gateway_harness import VIEWER_TOKEN, auth, fast_settings, free_port, openai_target
from tests.standins import Fault


@pytest.fixture
def setup(standin, gateway, tmp_path: Path):
    a, b = standin(name="a"), standin(name="b")
    gw = gateway({
        **fast_settings(),
        "targets": {"a": openai_target(a.url), "b": openai_target(b.url)},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    })
    config = tmp_path / "console.yaml"
    config.write_text(yaml.safe_dump({
        "current": "test",
        "operator": "runbook@bastion",
        "contexts": {
            "test": {"admin_url": gw.url, "token_env": "SWITCHBOARD_TEST_OPERATOR_TOKEN"},
            "viewonly": {"admin_url": gw.url, "token_env": "SWITCHBOARD_TEST_OPERATOR_TOKEN", "readonly": True},
            "gone": {"admin_url": f"http://127.0.0.1:{free_port()}", "token_env": "SWITCHBOARD_TEST_VIEWER_TOKEN"},
        },
    }))
    return gw, a, config


def switchboard(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "switchboard"
    assert executable.exists(), "the switchboard console script is missing: run `make test` (pip install -e .)"
    return subprocess.run([str(executable), *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60, env=os.environ.copy())


def test_status_exit_codes(setup) -> None:
    gw, a, config = setup
    healthy = switchboard(config, "status")
    assert healthy.returncode == 0, healthy.stderr
    assert "gateway ready" in healthy.stdout and "a " in healthy.stdout
    a.push(Fault.status(429, retry_after=30))
    for _ in range(50):  # the split is 50/50: send until a has taken its 429
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "r", "messages": [{"role": "user", "content": "x"}]})
        if a.requests:
            break
    degraded = switchboard(config, "status")
    assert degraded.returncode == 1 and "cooling_down" in degraded.stdout
    unreachable = switchboard(config, "status", "--context", "gone")
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stdout


def test_weights_set_is_audited_with_operator_and_reason(setup) -> None:
    gw, _, config = setup
    result = switchboard(config, "weights", "set", "split", "a=70", "b=30", "--reason", "runbook step 3")
    assert result.returncode == 0, result.stderr
    assert "pool split: a 50 -> 70, b 50 -> 30 (now state v1)" in result.stdout
    shown = switchboard(config, "weights", "show")
    assert "a" in shown.stdout and " 70" in shown.stdout
    entry = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"][0]
    assert (entry["operator"], entry["reason"], entry["after"]) == ("runbook@bastion", "runbook step 3",
                                                                   {"a": 70, "b": 30})
    audit = switchboard(config, "audit")
    assert "runbook@bastion" in audit.stdout and "runbook step 3" in audit.stdout


def test_drain_and_undrain(setup) -> None:
    gw, _, config = setup
    assert switchboard(config, "drain", "b", "--reason", "maintenance").returncode == 0
    assert "DRAINED" in switchboard(config, "weights", "show").stdout
    assert switchboard(config, "undrain", "b", "--reason", "done").returncode == 0
    actions = [e["action"] for e in httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]]
    assert actions == ["undrain", "drain"]


def test_bad_input_and_read_only_change_nothing(setup) -> None:
    gw, _, config = setup
    bad = switchboard(config, "weights", "set", "split", "a=lots", "--reason", "x")
    assert bad.returncode == 2 and "TARGET=WEIGHT" in bad.stderr
    refused = switchboard(config, "weights", "set", "split", "a=0", "b=0", "--reason", "x")
    assert refused.returncode == 1 and "at least one target weight must be above 0" in refused.stderr
    unknown = switchboard(config, "drain", "ghost", "--reason", "x")
    assert unknown.returncode == 1 and "unknown target 'ghost'" in unknown.stderr
    readonly = switchboard(config, "weights", "set", "split", "a=10", "--reason", "x", "--context", "viewonly")
    assert readonly.returncode == 1 and "read-only" in readonly.stderr
    assert httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"] == []
