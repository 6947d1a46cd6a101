"""``switchboard kubesim`` as a process: it serves, writes a kubeconfig the official client uses, and stops on
SIGTERM even with a watch open; on the seed scenario kubectl sees ai-prod; a bad scenario stops it before it serves."""

from __future__ import annotations

import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
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
        core.create_namespaced_pod("default", {"metadata": {"name": "web"},
                                               "spec": {"containers": [{"name": "main", "image": "app:1"}]}})
        deadline = time.monotonic() + 60  # the controllers run: the scheduler finds no node for it
        while not [c for c in (core.read_namespaced_pod("web", "default").status or client.V1PodStatus()).conditions
                   or [] if c.type == "PodScheduled" and c.status == "False"]:
            assert time.monotonic() < deadline, "no scheduler ran on the pod"
            time.sleep(0.2)
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


def test_switchboard_kubesim_seed_is_what_kubectl_sees(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: install Debian's kubernetes-client (make system-packages)"
    path = tmp_path / "config"
    process = subprocess.Popen([sys.executable, "-m", "console.cli", "kubesim", "seed", "--kubeconfig", str(path)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline() if process.stdout else ""
        assert "SIMULATED" in banner and "scenario seed" in banner, process.stderr.read() if process.stderr else banner
        def kubectl_get(*what: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([kubectl, "--kubeconfig", str(path), "get", *what, "-n", "ai-prod"],
                                  capture_output=True, text=True, timeout=60)

        deadline = time.monotonic() + 60  # a loaded machine ticks slowly; the loop ends once the pods are Ready
        while kubectl_get("deployment", "ai-api", "-o", "jsonpath={.status.readyReplicas}").stdout != "3":
            assert time.monotonic() < deadline, kubectl_get("pods").stdout
            time.sleep(0.5)
        shown = kubectl_get("pods,hpa,rollouts")
        print(shown.stdout)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        running = [line for line in lines if line.startswith("pod/ai-api-") and " 1/1 " in line and "Running" in line]
        assert len(running) >= 3, shown.stdout  # the Deployment's 3, and the Rollout's pods once its controller runs
        assert any(line.startswith("pod/vllm-server-0 ") for line in lines), shown.stdout
        hpa = next(line for line in lines if line.startswith("horizontalpodautoscaler.autoscaling/ai-api-hpa "))
        assert "Deployment/ai-api" in hpa and hpa.split()[-4:-2] == ["2", "20"], hpa
        assert any(line.startswith("rollout.argoproj.io/ai-api ") for line in lines), shown.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_bad_scenario_stops_switchboard_kubesim_before_it_serves(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("name: bad\ncluster:\n  nodes:\n    - {name: gpu, cpu: '8', memory: lots}\n")
    path = tmp_path / "config"
    done = subprocess.run([sys.executable, "-m", "console.cli", "kubesim", str(scenario), "--kubeconfig", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert f"{scenario}: cluster.nodes[0].memory: expected a positive resource quantity" in done.stderr
    assert not path.exists()
