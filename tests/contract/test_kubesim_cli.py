"""``switchboard kubesim`` as a process: it serves, writes a kubeconfig the official client uses, and stops on
SIGTERM even with a watch open."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parents[2]


def test_switchboard_kubesim_serves_writes_a_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "kube" / "config"
    process = subprocess.Popen([sys.executable, "-m", "console.cli", "kubesim", "--kubeconfig", str(path)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline() if process.stdout else ""
        assert "SIMULATED" in banner and str(path) in banner, process.stderr.read() if process.stderr else banner
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds bearer tokens
        api = config.new_client_from_config(config_file=str(path))
        assert config.list_kube_config_contexts(config_file=str(path))[1]["name"] == "kubesim"
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map("default", {"metadata": {"name": "hello"}, "data": {"k": "v"}})
        assert core.read_namespaced_config_map("hello", "default").data == {"k": "v"}
        opened = threading.Event()
        ended = threading.Event()

        def hold_a_watch() -> None:
            # timeout_seconds turns off the client's re-watch, so the stream ends when the server closes it
            for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=600):
                opened.set()
            ended.set()

        threading.Thread(target=hold_a_watch, daemon=True).start()
        assert opened.wait(60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert ended.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
