"""The built-in load generator (services/bench/loadgen.py) must not be the bottleneck.

Against a stand-in that answers at once (a minimal HTTP/1.1 server on uvloop in its own process: every completion
is a short SSE stream with usage, sent with Content-Length on a keep-alive connection), it measures:

- ``rate``: an open-loop run at ``--rate`` (2,000 requests/s by default, Poisson): the achieved request rate and the
  send lag, i.e. how late each request left against its planned time (p50, p99, max). Goal: >= 2,000/s and
  p99 lag < 1 ms.
- ``max``: all requests at once behind ``--concurrency`` (64): the highest rate the generator reaches.
- beside them, ``vllm bench serve``'s own achieved rate on the same stand-in and the same two settings (through the
  ``vllm`` runner, from the backend's virtualenv), or "not installed".

Each figure comes with the generator's CPU per request. Results: tests/perf/results/bench-loadgen-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.perf.procstat import cpu_seconds, machine_info, ratio, save_result  # noqa: E402

RESULTS = ROOT / "tests" / "perf" / "results"
MODEL = "standin-fast"


# -- the stand-in ------------------------------------------------------------------------------------------------

def _sse_body() -> bytes:
    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": MODEL}
    body = b"".join([
        event({**base, "choices": [{"index": 0, "text": "Hello", "finish_reason": None}]}),
        event({**base, "choices": [{"index": 0, "text": " there", "finish_reason": None}]}),
        event({**base, "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}),
        event({**base, "choices": [], "usage": {"prompt_tokens": 16, "completion_tokens": 2, "total_tokens": 18}}),
        b"data: [DONE]\n\n",
    ])
    return body


def _response(body: bytes, content_type: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\nconnection: keep-alive\r\n\r\n" + body)


STREAM = _response(_sse_body(), b"text/event-stream")
MODELS = _response(json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "standin"}]})
                   .encode(), b"application/json")


class _Protocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; answers by path, reads bodies by Content-Length."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15:].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(MODELS if head.startswith(b"get") else STREAM)  # type: ignore[attr-defined]


def serve(port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Protocol, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- measurements ------------------------------------------------------------------------------------------------

def _spec(url: str, num_prompts: int, rate: float, concurrency: int | None, runner: str = "builtin",
          tokenizer: str | None = None) -> Any:
    from services.bench.spec import BenchSpec

    return BenchSpec(base_url=url, model=MODEL, num_prompts=num_prompts, request_rate=rate,
                     max_concurrency=concurrency, runner=runner, tokenizer=tokenizer,
                     dataset={"kind": "random", "input_len": 16, "output_len": 2})


def measure_builtin(spec: Any, server_pid: int) -> dict[str, Any]:
    import uvloop

    from services.bench.loadgen import run

    began_cpu, began_server, began = cpu_seconds(os.getpid()), cpu_seconds(server_pid), time.monotonic()
    result = uvloop.run(run(spec))
    cpu, wall = cpu_seconds(os.getpid()) - began_cpu, time.monotonic() - began
    server_cpu = cpu_seconds(server_pid) - began_server
    m = result.metrics
    return {"completed": m["completed"], "failed": m["failed"], "duration_s": round(m["duration"], 3),
            "req_s": round(m["request_throughput"], 1),
            "sent_s": round(m["send_rate"], 1) if m.get("send_rate") else None,
            "lag_p50_ms": round(m["send_lag_p50_ms"], 3),
            "lag_p99_ms": round(m["send_lag_p99_ms"], 3), "lag_max_ms": round(m["send_lag_max_ms"], 3),
            "median_ttft_ms": round(m["median_ttft_ms"], 3), "cpu_ms_per_req": round(cpu * 1000 / m["completed"], 3)
            if m["completed"] else None, "gen_core_share": round(cpu / wall, 2),
            "standin_core_share": round(server_cpu / wall, 2), "loadavg_1m": round(os.getloadavg()[0], 2),
            "wall_s": round(wall, 2)}


def vllm_available() -> tuple[str | None, str]:
    """(tokenizer folder, "") when ``vllm bench serve`` can run here, else (None, why not)."""
    from services.backend import install, paths

    if os.environ.get("SWITCHBOARD_BENCH_VLLM_PYTHON") is None and install.installed_venv() is None:
        return None, "not installed (switchboard backend install)"
    tokenizer = paths.models_dir() / "smollm2-135m-instruct"
    if not (tokenizer / "tokenizer.json").is_file():
        return None, "no local tokenizer (switchboard backend model)"
    try:
        from services.bench.runners import get_runner

        get_runner("vllm")
    except (ImportError, ValueError) as exc:
        return None, f"the vllm runner is not available: {exc}"
    return str(tokenizer), ""


def measure_vllm(spec: Any) -> dict[str, Any]:
    from services.bench.runners import get_runner

    began = time.monotonic()
    result = asyncio.run(get_runner("vllm").run(spec))
    m = result.metrics
    return {"completed": m.get("completed"), "failed": m.get("failed"), "duration_s": round(m["duration"], 3),
            "req_s": round(m["request_throughput"], 1), "median_ttft_ms": round(m.get("median_ttft_ms") or 0, 3),
            "wall_s_including_startup": round(time.monotonic() - began, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="requests/s of the open-loop run (default 2000)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the open-loop run (default 8)")
    parser.add_argument("--concurrency", type=int, default=64, help="in flight for the max-rate run (default 64)")
    parser.add_argument("--max-prompts", type=int, default=12000, help="requests of the max-rate run")
    parser.add_argument("--quick", action="store_true", help="shorter runs, rough figures")
    parser.add_argument("--skip-vllm", action="store_true", help="do not run vllm bench serve")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.quick:
        args.seconds, args.max_prompts = 3.0, 4000
    port = _free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", "the stand-in did not start"
        url = f"http://127.0.0.1:{port}"
        prompts = int(args.rate * args.seconds)
        print(f"stand-in (uvloop, answers at once) at {url}; machine: {os.cpu_count()} cores")
        measure_builtin(_spec(url, 500, float("inf"), 32), server.pid)  # warm the interpreter and the connections
        rows: dict[str, dict[str, Any]] = {}
        rows["builtin rate"] = measure_builtin(_spec(url, prompts, args.rate, None), server.pid)
        rows["builtin max"] = measure_builtin(_spec(url, args.max_prompts, float("inf"), args.concurrency),
                                              server.pid)
        tokenizer, why_not = (None, "skipped (--skip-vllm)") if args.skip_vllm else vllm_available()
        vllm: dict[str, Any] = {"status": why_not or "ran"}
        if tokenizer is not None:
            try:
                vllm["rate"] = measure_vllm(_spec(url, prompts, args.rate, None, "vllm", tokenizer))
                vllm["max"] = measure_vllm(_spec(url, args.max_prompts, float("inf"), args.concurrency, "vllm",
                                                 tokenizer))
            except Exception as exc:  # report it beside our figures rather than losing them
                vllm["status"] = f"failed: {type(exc).__name__}: {str(exc)[-300:]}"
    finally:
        server.terminate()
        server.wait(10)
    print(f"\n{'run':<14} {'sent/s':>9} {'req/s':>9} {'lag p50':>9} {'lag p99':>9} {'lag max':>9} {'cpu ms/req':>11} "
          f"{'gen core':>9} {'stand-in':>9} {'load 1m':>8} {'failed':>7}")
    for name, row in rows.items():
        print(f"{name:<14} {row['sent_s'] or 0:>9.1f} {row['req_s']:>9.1f} {row['lag_p50_ms']:>9.3f} "
              f"{row['lag_p99_ms']:>9.3f} "
              f"{row['lag_max_ms']:>9.3f} {row['cpu_ms_per_req'] or 0:>11.3f} {row['gen_core_share']:>9.2f} "
              f"{row['standin_core_share']:>9.2f} {row['loadavg_1m']:>8.2f} {row['failed']:>7}")
    print("(sent/s: requests over the time of the last send; req/s: completed over the duration, which includes the\n"
          " last responses' tail; lag: how late a request left against its planned time; gen core: the generator's\n"
          " share of one core - well under 1 while a goal is missed means other processes had the cores)")
    rate_row = rows["builtin rate"]
    # The schedule ends at n/rate exactly, so any lag of the last send puts sent/s a hair under the rate.
    goal_rate = (rate_row["sent_s"] or 0) >= 1990 and rate_row["req_s"] >= 1980 and rate_row["failed"] == 0
    goal_lag = rate_row["lag_p99_ms"] < 1.0
    print(f"\ngoal 2,000 requests/s at --rate {args.rate:g}: {'PASS' if goal_rate else 'FAIL'} "
          f"(sent {rate_row['sent_s'] or 0:.0f}/s, completed {rate_row['req_s']:.0f}/s); "
          f"send lag p99 < 1 ms: {'PASS' if goal_lag else 'FAIL'} ({rate_row['lag_p99_ms']:.3f} ms)")
    if "rate" in vllm:
        print(f"vllm bench serve on the same stand-in: {vllm['rate']['req_s']:.0f}/s at --rate {args.rate:g}, "
              f"{vllm['max']['req_s']:.0f}/s at concurrency {args.concurrency}; ours/vllm: "
              f"{ratio(rate_row['req_s'], vllm['rate']['req_s'])} (rate), "
              f"{ratio(rows['builtin max']['req_s'], vllm['max']['req_s'])} (max)")
    else:
        print(f"vllm bench serve: {vllm['status']}")
    utc = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    save_result(RESULTS, "bench-loadgen", {"utc": utc, "machine": machine_info(), "rate": args.rate,
                                           "seconds": args.seconds, "concurrency": args.concurrency,
                                           "builtin": rows, "vllm": vllm,
                                           "goals": {"rate": goal_rate, "lag_p99": goal_lag}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
