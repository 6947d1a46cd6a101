"""A batch through ``make up``'s stack, as a script that prints what it saw: ``switchboard backend install`` and
``model`` (cached), then ``switchboard up``'s stack (the bundled vLLM backend, a redis-server, the gateway on the
example config and one batch worker) with the console under tmux; 24 chat requests sent as one batch with the
official openai SDK and the stack's local client key, as the README shows; the console's Queue pane (9) while it
runs and once it has completed; the output file downloaded with the SDK; ``switchboard batch list`` and ``show``
against the stack; then, the stack stopped, the kill -9 test of tests/integration/test_batch_worker.py with its
counts; last, a check that nothing this script started is still running. For session notes and demos:

    .venv/bin/python -m tests.console.e2e_batch_demo

The example config is copied with another ``server.port`` when 8080 is taken (a shared machine); the simulated
cluster is left out (``make up SIM_CLUSTER=``): the Queue pane does not need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import yaml

from console.stack import BACKEND_URL, run_stack
from console.statedir import CLIENT_KEY
from tests.console.harness import REPO_ROOT, Tmux
from tests.console.test_e2e_cluster_tmux import ADMIN_TOKEN_ENV, VIEWER_TOKEN_ENV, private_homes
from tests.server_process import free_port

EXAMPLE_CONFIG = REPO_ROOT / "services" / "gateway" / "examples" / "gateway.example.yaml"
REQUESTS = 24
MAX_TOKENS = 16
WITHIN_S = 600.0  # CPU inference on a shared, loaded machine; every wait ends as soon as it is done
RUN_MARK = "SWITCHBOARD_BATCH_DEMO_RUN"  # in the environment of every process this script starts, to find strays
BIN = Path(sys.executable).parent
TOKEN_VARIABLES = (ADMIN_TOKEN_ENV, VIEWER_TOKEN_ENV, "SWITCHBOARD_WORKER_TOKEN", "KUBECONFIG")


def show(title: str, text: str) -> None:
    print(f"\n===== {title} =====")
    print("\n".join(line.rstrip() for line in text.rstrip().splitlines()), flush=True)


def queue_pane(screen: str) -> str:
    """A capture with its empty lines left out. The terminal is under 30 rows, so the console lays its panes out as
    a list: the active pane (Queue) takes the height, each other pane a line."""
    return "\n".join(line for line in screen.splitlines() if line.strip("│ "))


def done_of(screen: str, batch_id: str) -> tuple[str, int, int] | None:
    """(status, done, total) of the batch's row on the screen, None while it is not there."""
    row = next((line for line in screen.splitlines() if batch_id[:12] in line), None)
    if row is None:
        return None
    status = next((s for s in ("in_progress", "validating", "finalizing", "completed", "cancelling", "cancelled",
                               "failed", "expired") if s in row), "?")
    match = re.search(r"(\d[\d,]*)/(\d[\d,]*)", row)
    if match is None:
        return status, 0, 0
    return status, int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))


def switchboard(*args: str, timeout: float = 60) -> str:
    result = subprocess.run([str(BIN / "switchboard"), *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PATH": str(BIN) + os.pathsep + os.environ["PATH"]})
    return f"$ switchboard {' '.join(args)}   (exit {result.returncode})\n{result.stdout}{result.stderr}"


def write_requests(path: Path) -> None:
    topics = ["tea", "rivers", "bicycles", "owls", "bread", "glaciers", "chess", "lanterns"]
    lines = [{"custom_id": f"req-{n:02d}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "local", "max_tokens": MAX_TOKENS,
                       "messages": [{"role": "user", "content": f"One short sentence about {topics[n % 8]}."}]}}
             for n in range(REQUESTS)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def watch_queue(tmux: Tmux, client: openai.OpenAI, batch_id: str) -> tuple[list[str], str]:
    """Captures of the Queue pane while the batch runs (the one nearest half done, and the one with the most done
    before the end), and the one showing it completed."""
    running: list[tuple[int, str]] = []
    deadline = time.monotonic() + WITHIN_S
    while time.monotonic() < deadline:
        screen = tmux.screen()
        seen = done_of(screen, batch_id)
        if seen is not None and seen[0] == "completed":
            break
        if seen is not None and seen[0] == "in_progress" and (not running or seen[1] > running[-1][0]):
            running.append((seen[1], screen))
        time.sleep(0.2)
    else:
        raise AssertionError(f"the batch did not complete on the Queue pane within {WITHIN_S:.0f} s: "
                             f"{client.batches.retrieve(batch_id).status}\n{tmux.screen()}")
    partial = [(done, screen) for done, screen in running if 0 < done < REQUESTS] or running
    middle = min(partial, key=lambda seen: abs(seen[0] - REQUESTS / 2))
    kept = [screen for _, screen in ([middle, partial[-1]] if middle is not partial[-1] else [middle])]
    return kept, tmux.wait_for(lambda s: "completed" in s, "the batch completed", within_s=30)


def abbreviated(line: dict[str, Any]) -> str:
    response = line.get("response") or {}
    body = response.get("body") or {}
    content = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    return json.dumps({"id": line.get("id"), "custom_id": line.get("custom_id"),
                       "response": {"status_code": response.get("status_code"), "body": {
                           "model": body.get("model"), "choices[0].message.content": content[:70],
                           "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")}}},
                       "error": line.get("error")})


