"""The end-to-end cluster flow of tests/console/test_e2e_cluster_tmux.py as a script that prints what it saw: the
console's screen (tmux capture-pane) during a load spike and after a promote and an abort of the ai-api Argo rollout,
the patches sent and the gateway's audit entries. For session notes and demos:

    .venv/bin/python -m tests.console.e2e_cluster_demo
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.console.harness import Tmux
from tests.console.test_e2e_cluster_tmux import (
    ADMIN_TOKEN_ENV,
    VIEWER_TOKEN_ENV,
    Stack,
    abort,
    deploy_new_revision,
    private_homes,
    promote,
    run_on_stack,
    scale_up,
    start_console,
)


def show(title: str, text: str) -> None:
    print(f"\n===== {title} =====")
    print("\n".join(line.rstrip() for line in text.rstrip().splitlines()), flush=True)


def flow(stack: Stack) -> None:
    start_console(stack)
    deploy_new_revision(stack)
    screen, load = scale_up(stack)
    show(f"the console during the load spike ({len(load.answers)} chat completions through the gateway with the "
         f"client key, {len(load.errors)} errors): GPU pods (7), Autoscaling (8), Releases (6)", screen)
    dialog, screen = promote(stack, "e2e promote")
    show("the promote dialog (O)", dialog)
    show("after the promote", screen)
    dialog, screen = abort(stack, "e2e abort")
    show("the abort dialog (X)", dialog)
    show("after the abort", screen)
    status = stack.rollout()["status"]
    show("kubectl get rollout ai-api -n ai-prod -o json: status (abbreviated)", json.dumps(
        {key: status.get(key) for key in ("phase", "message", "abort", "currentStepIndex", "stableRS",
                                          "currentPodHash")}, indent=2))
    show("kubectl get hpa -n ai-prod", stack.kubectl("get", "hpa"))
    for entry in stack.kubernetes_audit():
        show(f"audit: {entry['action']} on {entry['target']} by {entry['operator']}: {entry['reason']} "
             f"({entry['after']['outcome']})", "\n".join(entry["after"]["detail"]))
    audit = subprocess.run(["switchboard", "audit", "--limit", "4"], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep
                                + os.environ["PATH"]})
    show("switchboard audit --limit 4", audit.stdout + audit.stderr)
    stack.tmux.keys("q")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sb-e2e-cluster-") as scratch:
        directory = Path(scratch)
        os.environ.update(private_homes(directory))
        for name in (ADMIN_TOKEN_ENV, VIEWER_TOKEN_ENV, "KUBECONFIG"):
            os.environ.pop(name, None)
        tmux = Tmux()
        try:
            run_on_stack(directory, flow, tmux)
        finally:
            tmux.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
