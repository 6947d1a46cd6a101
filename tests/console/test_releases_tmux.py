"""One release aborted from the console in a real terminal: a gateway process, the console under tmux."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.harness import NO_UPSTREAM, Tmux, console_argv, write_console_config
from tests.gateway_harness import VIEWER_TOKEN, GatewayProcess, auth, fast_settings, openai_target


@pytest.fixture
def gateway_with_release(tmp_path: Path) -> Iterator[GatewayProcess]:
    config = {
        **fast_settings(),
        "targets": {"a": openai_target(NO_UPSTREAM, "model-a"), "b": openai_target(NO_UPSTREAM, "model-b")},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    }
    process = GatewayProcess(config, str(tmp_path)).start()
    created = httpx.post(f"{process.url}/admin/releases", headers=auth(operator="setup@test"), json={
        "name": "rel", "pool": "split", "stable": "a", "canary": "b", "analysis_interval_s": 0.2,
        "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}], "reason": "tmux release"})
    assert created.status_code == 201, created.text
    yield process
    process.stop()


def release(gw: GatewayProcess) -> dict:
    listing = httpx.get(f"{gw.url}/admin/releases", headers=auth(VIEWER_TOKEN)).json()
    return next(r for r in listing["releases"] if r["spec"]["name"] == "rel")


def test_abort_a_release_in_a_real_terminal(tmux: Tmux, gateway_with_release: GatewayProcess, tmp_path: Path) -> None:
    gw = gateway_with_release
    config = write_console_config(tmp_path / "console.yaml", "e2e", "e2e@tmux", admin_url=gw.url,
                                  token_env="SWITCHBOARD_TEST_OPERATOR_TOKEN", engine_url=None, poll_interval_s=0.3)
    tmux.start(console_argv(config, "e2e"))
    tmux.wait_for(lambda s: "Releases LIVE" in s, "the Releases pane LIVE")
    tmux.keys("6")
    tmux.wait_for(lambda s: "Paused" in s and "pause (until promoted)" in s, "release rel Paused", within_s=20)
    tmux.keys("A")
    tmux.wait_for(lambda s: "Abort the selected release" in s and "abort release rel: Paused" in s,
                  "the confirm dialog with the release's analysis")
    # Keys that move focus get a human-sized pause (see test_e2e_tmux): text typed within milliseconds of a
    # focus change can reach the widget before it has taken focus.
    tmux.keys("Tab", settle_s=0.2)
    tmux.keys("tmux abort", literal=True)
    tmux.wait_for(lambda s: "tmux abort" in s, "the typed reason")
    tmux.keys("Enter", settle_s=0.2)
    tmux.keys("Enter")
    tmux.wait_for(lambda s: "Abort the selected release" not in s and "✖ Degraded" in s,
                  "the release Degraded in the pane")

    state = release(gw)
    assert state["phase"] == "Degraded" and state["aborted"] and state["actual_weight"] == 0
    entries = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]
    [entry] = [e for e in entries if e["reason"] == "tmux abort"]
    assert entry["operator"] == "e2e@tmux" and "abort" in entry["action"]

    tmux.keys("q")
    deadline = time.monotonic() + 5
    while not tmux.dead():
        assert time.monotonic() < deadline, "the console did not quit on q"
        time.sleep(0.05)
