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

PANES = ("6 Releases", "7 GPU pods", "8 Autoscaling")


def show(title: str, text: str) -> None:
    print(f"\n===== {title} =====")
    print("\n".join(line.rstrip() for line in text.rstrip().splitlines()), flush=True)


def panes(screen: str, titles: tuple[str, ...] = PANES) -> str:
    """The header line and the named (full-width) panes' boxes from a capture, their empty lines left out."""
    lines = screen.splitlines()
    kept = lines[:1]
    for title in titles:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"╭─ {title}"))
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("╰"))
        kept += [line for line in lines[start:end + 1] if line.strip("│ ")]
    return "\n".join(kept)


def dialog(screen: str) -> str:
    """The modal dialog's box (drawn with █ over the panes, from its █▀ top edge to its █▄ bottom) from a capture."""
    lines = screen.splitlines()
    top = next(i for i, line in enumerate(lines) if "█▀" in line)
    bottom = next(i for i in range(top, len(lines)) if "█▄" in lines[i])
    left = lines[top].index("█▀")
    width = lines[top].rindex("█") + 1 - left
    return "\n".join(line[left:left + width] for line in lines[top:bottom + 1])


def flow(stack: Stack) -> None:
    start_console(stack)
    deploy_new_revision(stack)
    screen, load = scale_up(stack)
    show(f"the console during the load spike ({len(load.answers)} chat completions through the gateway with the "
         f"client key, {len(load.errors)} errors)", panes(screen))
    asked, screen = promote(stack, "e2e promote")
    show("Releases (6), ai-api selected, O: the promote dialog", dialog(asked))
    show("after the promote", panes(screen, ("4 Audit", *PANES)))
    asked, screen = abort(stack, "e2e abort")
    show("X: the abort dialog", dialog(asked))
    show("after the abort", panes(screen, ("4 Audit", "6 Releases")))
    status = stack.rollout()["status"]
    show("kubectl get rollout ai-api -n ai-prod -o json: status (abbreviated)", json.dumps(
        {key: status.get(key) for key in ("phase", "message", "abort", "currentStepIndex", "stableRS",
                                          "currentPodHash")}, indent=2))
    show("kubectl get hpa -n ai-prod", stack.kubectl("get", "hpa"))
    show("the HPA's SuccessfulRescale events", "\n".join(stack.rescales()))
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
