"""Gateway overhead benchmark: direct vs Switchboard vs Portkey, side by side, in one run.

One fast stand-in upstream (Debian's nginx on loopback, answering ``POST /v1/chat/completions`` with a
fixed chat.completion body) is measured four ways at a constant arrival rate (open loop):

* ``direct``: load generator -> nginx
* ``switchboard``: load generator -> ``python -m services.gateway --config <yaml>`` -> nginx, ``auth: {mode: open}``
* ``switchboard-keys``: the same with ``auth: {mode: keys}``; every request carries a client key (created
  through ``POST /admin/keys``) with rpm and tpm limits far above the load, so the key lookup, the
  metering and the limit checks all run; the printed ``keys on vs off`` line is its cost
* ``portkey``: load generator -> ``@portkey-ai/gateway@1.15.2`` (node) -> nginx

It prints p50/p99 latency per path and rate, the latency each gateway adds over the direct path measured
in the same run, and the highest rate each gateway sustains with p99 added latency under 20 ms and no
errors. It is a report, not a pass/fail test: figures from a shared, noisy machine only mean something
next to each other.

Run from the repository root with the project's Python (it also runs the gateway)::

    python tests/perf/bench_gateway.py               # about 4 minutes
    BENCH_QUICK=1 python tests/perf/bench_gateway.py # about 1 minute, rough figures
    python tests/perf/bench_gateway.py --help        # durations, rates, search bounds

The load generator is ``tests/perf/loadgen.c`` (open loop, wrk2-style: latency counts from the moment
a request was due), compiled with ``cc`` into the cache folder on first use. Tools it lacks are
installed when running as root (``apt-get install nginx-light gcc nodejs npm``); Portkey is installed
with npm into ``${XDG_CACHE_HOME:-~/.cache}/switchboard/bench/portkey-1.15.2`` and is never a
dependency of the product. Results go to ``tests/perf/results/gateway-<UTC time>.json`` and
``gateway-latest.json``. Every process it starts is stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RESULTS_DIR = HERE / "results"
LOADGEN_SRC = HERE / "loadgen.c"
PORTKEY_VERSION = "1.15.2"
LOOPBACK = "127.0.0.1"
PATHS = ("direct", "switchboard", "switchboard-keys", "portkey")
SEARCHED = ("switchboard", "portkey")  # the max-rate search; keys on and off are compared at the fixed rates
OPERATOR_TOKEN_ENV = "BENCH_OPERATOR_TOKEN"
TRANSPORT_FAILURES = {0: "reset", 1: "timeout", 2: "connect"}  # loadgen's status codes under 100

REQUEST_BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
UPSTREAM_BODY = {
    "id": "chatcmpl-bench0001",
    "object": "chat.completion",
    "created": 1764000000,
    "model": "bench-model",
    "system_fingerprint": "fp_bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 9,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}

# Node's listen() without a host binds every interface; this preload keeps Portkey on loopback.
NODE_LOOPBACK_PRELOAD = """\
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && (args[1] === undefined || typeof args[1] === 'function')) {
    args[1] = '127.0.0.1';
  } else if (args[0] && typeof args[0] === 'object' && !args[0].host && !args[0].path) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
