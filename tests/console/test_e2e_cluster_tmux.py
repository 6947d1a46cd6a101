"""The whole local stack in a real terminal, as ``make up`` runs it with ``--sim-cluster``: a gateway process (on a
stand-in upstream), kubesim on a scenario extending the seed and fed by the gateway's ``/metrics``, and the console
under tmux on the embedded ``local`` context. Load through the gateway with the openai SDK and a client key scales
ai-api up on the Autoscaling pane; the ai-api Rollout is promoted and then aborted from the Releases pane's keys,
and the cluster (read with kubectl) and the gateway's audit log agree with the screen."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from console.stack import run_stack
from tests.console.harness import Tmux, console_argv
from tests.gateway_harness import openai_target
from tests.server_process import free_port
from tests.standins import Standin

NAMESPACE, ROLLOUT = "ai-prod", "ai-api"
ADMIN_TOKEN_ENV, VIEWER_TOKEN_ENV = "SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_VIEWER_TOKEN"
WITHIN_S = 90.0  # a loaded 2-core machine ticks slowly; every wait ends as soon as the screen shows it
NEW_IMAGE = "your-registry/ai-api:v2.1.0"
# The seed with a 3 s HPA sync period (the seed's is Kubernetes' 15 s) and each real request standing for 50, so a
# few threads through the gateway push ai-api's HPA (100 requests/s per pod, 3 pods) past its target at once.
SCENARIO = {
    "name": "e2e-cluster",
    "extends": "seed",
    "settings": {"hpa_sync": 3},
    "metrics": [{"gateway": {"namespace": NAMESPACE, "workload": "ai-api", "multiplier": 50, "interval": 1}}],
}


def write_stack_files(directory: Path, upstream_url: str) -> tuple[Path, Path]:
    """(the gateway config, the scenario): client keys required, one route ``local`` to the stand-in upstream."""
    gateway = directory / "gateway.yaml"
    gateway.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": free_port(), "grace_period_s": 1, "log_level": "warning"},
        "admin": {"tokens": [{"name": "operator", "role": "operator", "token_env": ADMIN_TOKEN_ENV},
                             {"name": "viewer", "role": "viewer", "token_env": VIEWER_TOKEN_ENV}]},
        "auth": {"mode": "keys"},
        "state": {"backend": "sqlite", "path": str(directory / "gateway-state.db")},
        "targets": {"standin": openai_target(upstream_url, "smollm2")},
        "pools": {"local": {"targets": {"standin": 100}}},
        "routes": {"local": {"pool": "local"}},
    }, sort_keys=False))
    scenario = directory / "e2e-cluster.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    return gateway, scenario


def private_homes(directory: Path) -> dict[str, str]:
    """XDG homes of the stack's own (state, data, config: no console.yaml there, so the embedded local context)."""
    homes = {}
    for kind in ("state", "data", "config"):
        (directory / kind).mkdir(exist_ok=True)
        homes[f"XDG_{kind.upper()}_HOME"] = str(directory / kind)
    return homes


class Load:
    """Threads sending chat completions through the gateway with the official openai SDK until stopped."""

    def __init__(self, base_url: str, key: str, threads: int = 2, pause_s: float = 0.1) -> None:
        self.pause_s = pause_s  # about 20 requests/s in all: 1,000/s to the HPA, a steady 10 pods' worth
        self.client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=10)
        self.stopping = threading.Event()
        self.answers: list[str] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(threads)]

    def _send(self) -> None:
        while not self.stopping.is_set():
            try:
                reply = self.client.chat.completions.create(model="local",
                                                            messages=[{"role": "user", "content": "Say hello"}])
                self.answers.append(reply.choices[0].message.content or "")
            except openai.OpenAIError as exc:
                self.errors.append(str(exc))
            self.stopping.wait(self.pause_s)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=15)


