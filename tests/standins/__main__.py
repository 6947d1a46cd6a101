"""Run one stand-in in the foreground: python -m tests.standins --kind openai --port 9001."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from tests.standins.server import Standin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.standins", description=__doc__)
    parser.add_argument("--kind", choices=["openai", "anthropic"], required=True)
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (printed on start)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default=None, help="model name listed by /v1/models")
    parser.add_argument("--reply", default=None, help='answer text (default "Hello from NAME")')
    args = parser.parse_args(argv)

    standin = Standin(kind=args.kind, name=args.name, reply=args.reply, port=args.port, host=args.host)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    # Our own handlers (uvicorn only installs its handlers on the main thread, and ours is not it),
    # so SIGINT and SIGTERM both end in a clean stop and exit status 0.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    standin.start()
    print(f"standin {standin.name} ({standin.kind}) listening on {standin.url}", flush=True)
    while not done.wait(0.5):
        pass
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
