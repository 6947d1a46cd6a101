"""The ``switchboard`` command. Subcommands are added as the parts they run land."""

from __future__ import annotations

import argparse
import sys


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
    return parser


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
