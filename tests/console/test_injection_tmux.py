"""Escape-sequence injection, end to end: ``switchboard console`` in a real terminal (tmux) reading an admin
API whose names, reasons and errors carry clear-screen, cursor-move, window-title (OSC 0), clipboard (OSC 52)
and bidi sequences.

The real gateway refuses such strings (422), so the server here is a loopback stand-in speaking the admin
API's JSON. tmux is the terminal: its ``set-clipboard`` option is on, so an OSC 52 write that reached it
would land in a paste buffer, and an OSC 0 would become ``#{pane_title}``. A control at the end writes the
same sequences raw in another window and sees tmux act on them, so the checks can fail.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.console.harness import Tmux, console_argv, write_console_config
from tests.console.hostile_api import HostileAdminAPI

PAYLOAD_MARKERS = ("payload", "cGF5bG9hZA")  # the clipboard write's text, decoded and encoded


@pytest.fixture
def hostile_api() -> Iterator[HostileAdminAPI]:
    api = HostileAdminAPI().start()
    yield api
    api.stop()


def start_with_clipboard_on(tmux: Tmux, argv: list[str]) -> None:
    """Start the session on a placeholder, turn tmux's clipboard on, then run ``argv`` in the pane: the
    option is in force before the console writes its first byte."""
    tmux.start(["sleep", "600"], height=66)  # tall enough for every hostile row of every pane
    tmux.run("set-option", "-s", "set-clipboard", "on")
    tmux.run("respawn-pane", "-k", "-t", tmux.session, "exec env -u COLUMNS -u LINES " + shlex.join(argv))


def pane_title(tmux: Tmux, target: str) -> str:
    return tmux.run("display-message", "-p", "-t", target, "#{pane_title}").strip()


def paste_buffers(tmux: Tmux) -> str:
    return tmux.run("list-buffers", "-F", "#{buffer_name}: #{buffer_sample}")


def line_with(screen: list[str], *texts: str) -> str:
    """The first line of the screen holding all ``texts``."""
    line = next((line for line in screen if all(text in line for text in texts)), None)
    assert line is not None, f"no line holds {texts}; the screen was:\n" + "\n".join(screen)
    return line


def wait_until(condition: Callable[[], bool], what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_hostile_strings_cannot_drive_the_terminal(tmux: Tmux, hostile_api: HostileAdminAPI,
                                                     tmp_path: Path) -> None:
    config = write_console_config(tmp_path / "console.yaml", "hostile", "op@tmux", admin_url=hostile_api.url,
                                  token_env=None, engine_url=None, poll_interval_s=0.5)
    start_with_clipboard_on(tmux, console_argv(config, "hostile"))
    text = tmux.wait_for(
        lambda s: all(seen in s for seen in ("mini␛[2Jx", "boom␛[2J", "␛]52;c;cGF5bG9hZA==␇", "bot␛[2J")),
        "the hostile names, the audit entries, the audit source's error and the keys", within_s=30)
    screen = text.splitlines()

    # The escaped form is visible, each string where it belongs.
    line_with(screen, "chat␛[H", "mini␛[2Jx", "60", "healthy")  # a Routing row: pool, target, weight, state
    line_with(screen, "haiku<U+202E>gnp", "3", "0.0%")  # a bidi override shown as its code point
    line_with(screen, "2 Routing LIVE", "v9 by eve␛]0;PWNED␇")  # who changed it last, in the title
    line_with(screen, "eve␛]0;PWNED␇", "set_weights", "chat␛[H", "␛]52;c;cGF5bG9hZA==␇", "mini␛[2Jx 50->60")
    line_with(screen, "mallory", "drain␛[2J", "reason␛[H<U+202E>tail", "a␛]52;c;cGF5bG9hZA==␛\\ -> b")
    line_with(screen, "4 Audit", "boom␛[2J␛]0;PWNED␇")  # the error message, in the Audit title
    line_with(screen, "bot␛[2J", "eve<U+202E>pwn", "enterprise", "active")  # a client key's name and owner

    # Nothing was cleared or moved: the frame, every pane and the key bar are where they belong.
    assert screen[0].startswith(" Switchboard ") and "hostile" in screen[0]
    assert "1 Providers LIVE" in screen[1]
    assert "q Quit" in screen[-1]
    for title in ("2 Routing", "3 Engine", "4 Audit", "5 Keys"):
        line_with(screen, title)
    header = line_with(screen, "Target", "Status", "Breaker")
    for name in ("mini␛[2Jx", "plain-target"):
        row = line_with(screen, f"│ {name} ")
        assert row.index("healthy") == header.index("Status"), f"the {name} row is out of place:\n{text}"
    line_with(screen, "alice@bastion", "undrain", "plain-target", "an ordinary reason")

    # The terminal's own state: no title set, nothing written to the clipboard.
    assert "PWNED" not in pane_title(tmux, tmux.session)
    buffers = paste_buffers(tmux)
    assert not any(marker in buffers for marker in PAYLOAD_MARKERS), buffers

    # Control: the same sequences written raw do set tmux's pane title and paste buffer, so the checks above
    # would have seen them.
    tmux.run("new-window", "-d", "-t", tmux.session, "-n", "control",
             "printf '\\033]0;PWNED\\007\\033]52;c;cGF5bG9hZA==\\007'; sleep 600")
    control = f"{tmux.session}:control"
    wait_until(lambda: pane_title(tmux, control) == "PWNED",
               "tmux did not take a raw OSC 0 title: the title check above means nothing")
    wait_until(lambda: "payload" in paste_buffers(tmux),
               "tmux did not take a raw OSC 52 clipboard write: the clipboard check above means nothing")
