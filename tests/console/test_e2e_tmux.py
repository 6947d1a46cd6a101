"""End to end in a real terminal: a gateway process, the console under tmux, keys sent with send-keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.harness import NO_UPSTREAM, Tmux, console_argv, write_console_config
from tests.gateway_harness import VIEWER_TOKEN, GatewayProcess, auth, fast_settings, openai_target


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[GatewayProcess]:
    config = {
        **fast_settings(),
        "targets": {"a": openai_target(NO_UPSTREAM, "model-a"), "b": openai_target(NO_UPSTREAM, "model-b")},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    }
    process = GatewayProcess(config, str(tmp_path)).start()
    yield process
    process.stop()


def test_shift_weights_in_a_real_terminal(tmux: Tmux, gateway_process: GatewayProcess, tmp_path: Path) -> None:
    gw = gateway_process
    config = write_console_config(tmp_path / "console.yaml", "e2e", "e2e@tmux", admin_url=gw.url,
                                  token_env="SWITCHBOARD_TEST_OPERATOR_TOKEN", engine_url=None, poll_interval_s=0.5)
    tmux.start(console_argv(config, "e2e"), height=44)  # ten panes: room for a row in the Audit pane
    tmux.wait_for(lambda s: "Routing LIVE" in s and "split" in s, "the Routing pane LIVE with pool split")
    tmux.keys("2")
    for _ in range(3):
        tmux.keys("+", literal=True)
    tmux.wait_for(lambda s: "50 -> 65" in s and "50 -> 35" in s, "the staged change 50 -> 65")
    tmux.keys("a")
    tmux.wait_for(lambda s: "Apply weights" in s and "pool split: a 50 -> 65, b 50 -> 35" in s, "the confirm dialog")
    # Keys that move focus get a human-sized pause: tmux types faster than any operator, and text sent
    # within a few milliseconds of a focus change can reach the widget before it has taken focus.
    tmux.keys("Tab", settle_s=0.2)
    tmux.keys("e2e shift", literal=True)
    tmux.wait_for(lambda s: "e2e shift" in s, "the typed reason")
    tmux.keys("Enter", settle_s=0.2)
    tmux.keys("Enter")
    screen = tmux.wait_for(lambda s: "Apply weights" not in s and "v1 by e2e@tmux" in s, "the applied version")
    assert "->" not in screen.split("Routing")[1].split("Audit")[0], "no staged change left in Routing"
    tmux.wait_for(lambda s: "e2e shift" in s, "the change in the Audit pane")

    state = httpx.get(gw.url + "/admin/state", headers=auth(VIEWER_TOKEN)).json()
    assert next(p for p in state["pools"] if p["name"] == "split")["weights"] == {"a": 65, "b": 35}
    [entry] = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]
    assert entry["reason"] == "e2e shift" and entry["operator"] == "e2e@tmux"
    assert entry["after"] == {"a": 65, "b": 35}

    tmux.keys("q")
    deadline = time.monotonic() + 5
    while not tmux.dead():
        assert time.monotonic() < deadline, "the console did not quit on q"
        time.sleep(0.05)
