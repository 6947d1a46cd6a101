"""An Argo rollout promoted from the console in a real terminal: kubesim (controllers ticked by the test), a gateway
process, the console under tmux: the row, the confirm dialog's exact patch, pending, then the next step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.harness import NO_UPSTREAM, Tmux, console_argv, write_console_config
from tests.console.test_rollout_actions import Cluster
from tests.gateway_harness import VIEWER_TOKEN, GatewayProcess, auth, fast_settings, openai_target


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess({**fast_settings(), "targets": {"a": openai_target(NO_UPSTREAM, "model-a")},
                              "pools": {"p": {"targets": {"a": 100}}}, "routes": {"r": {"pool": "p"}}},
                             str(tmp_path)).start()
    yield process
    process.stop()


@pytest.fixture
def paused_cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    made.paused_at_step_one()
    yield made
    made.stop()


def test_promote_a_rollout_in_a_real_terminal(tmux: Tmux, gateway_process: GatewayProcess, paused_cluster: Cluster,
                                              tmp_path: Path) -> None:
    config = write_console_config(tmp_path / "console.yaml", "kube", "e2e@tmux", admin_url=gateway_process.url,
                                  token_env="SWITCHBOARD_TEST_OPERATOR_TOKEN", engine_url=None, poll_interval_s=0.3,
                                  kubeconfig=str(paused_cluster.kubeconfig), kube_context="kubesim")
    tmux.start(console_argv(config, "kube"))
    tmux.keys("6")
    tmux.wait_for(lambda s: "web" in s and "॥ Paused" in s and "1/4" in s, "rollout web Paused at 1/4", within_s=30)
    tmux.wait_for(lambda s: "O Promote" in s, "the rollout's promote key offered (access reviewed)", within_s=20)
    tmux.keys("O")
    tmux.wait_for(lambda s: "kubesim/shop/rollouts/web: promote: clear the pause" in s
                  and "pauseConditions" in s, "the confirm dialog with the patch")
    tmux.keys("Tab", settle_s=0.2)
    tmux.keys("tmux promote", literal=True)
    tmux.wait_for(lambda s: "tmux promote" in s, "the typed reason")
    tmux.keys("Enter", settle_s=0.2)
    tmux.keys("Enter")
    tmux.wait_for(lambda s: "pending" in s, "the row pending until the controller observes it", within_s=20)
    paused_cluster.tick(times=8)
    tmux.wait_for(lambda s: "3/4" in s and "pending" not in s, "the rollout at step 3/4", within_s=20)
    entries = httpx.get(gateway_process.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]
    [entry] = [e for e in entries if e["kind"] == "kubernetes"]
    assert (entry["action"], entry["operator"], entry["reason"]) == ("rollout.promote", "e2e@tmux", "tmux promote")
    tmux.keys("q")