@dataclass
class Stack:
    """The running stack as the test reaches it: the console's terminal, the gateway, kubesim's kubeconfig."""

    tmux: Tmux
    state: Path  # the state directory `switchboard up` wrote (tokens, client key, kubeconfig, logs)
    gateway_url: str

    @property
    def kubeconfig(self) -> str:
        return os.environ["KUBECONFIG"]  # set by run_stack for the console, as `make up` does

    def secret(self, name: str) -> str:
        return (self.state / name).read_text().strip()

    def kubectl(self, *args: str) -> str:
        kubectl = shutil.which("kubectl")
        assert kubectl, "kubectl is required to read the simulated cluster and is not installed " \
                        "(apt-get install kubernetes-client)"
        result = subprocess.run([kubectl, "--kubeconfig", self.kubeconfig, "-n", NAMESPACE, *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def rollout(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "rollout", ROLLOUT, "-o", "json"))

    def rescales(self) -> list[str]:
        """The HPA controller's SuccessfulRescale events' messages (``New size: 7; reason: ...``), oldest first."""
        events = json.loads(self.kubectl("get", "events", "-o", "json"))["items"]
        return [e["message"] for e in sorted(events, key=lambda e: e.get("lastTimestamp") or "")
                if e.get("reason") == "SuccessfulRescale" and e["involvedObject"]["name"] == "ai-api-hpa"]

    def kubernetes_audit(self) -> list[dict[str, Any]]:
        """The gateway's audit entries of kind kubernetes, oldest first (GET /admin/audit with the viewer token)."""
        response = httpx.get(self.gateway_url + "/admin/audit",
                             headers={"authorization": f"Bearer {self.secret('viewer-token')}"}, timeout=10)
        response.raise_for_status()
        return [e for e in reversed(response.json()["entries"]) if e["kind"] == "kubernetes"]


def run_on_stack(directory: Path, body: Callable[[Stack], None], tmux: Tmux) -> None:
    """``switchboard up --no-backend --sim-cluster <the scenario>`` with ``body`` in place of the console's own
    foreground: it starts the console in ``tmux`` and drives it. The caller has set ``private_homes``."""
    upstream = Standin(kind="openai", name="standin", reply="Hello from the stand-in").start()
    try:
        gateway, scenario = write_stack_files(directory, upstream.url)
        port = yaml.safe_load(gateway.read_text())["server"]["port"]
        state = Path(os.environ["XDG_STATE_HOME"]) / "switchboard"

        def console() -> int:
            body(Stack(tmux, state, f"http://127.0.0.1:{port}"))
            return 0

        assert run_stack(str(gateway), console, start_backend=False, sim_cluster=str(scenario)) == 0
    finally:
        upstream.stop()


def step(screen: str) -> str:
    """The Releases pane's step column for ai-api (``1/10``), "" when it is not on screen."""
    match = re.search(r"ai-api +\S+ \w+(?: \(aborted\))? +(\d+/\d+)", screen)
    return match.group(1) if match else ""


def start_console(stack: Stack) -> str:
    """The console on the embedded local context (no console.yaml): ``switchboard console`` as a second terminal
    would run it; tall enough that the Autoscaling pane shows its why lines. Waits for revision 1 Healthy."""
    stack.tmux.start(console_argv(Path("-"), "local")[:2], width=160, height=100)  # no --config, no --context
    return stack.tmux.wait_for(lambda s: "SIMULATED" in s and "✔ Healthy" in s and step(s) == "10/10",
                               "kubesim's ai-api rollout Healthy at 10/10 under the SIMULATED header",
                               within_s=WITHIN_S)


def deploy_new_revision(stack: Stack) -> str:
    """A new image (as ``kubectl argo rollouts set image`` would): the rollout sets weight 1 and pauses at step 1."""
    stack.kubectl("patch", "rollout", ROLLOUT, "--type", "json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": NEW_IMAGE}]))
    return stack.tmux.wait_for(lambda s: "॥ Paused" in s and step(s) == "1/10", "ai-api Paused at 1/10",
                               within_s=WITHIN_S)


def replicas_shown(screen: str) -> int:
    match = re.search(r"replicas +(\d+) \[", screen)
    return int(match.group(1)) if match else 0


def scale_up(stack: Stack) -> tuple[str, Load]:
    """Load through the gateway with the client key `make up` made until the HPA scales ai-api past 3."""
    with Load(stack.gateway_url, stack.secret("client-key")) as load:
        stack.tmux.keys("7")
        stack.tmux.keys("8")
        screen = stack.tmux.wait_for(
            lambda s: replicas_shown(s) > 3 and "why formula" in s and "http_requests_per_second" in s
            and "SucceededRescale" in s, "ai-api scaled past 3 replicas on the request rate, with why",
            within_s=WITHIN_S)
    return screen, load


