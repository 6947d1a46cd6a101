"""A second terminal on a running stack: ``switchboard up`` in one tmux window, the CLI verbs and a second
console in another, with nothing shared between them but the files ``switchboard up`` leaves in the
state directory (as with a second SSH session: no token in the environment).

The stack runs with ``--no-backend`` and its targets point at an unreachable upstream: the console and
the verbs only read and write the admin API. The gateway's port comes from the gateway config; the
second window finds it (and the operator token file) through the stack's record in the state
directory, which the embedded ``local`` context follows: no console.yaml anywhere.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from console.contexts import load_console_config, pick_context
from console.sources.gateway import GatewayClient
from console.stack import run_stack
from tests.console.harness import NO_UPSTREAM, Tmux, TmuxMissing
from tests.gateway_harness import free_port, openai_target

TOKEN_VARIABLES = ("SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_VIEWER_TOKEN")
LOAD_S = 60.0  # a loaded 2-core machine starts a gateway process and a Textual app slowly


class Shell:
    """An interactive shell in its own tmux server: each command ends with a numbered exit-status line."""

    def __init__(self, tmux: Tmux) -> None:
        self.tmux = tmux
        self.count = 0

    def run(self, command: str, within_s: float = LOAD_S) -> tuple[int, str]:
        """Type ``command`` on a cleared screen; its exit status and what it printed."""
        self.count += 1
        marker = f"done-{self.count}"
        self.tmux.keys(f'clear; {command}; echo "{marker} rc=$?"', literal=True)
        self.tmux.keys("Enter")
        pattern = re.compile(rf"^{marker} rc=(\d+)\s*$", re.MULTILINE)
        screen = until(self.tmux, lambda s: pattern.search(s) is not None, f"`{command}` finishing", within_s)
        match = pattern.search(screen)
        assert match
        return int(match.group(1)), screen[:match.start()]


def until(tmux: Tmux, condition: Callable[[str], object], what: str, within_s: float = LOAD_S) -> str:
    """Wait for the screen to show ``what``; fail at once when the window's program has exited instead."""

    def check(screen: str) -> bool:
        if condition(screen):
            return True
        if tmux.dead():
            last = tmux.screen()  # what it printed just before exiting counts too
            if condition(last):
                return True
            raise AssertionError(f"window {tmux.session} exited before showing {what}; the screen was:\n{last}")
        return False

    return tmux.wait_for(check, what, within_s)


def routing(screen: str) -> str:
    """The Routing pane's part of a console screen."""
    return screen.split("Routing", 1)[-1].split("Audit", 1)[0]


def row(screen: str, target: str) -> str:
    """The Routing pane's line for ``target`` in pool split ('' when absent)."""
    return next((line for line in routing(screen).splitlines() if re.search(rf"\b{target}\b", line)), "")


@pytest.fixture
def windows() -> Iterator[tuple[Tmux, Tmux]]:
    started: list[Tmux] = []
    try:
        for name in ("stack", "second"):
            started.append(Tmux(session=name))
    except TmuxMissing as exc:
        pytest.fail(str(exc))
    yield started[0], started[1]
    for tmux in started:
        tmux.kill()  # a stack still running gets SIGHUP; its gateway dies with it


@dataclass(frozen=True)
class StackFiles:
    home: Path  # state/, data/ and config/ below it
    gateway_config: Path
    url: str

    def environment(self) -> list[str]:
        """``env`` arguments for a fresh login: private XDG homes, this virtualenv's scripts, no admin tokens."""
        unset = [arg for name in TOKEN_VARIABLES for arg in ("-u", name)]
        homes = [f"XDG_{kind.upper()}_HOME={self.home / kind}" for kind in ("state", "data", "config")]
        return ["env", *unset, *homes, f"PATH={os.path.dirname(sys.executable)}:{os.environ['PATH']}"]


