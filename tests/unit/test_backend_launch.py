"""`backend up`'s launcher: refusals, start failures, and stopping with no process left behind.

A stand-in `vllm.entrypoints.openai.api_server` (put first on PYTHONPATH) serves /health and spawns
a child, as the real API server spawns its EngineCore, so the launcher runs end to end in seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.backend import launch
from services.backend.launch import group_members, stop_group
from services.backend.settings import BackendSettings

REPO = Path(__file__).resolve().parents[2]
BASE = BackendSettings(python=sys.executable, model="/models/none")

FAKE_SERVER = '''
import argparse, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--host")
parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()
blocked = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("SigBlk"))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # the "EngineCore"
Path(os.environ["FAKE_ENGINE_OUT"]).write_text(f"{os.getpid()} {blocked.split()[1]}")


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer((args.host, args.port), Health).serve_forever()
'''

DRIVER = """
import sys
from pathlib import Path
from services.backend import launch
from services.backend.settings import BackendSettings
settings = BackendSettings(python=sys.executable, model="/models/none", port=int(sys.argv[1]))
sys.exit(launch.run(settings, False, Path(sys.argv[2]), start_timeout_s=30))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_vllm(tmp_path: Path) -> Path:
    package = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_SERVER)
    return tmp_path / "fake"


def start_launcher(fake: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """Runs launch.run in its own process; returns it and the engine's pid once /health answered."""
    out = tmp_path / "engine.out"
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{REPO}", "FAKE_ENGINE_OUT": str(out)}
    launcher = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(free_port()), str(tmp_path / "engine.log")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert launcher.stdout is not None
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if "healthy after" in line:
            break
    else:
        raise AssertionError(f"the launcher never saw the engine healthy: {''.join(lines)}")
    engine_pid, blocked = out.read_text().split()
    # The launcher blocks SIGTERM/SIGINT around the fork; the engine must not inherit that mask.
    assert int(blocked, 16) & ((1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))) == 0
    return launcher, int(engine_pid)


def wait_gone(pgid: int, pid: int, timeout: float) -> list[int]:
    """Waits until ``pid`` has left group ``pgid``; returns the members left."""
    deadline = time.monotonic() + timeout
    while pid in group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return group_members(pgid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_the_whole_engine_group(
    sig: signal.Signals, fake_vllm: Path, tmp_path: Path
) -> None:
    launcher, engine = start_launcher(fake_vllm, tmp_path)
    assert len(group_members(engine)) == 2  # the server and its child, in their own group
    launcher.send_signal(sig)
    output, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, output
    assert f"{sig.name}: stopping the engine" in output
    assert group_members(engine) == []


def test_a_killed_launcher_takes_the_engine_with_it(fake_vllm: Path, tmp_path: Path) -> None:
    launcher, engine = start_launcher(fake_vllm, tmp_path)
    launcher.kill()  # SIGKILL: no clean-up runs in the launcher
    launcher.wait(timeout=10)
    # PR_SET_PDEATHSIG gives the server SIGTERM. Its child here is a plain sleep, which does not
    # follow; vLLM's EngineCore does (measured by hand: the whole group was gone in seconds).
    assert engine not in wait_gone(engine, engine, 10)
    for pid in group_members(engine):
        os.kill(pid, signal.SIGKILL)


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    messages: list[str] = []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        chosen = BASE.replace(python=sys.executable, port=sock.getsockname()[1])
        assert launch.run(chosen, False, tmp_path / "log", say=messages.append) == 1
    assert "already in use" in messages[0]
    assert not (tmp_path / "log").exists()  # nothing was started


def test_up_reports_an_engine_that_exits_before_healthy(tmp_path: Path) -> None:
    """This interpreter has no vllm: the engine dies at once and the log tail says why."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    messages: list[str] = []
    chosen = BASE.replace(python=sys.executable, port=port)
    assert launch.run(chosen, False, tmp_path / "engine.log", say=messages.append, start_timeout_s=60) == 1
    text = "\n".join(messages)
    assert "exited with status 1 before it was healthy" in text
    assert "No module named 'vllm'" in text
    assert "vllm.entrypoints.openai.api_server" in (tmp_path / "engine.log").read_text()


def test_stop_group_leaves_no_process_behind() -> None:
    # A leader with a child that ignores SIGTERM: the group must still be gone, via SIGKILL.
    script = "trap '' TERM; sleep 300 & sleep 300 & wait"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(group_members(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(group_members(proc.pid)) == 3
    started = time.monotonic()
    stop_group(proc, grace_s=1.0)
    assert group_members(proc.pid) == []
    assert proc.returncode is not None
    assert time.monotonic() - started < 10


