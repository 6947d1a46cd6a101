"""``switchboard kubesim [SCENARIO]``: serve the API double in the foreground, with its controllers running, and
write a kubeconfig that reaches it. SCENARIO (a shipped name such as ``seed``, or a file) is loaded and checked
before anything listens; without one the API starts empty apart from its system namespaces."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from services.kubesim.controllers.base import Settings
from services.kubesim.kubeconfig import CONTEXT, new_tokens, write_kubeconfig
from services.kubesim.scenario import Scenario, ScenarioError, apply, load, sources
from services.kubesim.server import KubeSim
from services.kubesim.timeline import Timeline


def start(scenario: Scenario | None, tokens: dict[str, str], gateway_url: str | None = None,
          **options: Any) -> tuple[KubeSim, list[str]]:
    """A started kubesim with controllers on and ``scenario`` (if any) created in it and its timeline running;
    the notes say which metric feeds were left out. ScenarioError (before anything starts) for a missing source."""
    if scenario is None:
        return KubeSim(tokens, controllers=Settings(), **options).start(), []
    feeds, notes = sources(scenario, gateway_url)
    sim = KubeSim(tokens, controllers=scenario.settings, sources=feeds,
                  extra=(Timeline.of(scenario.timeline),), **options).start()
    api = sim.api
    assert api is not None
    try:
        sim.call(lambda: apply(scenario, api.store, api.registry))
    except BaseException:
        sim.stop()
        raise
    return sim, notes


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load(args.scenario) if args.scenario else None
    except ScenarioError as exc:
        print(f"switchboard kubesim: {exc}", file=sys.stderr)
        return 2
    tokens = new_tokens()
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        sim, notes = start(scenario, tokens, args.gateway_url, port=args.port)
    except ScenarioError as exc:
        print(f"switchboard kubesim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"switchboard kubesim: cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        path = write_kubeconfig(Path(args.kubeconfig).expanduser(), sim.url, tokens, sim.ca_pem)
        what = f"scenario {scenario.name} ({scenario.path})" if scenario else "no scenario"
        print(f"kubesim (SIMULATED cluster) serving {sim.url}; kubeconfig {path} (context {CONTEXT}); {what}",
              flush=True)
        for note in notes:
            print(f"  note: {note}", flush=True)
        stopped.wait()
    finally:
        sim.stop()
    return 0
