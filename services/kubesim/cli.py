"""``switchboard kubesim``: serve the API double in the foreground and write a kubeconfig that reaches it."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from services.kubesim.kubeconfig import CONTEXT, new_tokens, write_kubeconfig
from services.kubesim.server import KubeSim


def run(args: argparse.Namespace) -> int:
    tokens = new_tokens()
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        sim = KubeSim(tokens, port=args.port).start()
    except OSError as exc:
        print(f"switchboard kubesim: cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        path = write_kubeconfig(Path(args.kubeconfig).expanduser(), sim.url, tokens, sim.ca_pem)
        print(f"kubesim (SIMULATED cluster) serving {sim.url}; kubeconfig {path} (context {CONTEXT})", flush=True)
        stopped.wait()
    finally:
        sim.stop()
    return 0