"""


class BenchError(Exception):
    """The benchmark cannot run; the message says what is missing or what failed."""


# --------------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class Options:
    rates: tuple[int, ...]
    duration_s: float
    warmup_s: float
    threshold_ms: float
    search_start: int
    search_step: int
    search_max: int
    search_duration_s: float
    search_budget_s: float
    max_conns: int
    timeout_s: float
    python: str
    gateway_module: str
    skip_portkey: bool
    results_dir: Path
    quick: bool


def parse_options(argv: Sequence[str] | None = None) -> Options:
    quick_env = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", default=quick_env, help="short runs (env BENCH_QUICK=1)")
    p.add_argument("--rates", default="200,1000", help="comparison rates, requests/s (default 200,1000)")
    p.add_argument("--duration", type=float, help="measured seconds per comparison run (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each run (default 2)")
    p.add_argument("--threshold-ms", type=float, default=20.0, help="p99 added latency limit (default 20)")
    p.add_argument("--search-start", type=int, default=500, help="first rate of the max-rate search")
    p.add_argument("--search-step", type=int, default=500, help="rate step of the max-rate search")
    p.add_argument("--search-max", type=int, default=6000, help="highest rate the search tries")
    p.add_argument("--search-duration", type=float, help="measured seconds per search step (default 5)")
    p.add_argument("--search-budget", type=float, help="seconds the whole search may take (default 150)")
    p.add_argument("--max-conns", type=int, default=512, help="load generator connection cap")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the gateway")
    p.add_argument("--gateway-module", default="services.gateway", help="module started with -m")
    p.add_argument("--skip-portkey", action="store_true", help="measure direct and switchboard only")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    quick = bool(a.quick)
    return Options(
        rates=tuple(int(r) for r in a.rates.split(",") if r.strip()),
        duration_s=a.duration or (3.0 if quick else 10.0),
        warmup_s=a.warmup or (1.0 if quick else 2.0),
        threshold_ms=a.threshold_ms,
        search_start=a.search_start,
        search_step=a.search_step,
        search_max=a.search_max,
        search_duration_s=a.search_duration or (2.0 if quick else 5.0),
        search_budget_s=a.search_budget or (40.0 if quick else 150.0),
        max_conns=a.max_conns,
        timeout_s=a.timeout,
        python=a.python,
        gateway_module=a.gateway_module,
        skip_portkey=a.skip_portkey,
        results_dir=a.results_dir,
        quick=quick,
    )


# --------------------------------------------------------------------------------------------------
# tools: install what is missing, or say what to install


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "switchboard" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_tool(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra_dirs:
        candidate = Path(d) / name
        if candidate.exists():
            return str(candidate)
    return None


def apt_install(packages: Sequence[str], why: str) -> None:
    hint = f"install it with: apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError(f"{why} is missing; {hint}")
    log(f"installing {' '.join(packages)} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"{why}: apt-get failed ({done.stderr.strip()[-300:]}); {hint}")


def ensure_nginx() -> str:
    path = find_tool("nginx", "/usr/sbin")
    if not path:
        apt_install(["nginx-light"], "nginx (the stand-in upstream)")
        path = find_tool("nginx", "/usr/sbin")
    if not path:
        raise BenchError("nginx not found after install; apt-get install -y nginx-light")
    return path


def ensure_loadgen() -> Path:
    source = LOADGEN_SRC.read_bytes()
    binary = cache_dir() / f"loadgen-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    cc = find_tool("cc") or find_tool("gcc")
    if not cc:
        apt_install(["gcc", "libc6-dev"], "a C compiler (for the load generator)")
        cc = find_tool("cc") or find_tool("gcc")
    if not cc:
        raise BenchError("no C compiler found; apt-get install -y gcc libc6-dev")
    tmp = binary.with_suffix(".tmp")
    done = subprocess.run([cc, "-O2", "-o", str(tmp), str(LOADGEN_SRC)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"compiling {LOADGEN_SRC} failed:\n{done.stderr}")
    tmp.replace(binary)
    for stale in binary.parent.glob("loadgen-*"):
        if stale != binary:
            stale.unlink(missing_ok=True)
    return binary


def ensure_node() -> tuple[str, str]:
    if not find_tool("node"):
        apt_install(["nodejs"], "node (to run Portkey)")
    if not find_tool("npm"):  # NodeSource's nodejs ships npm; Debian's does not
        apt_install(["npm"], "npm (to install Portkey)")
    node, npm = find_tool("node"), find_tool("npm")
    if not (node and npm):
        raise BenchError("node/npm not found; apt-get install -y nodejs npm")
    return node, npm


def ensure_portkey(npm: str) -> Path:
    prefix = cache_dir() / f"portkey-{PORTKEY_VERSION}"
    entry = prefix / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if entry.exists():
        return entry
    log(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {prefix} ...")
    cmd = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix)]
    done = subprocess.run([*cmd, f"@portkey-ai/gateway@{PORTKEY_VERSION}"], capture_output=True, text=True)
    if done.returncode != 0 or not entry.exists():
        raise BenchError(
            f"npm could not install @portkey-ai/gateway@{PORTKEY_VERSION} into {prefix}:\n"
            f"{done.stderr.strip()[-800:]}\n(or run with --skip-portkey)"
        )
    return entry


def tool_version(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""


# --------------------------------------------------------------------------------------------------
# processes


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop(service: Service) -> None:
    """SIGTERM the service's process group, SIGKILL it after 5 s."""
    if service.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.proc.pid, signal.SIGTERM)
    try:
        service.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.proc.pid, signal.SIGKILL)
        service.proc.wait(timeout=5)