def confirm(stack: Stack, key: str, dialog: Callable[[str], bool], what: str, reason: str) -> str:
    """Press ``key`` on the selected rollout, wait for its dialog, type the reason and confirm; the dialog's text."""
    stack.tmux.keys(key)
    shown = stack.tmux.wait_for(dialog, what, within_s=WITHIN_S)
    # Keys that move focus get a human-sized pause (tests/console/test_e2e_tmux.py says why).
    stack.tmux.keys("Tab", settle_s=0.2)
    stack.tmux.keys(reason, literal=True)
    stack.tmux.wait_for(lambda s: reason in s, "the typed reason")
    stack.tmux.keys("Enter", settle_s=0.2)
    stack.tmux.keys("Enter")
    return shown


def promote(stack: Stack, reason: str) -> tuple[str, str]:
    """Releases (6), ai-api selected, O: the pause is cleared; the analysis passes, weight 10, paused at step 4."""
    stack.tmux.keys("6")
    stack.tmux.wait_for(lambda s: "O Promote" in s, "the rollout's promote key offered (access reviewed)",
                        within_s=WITHIN_S)
    dialog = confirm(stack, "O", lambda s: "kubesim/ai-prod/rollouts/ai-api: promote: clear the pause" in s
                     and "pauseConditions" in s, "the promote dialog with its patch", reason)
    screen = stack.tmux.wait_for(lambda s: "॥ Paused" in s and step(s) == "4/10" and "pending" not in s,
                                 "ai-api moved on to its next pause, 4/10", within_s=WITHIN_S)
    return dialog, screen


def abort(stack: Stack, reason: str) -> tuple[str, str]:
    """X on the selected ai-api: traffic back to stable; the rollout shows ✖ Degraded once kubesim aborted it."""
    dialog = confirm(stack, "X", lambda s: "kubesim/ai-prod/rollouts/ai-api: abort" in s  # the patch wraps at 72
                     and '(merge): {"status": {"abort":' in s and "Traffic goes back to stable" in s,
                     "the abort dialog with its patch", reason)
    screen = stack.tmux.wait_for(lambda s: "✖ Degraded" in s and "pending" not in s, "ai-api Degraded (aborted)",
                                 within_s=WITHIN_S)
    return dialog, screen


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in private_homes(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in (ADMIN_TOKEN_ENV, VIEWER_TOKEN_ENV, "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_load_scales_up_and_a_rollout_is_promoted_then_aborted_from_the_console(tmux: Tmux, homes: Path) -> None:
    def body(stack: Stack) -> None:
        start_console(stack)
        deploy_new_revision(stack)
        _, load = scale_up(stack)
        assert load.answers and set(load.answers) == {"Hello from the stand-in"}, load.errors[:3]
        assert any(re.fullmatch(r"New size: ([4-9]|1\d|20); reason: .*above target", m) for m in stack.rescales()), \
            stack.rescales()

        promote(stack, "e2e promote")
        status = stack.rollout()["status"]
        assert (status["currentStepIndex"], status.get("pauseConditions", [{}])[0].get("reason")) == \
            (4, "CanaryPauseStep"), status

        _, screen = abort(stack, "e2e abort")
        status = stack.rollout()["status"]
        assert status["abort"] is True and status["phase"] == "Degraded", status
        # The screen and the cluster agree: an aborted canary goes back to step 0 and weight 0, as Argo's does.
        assert step(screen) == f"{status['currentStepIndex']}/10" == "0/10", screen

        promoted, aborted = stack.kubernetes_audit()
        assert (promoted["action"], promoted["reason"], promoted["after"]["outcome"]) == \
            ("rollout.promote", "e2e promote", "ok")
        assert (aborted["action"], aborted["reason"], aborted["after"]["outcome"]) == \
            ("rollout.abort", "e2e abort", "ok")
        assert promoted["target"] == aborted["target"] == "kubesim/ai-prod/rollouts/ai-api"
        assert any("pauseConditions" in line for line in promoted["after"]["detail"]), promoted
        assert any('"abort":true' in line.replace(" ", "") for line in aborted["after"]["detail"]), aborted
        tmux.keys("q")

    run_on_stack(homes, body, tmux)
