"""The console's data layer: contexts, the poller, staging math, the action registry and its verbs, the stack lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from console.actions import CLI_ACTIONS, REGISTRY, Action, ActionState, StagedWeights, keymap, shift, visible_actions
from console.cli import build_parser
from console.contexts import ContextError, load_console_config, pick_context
from console.sources.poller import Health, Observed, Poller
from console.stack import AlreadyRunning, stack_lock


def test_embedded_local_context_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # no running stack's record to follow
    context = pick_context(load_console_config(), None)
    assert context.name == "local" and context.admin_url == "http://127.0.0.1:8080"


def test_contexts_file_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump({"current": "prod", "contexts": {
        "prod": {"admin_url": "http://gw:8080", "token_env": "PROD_TOKEN", "readonly": True, "color": "red",
                 "prod": True},
        "dev": {"admin_url": "http://dev:8080", "poll_intervals": {"engine": 5}}}}, sort_keys=False))
    monkeypatch.setenv("PROD_TOKEN", "s3cret")
    config = load_console_config(path)
    prod = pick_context(config, None)
    assert prod.readonly and prod.prod and prod.color == "red" and prod.token() == "s3cret"
    assert pick_context(config, "dev").admin_url == "http://dev:8080"
    assert pick_context(config, "dev").poll_intervals == {"engine": 5}
    with pytest.raises(ContextError, match="no context 'stage'; known: prod, dev"):
        pick_context(config, "stage")
    path.write_text(yaml.safe_dump({"contexts": {"x": {"admin_url": "u", "colour": "red"}}}))
    with pytest.raises(ContextError, match=r"console\.yaml: invalid console config\n  contexts\.x\.colour"):
        load_console_config(path)
    with pytest.raises(ContextError, match="no such console config file"):
        load_console_config(tmp_path / "missing.yaml")


def test_poller_goes_live_then_stale_then_down_and_never_overlaps() -> None:
    calls = {"n": 0, "running": 0, "max_running": 0}
    fail = {"on": False}

    async def fetch() -> int:
        calls["running"] += 1
        calls["max_running"] = max(calls["max_running"], calls["running"])
        try:
            calls["n"] += 1
            if fail["on"]:
                await asyncio.sleep(1)  # hangs past the timeout
            return calls["n"]
        finally:
            calls["running"] -= 1

    seen: list[Health] = []

    async def scenario() -> None:
        poller = Poller("test", fetch, lambda snap: seen.append(snap.health), interval_s=0.01, timeout_s=0.05,
                        down_after_s=0.2)
        poller.start()
        await asyncio.sleep(0.1)
        assert poller.snapshot.health is Health.LIVE
        fail["on"] = True
        await asyncio.sleep(0.12)
        assert poller.snapshot.health is Health.STALE and poller.snapshot.data is not None
        assert poller.snapshot.error == "timed out"
        await asyncio.sleep(0.3)
        assert poller.snapshot.health is Health.DOWN
        fail["on"] = False
        await asyncio.sleep(0.1)
        assert poller.snapshot.health is Health.LIVE
        await poller.stop()

    asyncio.run(scenario())
    assert calls["max_running"] == 1
    assert seen.index(Health.STALE) < seen.index(Health.DOWN)


def test_a_callback_that_raises_does_not_stop_polling_and_the_snapshot_says_what_failed() -> None:
    count = {"n": 0}

    async def fetch() -> int:
        count["n"] += 1
        return count["n"]

    async def scenario() -> list[Observed[int]]:
        delivered: list[Observed[int]] = []
        later = asyncio.Event()

        def on_update(snapshot: Observed[int]) -> None:
            if snapshot.data == 1 and snapshot.health is Health.LIVE:
                raise RuntimeError("pane exploded")
            delivered.append(snapshot)
            if (snapshot.data or 0) >= 3:
                later.set()

        poller = Poller("test", fetch, on_update, interval_s=0.01, timeout_s=5.0)
        poller.start()
        try:
            await asyncio.wait_for(later.wait(), timeout=30)  # an event, not a sleep: the loop kept going
        finally:
            await poller.stop()
        return delivered

    delivered = asyncio.run(scenario())
    first = delivered[0]
    assert first.data == 1 and first.health is Health.STALE
    assert first.error == "could not show the update: pane exploded"
    assert [(s.data, s.health, s.error) for s in delivered[1:3]] == [(2, Health.LIVE, None), (3, Health.LIVE, None)]


def test_shift_moves_five_points_and_keeps_the_total() -> None:
    assert shift({"a": 50, "b": 50}, "a", 5) == {"a": 55, "b": 45}
    assert shift({"a": 50, "b": 30, "c": 20}, "a", 5) == {"a": 55, "b": 25, "c": 20}
    assert shift({"a": 98, "b": 2}, "a", 5) == {"a": 100, "b": 0}
    assert shift({"a": 3, "b": 97}, "a", -5) == {"a": 0, "b": 100}
    assert shift({"only": 100}, "only", 5) == {"only": 100}
    staged = StagedWeights("p", 3, {"a": 50, "b": 50}, {"a": 60, "b": 40})
    assert staged.describe() == "pool p: a 50 -> 60, b 50 -> 40"


def test_registry_remaps_by_id_and_hides_writes_when_read_only() -> None:
    keys = keymap({"apply_weights": "ctrl+s"})
    assert keys["apply_weights"] == "ctrl+s" and keys["quit"] == "q"
    with pytest.raises(ValueError, match="unknown action id"):
        keymap({"launch_missiles": "m"})
    assert not any(action.writes for action in visible_actions(readonly=True))
    assert REGISTRY["apply_weights"].unavailable(ActionState(readonly=True, has_staged=True)) == "read-only"
    assert REGISTRY["drain"].unavailable(ActionState(state_loaded=True)) == "select a target in the Routing pane"


def test_every_registry_verb_is_a_subcommand_and_writes_require_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert {"weights set", "drain", "undrain", "status", "keys create", "keys delete"} <= {
        a.cli.name for a in CLI_ACTIONS if a.cli}
    for action in CLI_ACTIONS:
        assert action.cli is not None
        with pytest.raises(SystemExit) as done:
            parser.parse_args([*action.cli.name.split(), "--help"])
        assert done.value.code == 0
        usage = capsys.readouterr().out
        assert ("--reason REASON" in usage) is action.writes, action.id
        assert "--context" in usage


def test_an_action_needs_a_key_with_a_perform_or_a_cli_verb() -> None:
    with pytest.raises(ValueError, match="a key and a perform go together"):
        Action("launch", "Launch", key="l")
    with pytest.raises(ValueError, match="neither a key nor a CLI verb"):
        Action("nothing", "Does nothing")


def test_second_stack_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    lock = tmp_path / "stack.lock"
    with stack_lock(lock), pytest.raises(AlreadyRunning, match=r"already running \(pid \d+\)"), stack_lock(lock):
        pass
    with stack_lock(lock):
        pass