def start(stack: contextlib.ExitStack, name: str, cmd: Sequence[str], workdir: Path, **kw: Any) -> Service:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kw
        )
    service = Service(name, proc, log_path)
    stack.callback(stop, service)
    return service


def http_get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def wait_ready(service: Service, url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise BenchError(
                f"{service.name} exited with code {service.proc.returncode} before it was ready; "
                f"its log:\n{service.log_tail()}"
            )
        if http_get_status(url) == 200:
            return
        time.sleep(0.1)
    raise BenchError(f"{service.name} not ready at {url} after {timeout_s:.0f} s; its log:\n{service.log_tail()}")


def start_nginx(stack: contextlib.ExitStack, nginx: str, workdir: Path) -> tuple[Service, int]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, port))
    service = start(stack, "nginx", [nginx, "-p", str(workdir), "-c", str(conf), "-e", "stderr"], workdir)
    wait_ready(service, f"http://{LOOPBACK}:{port}/ready")
    return service, port


def nginx_config(workdir: Path, port: int) -> str:
    body = json.dumps(UPSTREAM_BODY, separators=(",", ":"))
    temp_paths = "\n".join(
        f"  {kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {workdir / "nginx.pid"};
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp_paths}
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {{
    listen {LOOPBACK}:{port};
    location = /ready {{ return 200 'ok'; }}
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""


def gateway_config(port: int, upstream_port: int, auth: str, state_path: Path) -> str:
    return f"""server: {{host: {LOOPBACK}, port: {port}, log_level: warning}}
auth: {{mode: {auth}}}
admin:
  tokens: [{{name: bench-operator, role: operator, token_env: {OPERATOR_TOKEN_ENV}}}]
state: {{backend: sqlite, path: "{state_path}"}}
targets:
  upstream: {{provider: openai, model: bench-model, base_url: "http://{LOOPBACK}:{upstream_port}/v1"}}
pools:
  bench: {{targets: {{upstream: 100}}}}
routes:
  bench: {{pool: bench}}
"""


def start_switchboard(
    stack: contextlib.ExitStack, opts: Options, workdir: Path, upstream_port: int, name: str, auth: str
) -> tuple[Service, int]:
    """One gateway process; ``auth`` is ``open`` (no client keys) or ``keys``."""
    module_file = REPO_ROOT / Path(*opts.gateway_module.split(".")) / "__main__.py"
    if opts.gateway_module == "services.gateway" and not module_file.exists():
        raise BenchError(f"{module_file} does not exist yet: the gateway has no `python -m` entry point")
    port = free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(gateway_config(port, upstream_port, auth, workdir / f"{name}.db"))
    cmd = [opts.python, "-m", opts.gateway_module, "--config", str(config)]
    service = start(stack, name, cmd, workdir, cwd=REPO_ROOT)
    wait_ready(service, f"http://{LOOPBACK}:{port}/ready")
    return service, port


def create_client_key(port: int, operator_token: str) -> str:
    """A client key with limits far above any rate measured here, so every request runs the limit checks."""
    spec = {"name": "bench", "owner": "perf", "tier": "paid", "rpm_limit": 10_000_000,
            "tpm_limit": 10_000_000_000, "reason": "bench: keys and limits on"}
    req = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/admin/keys", data=json.dumps(spec).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {operator_token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            key = json.loads(resp.read()).get("key", "")
    except (urllib.error.HTTPError, OSError, ValueError) as exc:
        raise BenchError(f"POST /admin/keys failed: {exc}") from None
    if not str(key).startswith("sk-sb-"):
        raise BenchError(f"POST /admin/keys returned no client key: {key!r}")
    return str(key)


def start_portkey(stack: contextlib.ExitStack, node: str, entry: Path, workdir: Path) -> tuple[Service, int]:
    port = free_port()
    preload = workdir / "loopback.cjs"
    preload.write_text(NODE_LOOPBACK_PRELOAD)
    cmd = [node, "-r", str(preload), str(entry), f"--port={port}", "--headless"]
    env = {**os.environ, "NODE_ENV": "production"}
    service = start(stack, "portkey", cmd, workdir, env=env)
    wait_ready(service, f"http://{LOOPBACK}:{port}/")
    return service, port


# --------------------------------------------------------------------------------------------------
# requests


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    headers: dict[str, str]
    pid: int  # the path's own process (nginx for direct): its CPU time is measured

    def raw_request(self) -> bytes:
        body = json.dumps(REQUEST_BODY).encode()
        lines = [
            "POST /v1/chat/completions HTTP/1.1",
            f"Host: {LOOPBACK}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def portkey_headers(upstream_port: int) -> dict[str, str]:
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://{LOOPBACK}:{upstream_port}/v1",
        "Authorization": "Bearer dummy",
    }


def post_once(target: Target, headers: dict[str, str]) -> tuple[int, bytes]:
    url = f"http://{LOOPBACK}:{target.port}/v1/chat/completions"
    headers = {"Content-Type": "application/json", **headers}
    req = urllib.request.Request(url, data=json.dumps(REQUEST_BODY).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError as exc:
        raise BenchError(f"{target.name}: request failed: {exc}") from None


def preflight(target: Target) -> dict[str, Any]:
    """One request by hand: the path must answer 200 with the upstream's chat.completion."""
    status, raw = post_once(target, target.headers)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    ok = isinstance(body, dict) and body.get("choices") and body.get("usage")
    if status != 200 or not ok:
        raise BenchError(f"{target.name}: expected 200 with a chat.completion, got {status}: {raw[:500]!r}")
    return {"status": status, "body_matches_upstream": body == UPSTREAM_BODY, "body": body}


def refused_without_key(target: Target) -> int:
    """The keys path must refuse a request that carries no key, or keys are not really on."""
    status, raw = post_once(target, {})
    if status != 401:
        raise BenchError(f"{target.name}: a request without a key got {status}, not 401: {raw[:300]!r}")
    return status


# --------------------------------------------------------------------------------------------------
# measuring


@dataclass(frozen=True)
class ProcSnapshot:
    """CPU seconds used so far by every process, and each one's parent.

    Per-process times are used because the aggregate counters in /proc/stat were seen to disagree with
    them on these virtual machines (fewer busy ticks than one process alone had used).
    """

    cpu: dict[int, float]
    parent: dict[int, int]

    @classmethod
    def take(cls) -> ProcSnapshot:
        ticks = os.sysconf("SC_CLK_TCK")
        cpu: dict[int, float] = {}
        parent: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                parent[pid] = int(fields[1])
                cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
        return cls(cpu, parent)

    def tree(self, root: int) -> list[int]:
        found = [root]
        for pid in found:
            found += [child for child, ppid in self.parent.items() if ppid == pid and child not in found]
        return found

    def cpu_since(self, before: ProcSnapshot, pids: Sequence[int] | None = None) -> float:
        """CPU seconds used since ``before`` by ``pids`` (every process still alive when None)."""
        chosen = self.cpu.keys() if pids is None else pids
        return sum(self.cpu.get(p, 0.0) - before.cpu.get(p, 0.0) for p in chosen)


def cpu_seconds(root: int) -> float:
    snap = ProcSnapshot.take()
    return sum(snap.cpu.get(p, 0.0) for p in snap.tree(root))


@dataclass
class Measurement:
    path: str
    rate: int
    phase: str
    duration_s: float
    measured: int = 0
    errors: int = 0
    error_detail: dict[str, int] = field(default_factory=dict)
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    send_lag_p99_ms: float = math.nan
    achieved_rps: float = 0.0
    sut_cpu_cores: float = 0.0  # CPU of the path's own process (gateway, or nginx for direct)
    cpu_ms_per_req: float = 0.0
    loadgen_cpu_cores: float = 0.0
    machine_busy_pct: float = 0.0  # every process on the machine, the load generator included
    max_conns_used: int = 0
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def read_samples(out_file: Path) -> tuple[list[float], list[float], dict[str, int]]:
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    for line in out_file.read_text().splitlines():
        lat_us, lag_us, status = line.split()
        lags.append(int(lag_us) / 1000)
        code = int(status)
        if 200 <= code < 300:
            latencies.append(int(lat_us) / 1000)
        else:
            key = TRANSPORT_FAILURES.get(code, f"http {code}")
            errors[key] = errors.get(key, 0) + 1
    return sorted(latencies), sorted(lags), errors


@dataclass(frozen=True)
class Runner:
    loadgen: Path
    workdir: Path
    opts: Options

    def measure(self, target: Target, rate: int, duration_s: float, phase: str) -> Measurement:
        req_file = self.workdir / f"request-{target.name}.http"
        req_file.write_bytes(target.raw_request())
        out_file = self.workdir / "samples.txt"
        cmd = [
            str(self.loadgen), "--port", str(target.port), "--rate", str(rate),
            "--duration", str(duration_s), "--warmup", str(self.opts.warmup_s),
            "--request", str(req_file), "--out", str(out_file),
            "--max-conns", str(self.opts.max_conns), "--timeout-ms", str(int(self.opts.timeout_s * 1000)),
        ]  # fmt: skip
        before = ProcSnapshot.take()
        limit = self.opts.warmup_s + duration_s + self.opts.timeout_s + 30
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise BenchError(f"load generator did not finish within {limit:.0f} s") from None
        after = ProcSnapshot.take()
        settle(target)
        if done.returncode != 0:
            raise BenchError(f"load generator failed ({done.returncode}): {done.stderr.strip()}")
        summary = json.loads(done.stdout)
        wall = summary["wall_s"]
        m = Measurement(target.name, rate, phase, duration_s)
        fill_latencies(m, out_file)
        m.achieved_rps = round(m.measured / duration_s, 1)
        sut_cpu = after.cpu_since(before, after.tree(target.pid))
        m.sut_cpu_cores = round(sut_cpu / wall, 2)
        m.cpu_ms_per_req = round(sut_cpu * 1000 / max(1, summary["sent"]), 3)
        m.loadgen_cpu_cores = round(summary["cpu_s"] / wall, 2)
        m.max_conns_used = summary["max_conns_used"]
        machine_cpu = after.cpu_since(before) + summary["cpu_s"]  # the generator has exited by now
        m.machine_busy_pct = round(100 * machine_cpu / (wall * len(os.sched_getaffinity(0))), 1)
        return m


def fill_latencies(m: Measurement, out_file: Path) -> None:
    latencies, lags, errors = read_samples(out_file)
    m.measured = len(latencies) + sum(errors.values())
    m.errors = sum(errors.values())
    m.error_detail = errors
    m.p50_ms = round(percentile(latencies, 50), 3)
    m.p90_ms = round(percentile(latencies, 90), 3)
    m.p99_ms = round(percentile(latencies, 99), 3)
    m.max_ms = round(latencies[-1], 3) if latencies else math.nan
    m.send_lag_p99_ms = round(percentile(lags, 99), 3)


def set_added(m: Measurement, baseline: tuple[float, float]) -> Measurement:
    m.added_p50_ms = round(m.p50_ms - baseline[0], 3)
    m.added_p99_ms = round(m.p99_ms - baseline[1], 3)
    return m


def baseline_of(directs: Sequence[Measurement]) -> tuple[float, float]:
    """Reference direct latency at one rate: the mean of the direct runs around the gateway runs."""
    return (
        sum(d.p50_ms for d in directs) / len(directs),
        sum(d.p99_ms for d in directs) / len(directs),
    )


def compare(runner: Runner, targets: dict[str, Target], rate: int) -> list[Measurement]:
    """direct, each gateway, direct again, at one rate; gateways' added latency against the direct mean."""
    d = runner.opts.duration_s
    first = runner.measure(targets["direct"], rate, d, "compare")
    log(f"  {'direct':<16} {rate:>5}/s  {row_summary(first)}")
    gateways = []
    for name in (n for n in PATHS[1:] if n in targets):
        gateways.append(runner.measure(targets[name], rate, d, "compare"))
        log(f"  {name:<16} {rate:>5}/s  {row_summary(gateways[-1])}")
    again = runner.measure(targets["direct"], rate, d, "compare")
    log(f"  {'direct':<16} {rate:>5}/s  {row_summary(again)}")
    base = baseline_of([first, again])
    for m in (first, again):
        set_added(m, base)
    return [first, *(set_added(g, base) for g in gateways), again]


def settle(target: Target, timeout_s: float = 10.0) -> None:
    """Wait until the system under test is idle (a backlog from an overloaded run is worked off)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds(target.pid)
        time.sleep(0.25)
        if cpu_seconds(target.pid) - before < 0.02:
            return


def prime(runner: Runner, targets: dict[str, Target]) -> None:
    """A short unmeasured run per path, so connection pools and node's JIT are warm before measuring."""
    for target in targets.values():
        runner.measure(target, 200, 2.0, "prime")


def row_summary(m: Measurement) -> str:
    return f"p50 {m.p50_ms:.2f} ms  p99 {m.p99_ms:.2f} ms  errors {m.errors}  sut_cpu {m.sut_cpu_cores}"


# --------------------------------------------------------------------------------------------------
# max sustained rate


@dataclass
class SearchResult:
    path: str
    max_rate: int = 0
    lowest_failure: int | None = None
    stopped_by: str = "rate cap reached"
    steps: list[Measurement] = field(default_factory=list)


def passes(m: Measurement, threshold_ms: float) -> bool:
    return m.errors == 0 and m.added_p99_ms is not None and m.added_p99_ms < threshold_ms


def marginal(m: Measurement, threshold_ms: float) -> bool:
    return m.errors == 0 and m.added_p99_ms is not None and m.added_p99_ms < 2 * threshold_ms


def search_rates(opts: Options) -> Iterator[int]:
    rate = opts.search_start
    while rate <= opts.search_max:
        yield rate
        rate += opts.search_step


def search(runner: Runner, targets: dict[str, Target], name: str, deadline: float) -> SearchResult:
    """Step the rate up until p99 added latency reaches the threshold or an error occurs, then try
    once halfway between the last rate that passed and the one that failed."""
    result = SearchResult(name)
    for rate in search_rates(runner.opts):
        if time.monotonic() > deadline:
            result.stopped_by = "time budget reached"
            return result
        if not try_rate(runner, targets, name, rate, result):
            break
        result.max_rate = rate
    if result.lowest_failure is None or time.monotonic() > deadline:
        return result
    middle = round((result.max_rate + result.lowest_failure) / 100) * 50
    if result.max_rate < middle < result.lowest_failure and try_rate(runner, targets, name, middle, result):
        result.max_rate = middle
    return result


def try_rate(runner: Runner, targets: dict[str, Target], name: str, rate: int, result: SearchResult) -> bool:
    """One search step; a narrow failure (no errors, under twice the threshold) is measured once more,
    because the machine is noisy. Records the steps and the lowest failing rate in ``result``."""
    threshold = runner.opts.threshold_ms
    step = search_step(runner, targets, name, rate)
    result.steps += step
    if not passes(step[-1], threshold) and marginal(step[-1], threshold):
        step = search_step(runner, targets, name, rate)
        result.steps += step
    if passes(step[-1], threshold):
        return True
    result.lowest_failure = min(rate, result.lowest_failure or rate)
    result.stopped_by = f"failed at {result.lowest_failure}/s"
    return False


def search_step(runner: Runner, targets: dict[str, Target], name: str, rate: int) -> list[Measurement]:
    d = runner.opts.search_duration_s
    direct = runner.measure(targets["direct"], rate, d, f"search-{name}")
    gw = set_added(runner.measure(targets[name], rate, d, f"search-{name}"), baseline_of([direct]))
    verdict = "ok" if passes(gw, runner.opts.threshold_ms) else "FAIL"
    log(f"  search {name:<16} {rate:>5}/s  added p99 {gw.added_p99_ms:.2f} ms  errors {gw.errors}  {verdict}")
    return [direct, gw]


# --------------------------------------------------------------------------------------------------
# report


def fmt(value: float | None, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}.2f}"


def table(rows: Sequence[Measurement]) -> str:
    head = (
        f"{'path':<18}{'rate':>6}{'p50_ms':>9}{'p99_ms':>9}{'added_p50_ms':>14}{'added_p99_ms':>14}"
        f"{'errors':>8}{'cpu_ms/req':>12}{'gen_cpu':>9}{'busy%':>7}"
    )
    lines = [head]
    for m in rows:
        lines.append(
            f"{m.path:<18}{m.rate:>6}{fmt(m.p50_ms, 9)}{fmt(m.p99_ms, 9)}{fmt(m.added_p50_ms, 14)}"
            f"{fmt(m.added_p99_ms, 14)}{m.errors:>8}{m.cpu_ms_per_req:>12.3f}{m.loadgen_cpu_cores:>9.2f}"
            f"{m.machine_busy_pct:>7.0f}"
        )
    return "\n".join(lines)


LEGEND = (
    "added_*: minus the mean of the two direct runs at that rate (negative or tiny: noise). "
    "cpu_ms/req: CPU of the path's own process (gateway; nginx for direct) per request. "
    "gen_cpu: load generator's cores. busy%: whole machine (every process, other users' too). "
    "switchboard: auth open, no client keys; switchboard-keys: auth keys, every request carries a client key "
    "with rpm and tpm limits (looked up, metered and checked)."
)
KEYS_GOAL_MS = 0.1


def keys_cost(rows: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Keys on minus keys off at each rate; the two runs are adjacent in the same comparison round."""
    costs = []
    for rate in dict.fromkeys(m.rate for m in rows):
        by_path = {m.path: m for m in rows if m.rate == rate}
        off, on = by_path.get("switchboard"), by_path.get("switchboard-keys")
        if off and on:
            costs.append({
                "rate": rate,
                "p50_ms": round(on.p50_ms - off.p50_ms, 3),
                "p99_ms": round(on.p99_ms - off.p99_ms, 3),
                "cpu_ms_per_req": round(on.cpu_ms_per_req - off.cpu_ms_per_req, 3),
            })
    return costs


def keys_line(costs: Sequence[dict[str, Any]]) -> str:
    parts = [f"at {c['rate']}/s {c['p50_ms']:+.3f} ms p50, {c['p99_ms']:+.3f} ms p99, "
             f"{c['cpu_ms_per_req']:+.3f} cpu_ms/req" for c in costs]
    return f"keys on vs off (goal: at most +{KEYS_GOAL_MS:g} ms at p50): " + "; ".join(parts)


def sustained_line(searches: Sequence[SearchResult], threshold_ms: float) -> str:
    parts = []
    for s in searches:
        if s.max_rate:
            shown = f"{s.max_rate}/s"
        else:
            shown = f"<{s.lowest_failure}/s" if s.lowest_failure else "not measured"
        parts.append(f"{s.path} {shown} ({s.stopped_by})")
    return f"max sustained rate (p99 added < {threshold_ms:g} ms, 0 errors): " + ", ".join(parts)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "hostname": socket.gethostname(),
    }


def git_revision() -> str:
    done = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def no_nan(value: Any) -> Any:
    """NaN (no successful sample) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nan(v) for v in value]
    return value


def write_results(results_dir: Path, report: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(no_nan(report), indent=2, default=str, allow_nan=False) + "\n"
    path = results_dir / f"gateway-{stamp}.json"
    path.write_text(text)
    (results_dir / "gateway-latest.json").write_text(text)
    return path


# --------------------------------------------------------------------------------------------------
# main


@dataclass
class Tools:
    nginx: str
    loadgen: Path
    node: str | None = None
    portkey_entry: Path | None = None


def prepare_tools(opts: Options) -> Tools:
    tools = Tools(nginx=ensure_nginx(), loadgen=ensure_loadgen())
    if not opts.skip_portkey:
        node, npm = ensure_node()
        tools.node, tools.portkey_entry = node, ensure_portkey(npm)
    return tools


def versions(opts: Options, tools: Tools) -> dict[str, str]:
    out = {
        "python_gateway": tool_version([opts.python, "--version"]),
        "switchboard_git": git_revision(),
        "nginx": tool_version([tools.nginx, "-v"]),
        "loadgen": tools.loadgen.name,
    }
    if tools.node:
        out["node"] = tool_version([tools.node, "--version"])
        out["portkey"] = PORTKEY_VERSION
    return out


def start_all(stack: contextlib.ExitStack, opts: Options, tools: Tools, workdir: Path) -> dict[str, Target]:
    nginx, upstream = start_nginx(stack, tools.nginx, workdir)
    targets = {"direct": Target("direct", upstream, {}, nginx.proc.pid)}
    log(f"nginx upstream on {LOOPBACK}:{upstream}")
    operator_token = "bench-" + os.urandom(16).hex()
    os.environ[OPERATOR_TOKEN_ENV] = operator_token  # read by the gateways this process starts
    sb, sb_port = start_switchboard(stack, opts, workdir, upstream, "switchboard", "open")
    targets["switchboard"] = Target("switchboard", sb_port, {}, sb.proc.pid)
    log(f"switchboard (auth open) on {LOOPBACK}:{sb_port} ({opts.python} -m {opts.gateway_module})")
    sk, sk_port = start_switchboard(stack, opts, workdir, upstream, "switchboard-keys", "keys")
    key = create_client_key(sk_port, operator_token)
    targets["switchboard-keys"] = Target("switchboard-keys", sk_port, {"Authorization": f"Bearer {key}"},
                                         sk.proc.pid)
    log(f"switchboard-keys (auth keys, one key with rpm and tpm limits) on {LOOPBACK}:{sk_port}")
    if tools.node and tools.portkey_entry:
        pk, pk_port = start_portkey(stack, tools.node, tools.portkey_entry, workdir)
        targets["portkey"] = Target("portkey", pk_port, portkey_headers(upstream), pk.proc.pid)
        log(f"portkey {PORTKEY_VERSION} on {LOOPBACK}:{pk_port}")
    return targets


def run_benchmark(opts: Options, tools: Tools, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    targets = start_all(stack, opts, tools, workdir)
    checks = {name: preflight(t) for name, t in targets.items()}
    for name, check in checks.items():
        log(f"preflight {name}: 200, body identical to upstream's: {check['body_matches_upstream']}")
    checks["switchboard-keys"]["without_key"] = refused_without_key(targets["switchboard-keys"])
    log("preflight switchboard-keys: 401 without a key")
    runner = Runner(tools.loadgen, workdir, opts)
    prime(runner, targets)
    rows: list[Measurement] = []
    for rate in opts.rates:
        log(f"comparing at {rate}/s ({opts.warmup_s:g} s warm-up + {opts.duration_s:g} s per run)")
        rows += compare(runner, targets, rate)
    log(f"max-rate search (budget {opts.search_budget_s:g} s)")
    deadline = time.monotonic() + opts.search_budget_s
    searches = []
    gateways = [n for n in SEARCHED if n in targets]
    for i, name in enumerate(gateways):
        share = (deadline - time.monotonic()) / (len(gateways) - i)
        searches.append(search(runner, targets, name, time.monotonic() + share))
    return {"checks": checks, "rows": rows, "searches": searches}


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_options(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where a parent shell ignores it
    started, machine = time.monotonic(), machine_info()
    try:
        tools = prepare_tools(opts)
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, contextlib.ExitStack() as stack:
            result = run_benchmark(opts, tools, Path(tmp), stack)
    except BenchError as exc:
        print(f"bench_gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_gateway: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    print()
    print(table(result["rows"]))
    print(textwrap.fill(LEGEND, 110))
    print()
    print(keys_line(keys_cost(result["rows"])))
    print(sustained_line(result["searches"], opts.threshold_ms))
    report = {
        "benchmark": "gateway-overhead",
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": machine,
        "versions": versions(opts, tools),
        "options": asdict(opts),
        "preflight": result["checks"],
        "measurements": [asdict(m) for m in result["rows"]],
        "keys_on_vs_off": keys_cost(result["rows"]),
        "max_sustained": [asdict(s) for s in result["searches"]],
    }
    path = write_results(opts.results_dir, report)
    print(f"\nresults: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