def batch_flow(tmux: Tmux, state: Path, gateway_url: str, scratch: Path, seen: list[Process]) -> str:
    """Starts the console, sends the batch with the SDK, prints the Queue pane and the results; the batch id.
    The processes of the run while the batch runs are added to ``seen``."""
    tmux.start([str(BIN / "switchboard"), "console"], width=140, height=29)  # the embedded local context
    tmux.wait_for(lambda s: "Routing" in s, "the console's panes", within_s=120)
    tmux.keys("9")
    tmux.wait_for(lambda s: "9 Queue" in s and "chat" in s and "completions" in s, "the Queue pane with its streams",
                  within_s=60)
    show("the console, 9 Queue, before the batch", queue_pane(tmux.screen()))

    requests = scratch / "requests.jsonl"
    write_requests(requests)
    key_file = state / CLIENT_KEY
    # The README's example (the base URL is this stack's gateway).
    client = openai.OpenAI(base_url=gateway_url + "/v1", api_key=key_file.read_text().strip())
    with open(requests, "rb") as file:
        upload = client.files.create(file=file, purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"description": "e2e batch demo"})
    started = time.monotonic()
    show("the openai SDK", f"client key: {key_file}\nfiles.create: {upload.id} ({upload.bytes} bytes, "
         f"{REQUESTS} lines, model local, max_tokens {MAX_TOKENS})\nbatches.create: {batch.id} ({batch.status})")

    seen.extend(run_processes())
    show("processes of this run while the batch runs", listing(seen))
    running, completed = watch_queue(tmux, client, batch.id)
    for screen in running:
        status, done, total = done_of(screen, batch.id) or ("?", 0, 0)
        show(f"the console, 9 Queue, while the batch runs ({status}, {done}/{total})", queue_pane(screen))
    show("the console, 9 Queue, the batch completed", queue_pane(completed))

    batch = client.batches.retrieve(batch.id)
    while batch.status != "completed" and time.monotonic() - started < WITHIN_S:
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.output_file_id, batch
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    errors = [json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()] \
        if batch.error_file_id else []
    ids = [line["custom_id"] for line in output]
    counts = batch.request_counts
    show("the batch, retrieved and downloaded with the SDK", "\n".join([
        f"batches.retrieve: {batch.id} {batch.status}, request_counts total {counts.total if counts else '?'}, "
        f"completed {counts.completed if counts else '?'}, failed {counts.failed if counts else '?'}; "
        f"{time.monotonic() - started:.1f} s from create to completed as seen here",
        f"files.content(output_file_id {batch.output_file_id}): {len(output)} lines, {len(set(ids))} distinct "
        f"custom_ids, {'all' if set(ids) == {f'req-{n:02d}' for n in range(REQUESTS)} else 'NOT all'} of the "
        f"{REQUESTS} sent, status codes {sorted({line['response']['status_code'] for line in output})}",
        f"error file: {batch.error_file_id} ({len(errors)} lines)",
        "first two output lines (abbreviated):",
        *[abbreviated(line) for line in output[:2]],
    ]))
    show("switchboard batch list (the embedded local context: this stack)", switchboard("batch", "list"))
    show(f"switchboard batch show {batch.id}", switchboard("batch", "show", batch.id))
    return batch.id


def quit_console(tmux: Tmux) -> None:
    tmux.keys("q")
    deadline = time.monotonic() + 15
    while not tmux.dead() and time.monotonic() < deadline:
        time.sleep(0.1)


