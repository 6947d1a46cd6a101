"""Helpers shared by the console's tests, end-to-end test, screenshots and benchmark.

- ``EngineStandin``: a vLLM ``/metrics`` page (recorded from a real engine) on loopback; ``mode = "hang"``
  makes it accept requests and never answer.
- ``Tmux``: a private tmux server (its own socket) to run the console in a real terminal.
- ``console_argv``: ``switchboard console`` for a config file and context.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.loopback import LoopbackServer, QuietHandler

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_UPSTREAM = "http://127.0.0.1:9"  # the console only reads the admin API: these gateways never route a request
METRICS_PAGE = REPO_ROOT / "tests" / "unit" / "fixtures" / "vllm_metrics.txt"



class EngineStandin(LoopbackServer):
    """Serves a recorded vLLM ``/metrics`` page; ``mode`` "ok" answers, "hang" answers nothing for a while."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.release = threading.Event()
        self.requests = 0
        standin = self
        page = METRICS_PAGE.read_bytes()

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                standin.requests += 1
                if standin.mode == "hang":
                    standin.release.wait(5)
                    return
                self.send_body(200, page, "text/plain; version=0.0.4")

        super().__init__(Handler)

    def stop(self) -> None:
        self.release.set()
        super().stop()


def write_console_config(path: Path, name: str, operator: str, **context: Any) -> Path:
    path.write_text(yaml.safe_dump({"current": name, "operator": operator, "contexts": {name: context}}))
    return path


def console_argv(config: Path, context: str) -> list[str]:
    """``switchboard console --config F --context N``, the installed script beside this interpreter."""
    switchboard = shutil.which("switchboard", path=os.path.dirname(sys.executable))
    assert switchboard, "the switchboard console script is missing: pip install -e ."
    return [switchboard, "console", "--config", str(config), "--context", context]


class TmuxMissing(RuntimeError):
    pass


class Tmux:
    """A private tmux server (its own socket), so none of the user's sessions is touched."""

    def __init__(self, session: str = "console") -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            raise TmuxMissing("tmux is required to run the console in a real terminal and is not installed "
                              "(apt-get install tmux)")
        self.tmux = tmux
        self.socket = f"sb-console-{uuid.uuid4().hex[:8]}"
        self.session = session

    def run(self, *args: str) -> str:
        result = subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        if result.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def start(self, argv: list[str], width: int = 120, height: int = 40) -> None:
        # COLUMNS/LINES (pytest sets them) would override the pane's real size in the child.
        command = "exec env -u COLUMNS -u LINES " + " ".join(_quote(a) for a in argv)
        self.run("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), "-c", str(REPO_ROOT),
                 command)
        self.run("set-option", "-t", self.session, "remain-on-exit", "on")

    def keys(self, *keys: str, literal: bool = False, settle_s: float = 0.0) -> None:
        self.run("send-keys", "-t", self.session, *(["-l"] if literal else []), *keys)
        time.sleep(settle_s)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def wait_for(self, condition: Callable[[str], bool], what: str, within_s: float = 10.0,
                 every_s: float = 0.05) -> str:
        """The first screen for which ``condition`` holds, captured twice alike: tmux may be captured while it is
        still taking in a frame (the new title already drawn, the rows under it not yet), and a test must not
        read such a torn frame as the console's state."""
        deadline = time.monotonic() + within_s
        while True:
            text = self.screen()
            if condition(text) and self.screen() == text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the console never showed {what}; the screen was:\n{text}")
            time.sleep(every_s)

    def pane_pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", self.session, "#{pane_pid}").strip())

    def dead(self) -> bool:
        return self.run("display-message", "-p", "-t", self.session, "#{pane_dead}").strip() == "1"

    def kill(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"