@pytest.fixture
def stack_files(tmp_path: Path) -> StackFiles:
    for kind in ("state", "data", "config"):
        (tmp_path / kind).mkdir()
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "grace_period_s": 1, "log_level": "warning"},
        "admin": {"tokens": [{"name": "operator", "role": "operator", "token_env": TOKEN_VARIABLES[0]},
                             {"name": "viewer", "role": "viewer", "token_env": TOKEN_VARIABLES[1]}]},
        "targets": {"a": openai_target(NO_UPSTREAM, "model-a"), "b": openai_target(NO_UPSTREAM, "model-b")},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    }
    gateway_config = tmp_path / "gateway.yaml"
    gateway_config.write_text(yaml.safe_dump(config, sort_keys=False))
    return StackFiles(tmp_path, gateway_config, f"http://127.0.0.1:{port}")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_second_terminal_reaches_the_running_stack(windows: tuple[Tmux, Tmux], stack_files: StackFiles) -> None:
    first, second = windows
    url = stack_files.url
    up = ["switchboard", "up", "--no-backend", "--gateway-config", str(stack_files.gateway_config)]
    first.start([*stack_files.environment(), *up], width=250)  # wide enough for the start-up lines unwrapped
    until(first, lambda s: "Routing LIVE" in s and row(s, "a") and url in s,
                   f"the first console LIVE on {url}", LOAD_S)

    state = stack_files.home / "state" / "switchboard"
    tokens = {name: state / name for name in ("operator-token", "viewer-token")}
    assert mode(state) == 0o700
    for path in tokens.values():
        assert mode(path) == 0o600, f"{path} is {mode(path):04o}"
    client_key = state / "client-key"
    assert mode(client_key) == 0o600
    key = client_key.read_text().strip()
    assert key.startswith("sk-sb-")
    assert httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert httpx.get(url + "/v1/models").status_code == 401, "the data plane wants a key"

    shell = Shell(second)
    second.start([*stack_files.environment(), "PS1=$ ", "bash", "--norc", "--noprofile"])
    until(second, lambda s: s.rstrip().endswith("$"), "the shell prompt", LOAD_S)

    rc, out = shell.run(" ".join(up))
    assert rc == 1 and "already running" in out and "switchboard console" in out, out

    rc, out = shell.run("switchboard status")
    assert rc in (0, 1) and "TARGET" in out and re.search(r"^a\s", out, re.MULTILINE), out
    assert "401" not in out

    rc, out = shell.run("switchboard weights show")
    assert rc == 0 and re.search(r"^\s+a\s+50$", out, re.MULTILINE), out

    rc, out = shell.run("switchboard weights set split a=70 b=30 --reason 'from the second terminal'")
    assert rc == 0, out
    until(first, lambda s: re.search(r"\b70\b", row(s, "a")) and re.search(r"\b30\b", row(s, "b")),
                   "the CLI's weights in the first console's Routing pane", LOAD_S)

    # A second console in the second window drains a; the first console and the CLI see it.
    second.keys('clear; switchboard console; echo "console rc=$?"', literal=True)
    second.keys("Enter")
    until(second, lambda s: "Routing LIVE" in s and re.search(r"\b70\b", row(s, "a")),
                    "the second console LIVE with the new weights", LOAD_S)
    second.keys("2", settle_s=0.2)
    second.keys("d")
    until(second, lambda s: "drain target a" in s, "the drain confirmation", LOAD_S)
    # Focus moves get a human-sized pause (see test_e2e_tmux).
    second.keys("Tab", settle_s=0.2)
    second.keys("maintenance from the second console", literal=True)
    until(second, lambda s: "maintenance from the second console" in s, "the typed reason")
    second.keys("Enter", settle_s=0.2)
    second.keys("Enter")
    until(second, lambda s: "drained" in row(s, "a"), "a drained in the second console", LOAD_S)
    until(first, lambda s: "drained" in row(s, "a"), "the drain in the first console", LOAD_S)
    second.keys("q")
    until(second, lambda s: "console rc=0" in s, "the second console quitting", LOAD_S)

    rc, out = shell.run("switchboard weights show")
    assert rc == 0 and re.search(r"^\s+a\s+70\s+DRAINED$", out, re.MULTILINE), out

    first.keys("q")
    first.wait_for(lambda s: first.dead(), "the stack stopping after its console quits", LOAD_S)
    screen = first.screen()
    assert f"operator token: {tokens['operator-token']} (mode 0600, generated)" in screen
    assert f"client key: {client_key} (mode 0600" in screen
    assert "cat " in screen and key not in screen, "the example reads the key from its file"
    log = (state / "gateway.log").read_text()
    for secret in (key, *(path.read_text().strip() for path in tokens.values())):
        assert secret not in screen and secret not in log
    assert not (state / "stack.json").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_a_restarted_stack_reuses_its_tokens_and_client_key(stack_files: StackFiles, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("state", "data", "config"):
        monkeypatch.setenv(f"XDG_{kind.upper()}_HOME", str(stack_files.home / kind))
    for name in TOKEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    state = stack_files.home / "state" / "switchboard"
    seen: list[int] = []

    def console(then: Callable[[GatewayClient], Awaitable[object]] | None = None) -> Callable[[], int]:
        """Stands in for the TUI: what it does is what a console on the embedded local context would reach."""

        def run() -> int:
            context = pick_context(load_console_config(), None)
            assert context.admin_url == stack_files.url

            async def work() -> None:
                client = GatewayClient(context.admin_url, context.token(), "test@restart")
                try:
                    seen.append((await client.state()).version)
                    if then is not None:
                        await then(client)
                finally:
                    await client.aclose()

            asyncio.run(work())
            return 0

        return run

    def up(runner: Callable[[], int]) -> str:
        assert run_stack(str(stack_files.gateway_config), runner, start_backend=False) == 0
        return capsys.readouterr().out

    out = up(console())
    key_id = (state / "client-key.id").read_text().strip()
    key = (state / "client-key").read_text()
    assert "(mode 0600, generated)" in out and f"created {key_id}" in out
    tokens = {name: (state / name).read_text() for name in ("operator-token", "viewer-token")}

    out = up(console(lambda client: client.set_key_disabled(key_id, True, "test: lost laptop")))
    assert out.count("(mode 0600, reused)") == 2 and f"reused {key_id}" in out
    assert {name: (state / name).read_text() for name in tokens} == tokens, "a restart keeps the tokens"
    assert (state / "client-key").read_text() == key

    out = up(console(lambda client: client.delete_key(
        (state / "client-key.id").read_text().strip(), "test: gone")))
    new_id = (state / "client-key.id").read_text().strip()
    assert f"created {new_id}: {key_id} is disabled" in out and new_id != key_id
    assert (state / "client-key").read_text() != key and mode(state / "client-key") == 0o600

    out = up(console())
    newest_id = (state / "client-key.id").read_text().strip()
    assert f"created {newest_id}: the gateway does not know {new_id}" in out
    assert key not in out and seen == sorted(seen) and len(seen) == 4


def test_the_gateway_stops_when_switchboard_up_is_killed(windows: tuple[Tmux, Tmux], stack_files: StackFiles) -> None:
    """A dropped SSH session or a kill -9 leaves no gateway behind holding the port and the state."""
    first, _ = windows
    first.start([*stack_files.environment(), "switchboard", "up", "--no-backend", "--gateway-config",
                 str(stack_files.gateway_config)])
    until(first, lambda s: "Routing LIVE" in s and stack_files.url in s, "the console LIVE", LOAD_S)
    assert httpx.get(stack_files.url + "/health").status_code == 200
    os.kill(first.pane_pid(), signal.SIGKILL)  # the pane runs `switchboard up` itself (exec env ...)

    deadline = time.monotonic() + LOAD_S
    while True:
        try:
            httpx.get(stack_files.url + "/health", timeout=1)
        except httpx.TransportError:
            break
        assert time.monotonic() < deadline, "the gateway outlived `switchboard up`"
        time.sleep(0.1)