def gateway_config(scratch: Path) -> Path:
    """The example config; a copy on another port when 8080 is taken."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    if not port_open(data["server"]["port"]):
        return EXAMPLE_CONFIG
    data["server"]["port"] = free_port()
    print(f"port 8080 is taken on this machine: the example config copied with server.port {data['server']['port']}",
          flush=True)
    path = scratch / "gateway.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    started: str  # the start time in /proc/PID/stat: a pid reused by a later process is not mistaken for it
    command: str


def run_processes() -> list[Process]:
    """What this run started and is still running: the processes carrying its mark in their environment (tmux's
    server is detached from this one) and every descendant of those and of this process (redis-server and vLLM's
    engine core set their titles over the memory their environment is read from)."""
    table: dict[int, Process] = {}
    marked = {os.getpid()}
    needle = f"{RUN_MARK}={os.environ[RUN_MARK]}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        table[int(entry.name)] = Process(int(entry.name), int(fields[1]), fields[19], command[:120])
        if needle in environ:
            marked.add(int(entry.name))
    found, frontier = set(marked), list(marked)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, process in table.items() if process.parent == parent and pid not in found]
        found.update(children)
        frontier += children
    return [table[pid] for pid in sorted(found - {os.getpid()}) if pid in table]


def still_running(seen: list[Process]) -> list[Process]:
    """Of the processes seen while the stack ran, and of this run's now, those alive at the end."""
    now = {process.pid: process for process in run_processes()}
    for process in seen:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{process.pid}/stat").read_text()
            if stat[stat.rindex(")") + 2:].split()[19] == process.started:
                now[process.pid] = process
    return sorted(now.values(), key=lambda process: process.pid)


def listing(processes: list[Process]) -> str:
    return "\n".join(f"{process.pid:>7} {process.command}" for process in processes)


def kill_9_test() -> str:
    test = "tests/integration/test_batch_worker.py::" \
           "test_kill_9_of_a_worker_three_times_mid_batch_loses_nothing_and_stores_nothing_twice"
    result = subprocess.run([str(BIN / "pytest"), "-q", "-s", "-p", "no:cacheprovider", test], capture_output=True,
                            text=True, timeout=900, cwd=REPO_ROOT)
    return f"$ pytest -q -s {test}   (exit {result.returncode})\n{result.stdout[-4000:]}{result.stderr[-2000:]}"


def run(scratch: Path, tmux: Tmux) -> int:
    if port_open(int(BACKEND_URL.rsplit(":", 1)[1])):
        print(f"{BACKEND_URL} is taken: the bundled backend of `switchboard up` needs port 8000", file=sys.stderr)
        return 1
    show("make up: switchboard backend install / model (cached)",
         switchboard("backend", "install", timeout=1800) + switchboard("backend", "model", timeout=1800))
    config = gateway_config(scratch)
    state = Path(os.environ["XDG_STATE_HOME"]) / "switchboard"
    port = yaml.safe_load(config.read_text())["server"]["port"]
    seen: list[Process] = []
    batch: list[str] = []

    def console() -> int:
        try:
            batch.append(batch_flow(tmux, state, f"http://127.0.0.1:{port}", scratch, seen))
        finally:
            quit_console(tmux)
        return 0

    show("switchboard up --gateway-config <the example config> (its start-up lines)", "")
    code = run_stack(str(config), console)
    show("the stack stopped", f"switchboard up returned {code}; the worker log's last line: "
         + (state / "worker.log").read_text(errors="replace").splitlines()[-1])
    tmux.kill()
    show("the kill -9 test (tests/integration/test_batch_worker.py, real redis-server, gateway and workers, "
         "a stand-in upstream)", kill_9_test())
    left = still_running(seen)
    for process in left:
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGKILL)  # only processes this run started (same pid and start time)
    show("processes of this run still running at the end", listing(left)
         or f"none: all {len(seen)} listed above (backend, vLLM engine, redis-server, gateway, worker, console, tmux) "
            "have stopped")
    return 0 if code == 0 and batch and not left else 1


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sb-e2e-batch-") as scratch:
        os.environ.update(private_homes(Path(scratch)))
        for name in TOKEN_VARIABLES:
            os.environ.pop(name, None)
        os.environ[RUN_MARK] = uuid.uuid4().hex
        tmux = Tmux()
        try:
            return run(Path(scratch), tmux)
        finally:
            tmux.kill()


if __name__ == "__main__":
    sys.exit(main())

