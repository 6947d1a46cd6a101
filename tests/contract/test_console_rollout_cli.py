"""`switchboard rollout promote|abort|retry|undo` as subprocesses: the context's cluster (kubeconfig, kube_context),
the exact patches `kubectl argo rollouts` sends, printed; the audit entry at the context's gateway; exit codes
0 sent, 1 refused or nothing to do, 2 bad usage or unreachable."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.contract.conftest import NAMESPACE, Cluster
from tests.contract.test_kubesim_rollouts import Sim, rollout, start_sim
from tests.gateway_harness import VIEWER_TOKEN, auth, fast_settings, free_port, openai_target

pytestmark = pytest.mark.kubesim_only(reason="steps kubesim's controllers by hand to pause the rollout at a step")
SWITCHBOARD = Path(sys.executable).parent / "switchboard"
ROOT = Path(__file__).resolve().parents[2]
STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
PROMOTE = f'PATCH {NAMESPACE}/rollouts/web/status (merge): {{"status": {{"pauseConditions": null}}}}'


@pytest.fixture
def paused(kube: Callable[..., Cluster]) -> Sim:
    """Revision 2 of rollout ``web`` paused at step 1/4 (setWeight 20 done)."""
    sim = start_sim(kube)
    sim.create("rollouts", rollout(replicas=5, steps=STEPS))
    sim.settle()
    sim.set_image("registry.local/app:2")
    sim.settle()
    assert (sim.status()["phase"], sim.status()["currentStepIndex"]) == ("Paused", 1)
    return sim


@pytest.fixture
def gw(gateway: Callable[[dict[str, Any]], Any]) -> Any:
    return gateway({**fast_settings(), "targets": {"a": openai_target("http://127.0.0.1:9", "m")},
                    "pools": {"p": {"targets": {"a": 100}}}, "routes": {"r": {"pool": "p"}}})


@pytest.fixture
def config(tmp_path: Path, paused: Sim, gw: Any) -> Path:
    cluster = {"kubeconfig": str(paused.cluster.kubeconfig), "namespace": NAMESPACE}
    operator = {"admin_url": gw.url, "token_env": "SWITCHBOARD_TEST_OPERATOR_TOKEN"}
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump({"current": "kube", "operator": "runbook@bastion", "contexts": {
        "kube": {**operator, **cluster, "kube_context": "kubesim"},
        "kube-viewer": {**operator, **cluster, "kube_context": "kubesim-viewer"},
        "kube-readonly": {**operator, **cluster, "kube_context": "kubesim", "readonly": True},
        "no-gateway": {**operator, **cluster, "kube_context": "kubesim",
                       "admin_url": f"http://127.0.0.1:{free_port()}"},
        "no-cluster": operator,
    }}))
    return path


def switchboard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SWITCHBOARD), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def rollout_verb(config: Path, *args: str, context: str = "kube") -> subprocess.CompletedProcess[str]:
    return switchboard("rollout", *args, "--config", str(config), "--context", context)


def kube_audit(gw: Any) -> list[dict[str, Any]]:
    entries = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]
    return [e for e in entries if e["kind"] == "kubernetes"]


def test_promote_prints_the_patch_it_sent_and_records_it_at_the_gateway(config: Path, paused: Sim, gw: Any) -> None:
    done = rollout_verb(config, "promote", "web", "--reason", "canary is fine")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["kubesim/contract/rollouts/web: promote: clear the pause", f"sent {PROMOTE}"]
    assert not paused.status().get("pauseConditions")
    [entry] = kube_audit(gw)
    assert (entry["action"], entry["target"], entry["reason"], entry["operator"]) == (
        "rollout.promote", "kubesim/contract/rollouts/web", "canary is fine", "runbook@bastion")
    assert entry["after"] == {"detail": [PROMOTE], "outcome": "ok"}


def test_promote_full_sets_promote_full(config: Path, paused: Sim, gw: Any) -> None:
    done = rollout_verb(config, "promote", "--full", "web", "--reason", "skip the rest")
    assert done.returncode == 0, done.stderr
    assert f'sent PATCH {NAMESPACE}/rollouts/web/status (merge): {{"status": {{"promoteFull": true}}}}' in done.stdout
    assert paused.status()["promoteFull"] is True
    assert [e["action"] for e in kube_audit(gw)] == ["rollout.promote-full"]


def test_abort_refuses_promote_until_retried(config: Path, paused: Sim, gw: Any) -> None:
    done = rollout_verb(config, "abort", "web", "--reason", "errors up")
    assert done.returncode == 0, done.stderr
    assert f'sent PATCH {NAMESPACE}/rollouts/web/status (merge): {{"status": {{"abort": true}}}}' in done.stdout
    refused = rollout_verb(config, "promote", "web", "--reason", "anyway")
    assert refused.returncode == 1 and "cannot promote rollout web: aborted: retry it first; nothing sent" in \
        refused.stderr
    early = rollout_verb(config, "retry", "web", "--reason", "too soon")
    assert early.returncode == 1 and "only when Degraded (it is Paused)" in early.stderr
    paused.tick(times=3)
    assert paused.status()["phase"] == "Degraded"
    retried = rollout_verb(config, "retry", "web", "--reason", "config fixed")
    assert retried.returncode == 0, retried.stderr
    assert paused.status()["abort"] is False
    assert [(e["action"], e["after"]["outcome"]) for e in reversed(kube_audit(gw))] == [
        ("rollout.abort", "ok"), ("rollout.retry", "ok")]


def test_undo_sends_a_json_patch_of_the_previous_template(config: Path, paused: Sim, gw: Any) -> None:
    missing = rollout_verb(config, "undo", "web", "--to-revision", "7", "--reason", "r")
    assert missing.returncode == 1 and "unable to find specified revision 7 in history; nothing sent" in missing.stderr
    done = rollout_verb(config, "undo", "web", "--reason", "back to v1")
    assert done.returncode == 0, done.stderr
    summary, sent = done.stdout.splitlines()
    assert summary == "kubesim/contract/rollouts/web: undo to revision 1"
    assert sent.startswith(f'sent PATCH {NAMESPACE}/rollouts/web (json-patch): [{{"op": "replace", "path": '
                           f'"/spec/template"')
    assert paused.rollout()["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/app:1"
    again = rollout_verb(config, "undo", "web", "--to-revision", "1", "--reason", "r")
    assert again.returncode == 1 and "skipped rollback (current template already matches revision 1)" in again.stderr


def test_a_403_from_the_cluster_changes_nothing_and_is_audited_as_refused(config: Path, paused: Sim, gw: Any) -> None:
    done = rollout_verb(config, "promote", "web", "--reason", "as a viewer", context="kube-viewer")
    assert done.returncode == 1
    assert "switchboard: refused: HTTP 403" in done.stderr and "nothing changed" in done.stderr
    assert paused.status()["pauseConditions"]
    [entry] = kube_audit(gw)
    assert entry["after"]["outcome"] == "refused" and entry["after"]["detail"][0] == PROMOTE


def test_read_only_context_no_cluster_and_no_reason_send_nothing(config: Path, paused: Sim, gw: Any) -> None:
    readonly = rollout_verb(config, "promote", "web", "--reason", "r", context="kube-readonly")
    assert readonly.returncode == 1 and "read-only" in readonly.stderr
    no_cluster = rollout_verb(config, "promote", "web", "--reason", "r", context="no-cluster")
    assert no_cluster.returncode == 2 and "names no cluster" in no_cluster.stderr
    no_reason = rollout_verb(config, "promote", "web")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    unknown = rollout_verb(config, "abort", "nope", "--reason", "r")
    assert unknown.returncode == 1 and "no such rollout" in unknown.stderr
    assert paused.status()["pauseConditions"] and not kube_audit(gw)


def test_an_unreachable_gateway_still_sends_the_patch_with_a_warning(config: Path, paused: Sim) -> None:
    done = rollout_verb(config, "promote", "web", "--reason", "gateway down", context="no-gateway")
    assert done.returncode == 0, done.stderr
    assert f"sent {PROMOTE}" in done.stdout
    assert "warning: the patch was sent, but it is not written to the gateway's audit log" in done.stderr
    assert not paused.status().get("pauseConditions")
