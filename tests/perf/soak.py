"""Soak: the gateway as a real process, at a steady rate for minutes, through client keys and limits,
against stand-in upstreams that fail at random.

What runs (every part its own process, all on loopback):

* three stand-in upstreams (``tests/standins``: two OpenAI, one Anthropic), each drawing a random fault
  for every completion request from ``FAULT_MIX``: 429 with retry-after, 500, 529 (Anthropic) or 503
  (OpenAI) with retry-after, connection cut before the first byte and after the first chunks, stalls
  and slow first bytes past the gateway's timeouts, garbage bodies, slow streams;
* the gateway, ``python -m services.gateway --config <generated yaml>`` with ``auth: {mode: keys}``: two
  client keys created through ``POST /admin/keys``, a ``main`` key whose limits the load never reaches
  and a ``small`` key (``small_key_rpm``) whose requests-per-minute limit it does reach, so 429s with
  retry-after are part of the mix; a few requests carry no key (401);
* an asyncio client (aiohttp, this file with ``--role client``) sending open-loop at the target rate,
  streams and non-streams mixed, each request bounded by a deadline.

Meanwhile the gateway's RSS (``/proc/PID/status`` VmRSS) is sampled every second. It prints a table of
checks (every request answered, every failure a well-formed OpenAI error or in-band stream error event,
no ``[DONE]`` after an error event, 429s carry retry-after, the small key's limit was hit, RSS growth from
minute 2 to the end under 10%), counts by status and by outcome, and writes them all to
``tests/perf/results/soak-latest.json``. Exit status 1 when a check fails, 2 when the soak cannot run.

    python tests/perf/soak.py                 # ten minutes at 200 requests/s
    python tests/perf/soak.py --minutes 2     # or SOAK_MINUTES=2
    python tests/perf/soak.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.perf.bench_gateway import (  # noqa: E402
    LOOPBACK,
    RESULTS_DIR,
    BenchError,
    Service,
    free_port,
    git_revision,
    machine_info,
    no_nan,
    percentile,
    start,
    wait_ready,
)

OPERATOR_TOKEN_ENV = "SOAK_OPERATOR_TOKEN"
UPSTREAM_KEY_ENV = "SOAK_UPSTREAM_KEY"
SMALL_KEY_SHARE = 0.005  # about 60 requests a minute at 200/s


def small_key_rpm(rate: float, duration_s: float) -> int:
    """Half of what the small key is sent in its first minute (30 at 200/s), so its limit is hit even
    in a run shorter than a minute."""
    return max(1, min(30, int(SMALL_KEY_SHARE * rate * min(60.0, duration_s) / 2)))

NO_KEY_SHARE = 0.002
STREAM_SHARE = 0.5
CLAUDE_SHARE = 0.3  # requests naming the route whose first pool is the Anthropic stand-in
RSS_GROWTH_GOAL_PCT = 10.0
RSS_BASELINE_S = 120.0  # "minute 2"; runs under twice that take their half-time instead
RATE_TOLERANCE = 0.95  # the client must really send at 95% of the target rate or more
STANDIN_RESET_S = 10.0  # stand-ins record every request; forget them this often (their memory, not ours)

# Gateway timeouts the faults are sized against: a stall or slow first byte outlasts them.
TIMEOUTS = {"connect_s": 1, "ttft_s": 1.5, "stall_s": 1, "total_s": 8}
SLOW_S = 3.0


def _fault_mix(kind: str) -> list[tuple[str, float, Any]]:
    """(name, probability, Fault) per completion request; the rest are normal answers."""
    from tests.standins import Fault

    overloaded = Fault.status(529, retry_after=1) if kind == "anthropic" else Fault.status(503, retry_after=1)
    return [
        ("429_retry_after", 0.004, Fault.status(429, retry_after=1)),
        ("500", 0.03, Fault.status(500)),
        ("overloaded_529_or_503", 0.01, overloaded),
        ("cut_before_first_byte", 0.02, Fault.cut(0)),  # non-stream: no response; stream: after headers
        ("cut_after_chunks", 0.01, Fault.cut(2)),  # streams: after two content chunks
        ("stall", 0.01, Fault.stall(1, SLOW_S)),  # streams: silent past stall_s after one chunk
        ("slow_first_byte", 0.01, Fault.slow_first_byte(SLOW_S)),  # past ttft_s
        ("garbage", 0.02, Fault.malformed()),
        ("slow_stream", 0.026, Fault.delay(0.02)),  # slow but within every timeout
    ]


FAULT_MIX_DOC = {name: p for name, p, _ in _fault_mix("openai")}


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class Options:
    minutes: float
    rate: float
    auth: str
    deadline_s: float
    seed: int
    python: str
    results_dir: Path


def parse_options(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 10),
                   help="how long the load runs (default 10, or env SOAK_MINUTES)")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    p.add_argument("--auth", choices=["keys", "open"], default="keys",
                   help="keys: client keys and limits (default); open: no keys, for comparison")
    p.add_argument("--deadline", type=float, default=30.0, help="seconds a request may take before it is hung")
    p.add_argument("--seed", type=int, default=int(time.time()), help="random seed (faults and request mix)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the gateway and stand-ins")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--role", choices=["main", "standin", "client"], default="main", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.rate <= 0:
        p.error("--minutes and --rate must be positive")
    opts = Options(a.minutes, a.rate, a.auth, a.deadline, a.seed, a.python, a.results_dir)
    return a, opts


# --------------------------------------------------------------------------------------------------
# role "standin": one stand-in upstream drawing a random fault per completion request


def run_standin(kind: str, name: str, seed: int, stats_path: Path) -> int:
    from tests.standins import Fault, Standin

    rng = random.Random(seed)
    mix = _fault_mix(kind)
    drawn: Counter[str] = Counter()

    def draw() -> Any:
        x = rng.random()
        for fault_name, p, fault in mix:
            if x < p:
                drawn[fault_name] += 1
                return fault
            x -= p
        drawn["ok"] += 1
        return Fault.ok()

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    reply = f"Soak reply from {name}: one two three four five six seven"
    standin = Standin(kind=kind, name=name, reply=reply).start()  # type: ignore[arg-type]
    standin.set_default(draw)
    print(json.dumps({"name": name, "port": standin.port}), flush=True)
    while not done.wait(STANDIN_RESET_S):
        standin.reset()  # reset also clears the default: set it again at once
        standin.set_default(draw)
    standin.stop()
    stats_path.write_text(json.dumps(dict(drawn)))
    return 0


# --------------------------------------------------------------------------------------------------
# role "client": open-loop load, every answer checked


ERROR_FIELDS = ("message", "type", "param", "code")
# Outcomes that break a check; everything else is a success or a well-formed failure.
UNANSWERED = ("transport_error", "hung")
MALFORMED_FAILURES = ("bad_error_body", "ok_status_bad_body", "stream_not_sse", "stream_garbage_chunk",
                      "stream_bad_error_event", "stream_truncated", "stream_cut")
DONE_AFTER_ERROR = "stream_done_after_error"
NO_RETRY_AFTER = "429_without_retry_after"


def well_formed_error(obj: Any) -> bool:
    """OpenAI's error shape: {"error": {"message": str, "type": str, "param": ..., "code": ...}}."""
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), dict):
        return False
    err = obj["error"]
    return all(k in err for k in ERROR_FIELDS) and isinstance(err["message"], str) and isinstance(err["type"], str)


@dataclass
class Tally:
    """Everything the client saw; one instance per run, filled from one event loop."""

    planned: int = 0
    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_key: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {"json_ok": [], "stream_ok": []})
    send_lag_ms: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_send: float = 0.0

    def record(self, key: str, status: str, outcome: str, detail: str = "") -> None:
        self.by_status[status] += 1
        self.by_outcome[outcome] += 1
        self.by_key.setdefault(key, Counter())[status] += 1
        if detail and (outcome in UNANSWERED or outcome in MALFORMED_FAILURES or outcome == DONE_AFTER_ERROR
                       or outcome == NO_RETRY_AFTER):
            examples = self.examples.setdefault(outcome, [])
            if len(examples) < 5:
                examples.append(detail[:600])

    def answered(self) -> int:
        return sum(self.by_outcome.values()) - sum(self.by_outcome[o] for o in UNANSWERED)


def classify_json(status: int, raw: bytes, headers: Any) -> tuple[str, str]:
    """Outcome of a non-SSE answer, and a detail for the examples."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if status == 200:
        ok = isinstance(body, dict) and isinstance(body.get("choices"), list) and body["choices"]
        return ("json_ok", "") if ok else ("ok_status_bad_body", f"200 {raw[:300]!r}")
    if not well_formed_error(body):
        return "bad_error_body", f"{status} {raw[:300]!r}"
    if status == 429 and not headers.get("retry-after"):
        return NO_RETRY_AFTER, f"429 {raw[:300]!r}"
    return f"error_{status}", ""


async def read_stream(resp: Any) -> tuple[str, str, float | None]:
    """Read an SSE answer to its end: (outcome, detail, ms to the first data line)."""
    import aiohttp

    started = time.perf_counter()
    first_ms: float | None = None
    saw_error = saw_done = False
    events = 0
    try:
        async for raw_line in resp.content:
            line = raw_line.rstrip(b"\r\n")
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            events += 1
            if first_ms is None:
                first_ms = (time.perf_counter() - started) * 1000
            if data == b"[DONE]":
                if saw_error:
                    return DONE_AFTER_ERROR, f"[DONE] after an error event ({events} events)", first_ms
                saw_done = True
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                return "stream_garbage_chunk", f"event {events}: {data[:300]!r}", first_ms
            if saw_done:
                return "stream_truncated", f"data after [DONE]: {data[:300]!r}", first_ms
            if isinstance(obj, dict) and "error" in obj:
                if not well_formed_error(obj):
                    return "stream_bad_error_event", f"{data[:300]!r}", first_ms
                saw_error = True
            elif saw_error:
                return "stream_truncated", f"data after an error event: {data[:300]!r}", first_ms
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        what = "after an error event" if saw_error else f"after {events} events, no error event"
        return "stream_cut", f"connection ended mid-stream {what}: {exc!r}", first_ms
    if saw_error:
        return "stream_error_event", "", first_ms
    if saw_done:
        return "stream_ok", "", first_ms
    return "stream_truncated", f"ended after {events} events without [DONE] or an error event", first_ms


async def one_request(session: Any, plan: dict[str, Any], tally: Tally, rng: random.Random) -> None:
    import aiohttp

    stream = rng.random() < STREAM_SHARE
    route = "claude" if rng.random() < CLAUDE_SHARE else "soak"
    pick = rng.random()
    keys = plan["keys"]
    if not keys:
        key_label = "open"
    elif pick < NO_KEY_SHARE:
        key_label = "none"
    elif pick < NO_KEY_SHARE + SMALL_KEY_SHARE:
        key_label = "small"
    else:
        key_label = "main"
    headers = {"authorization": f"Bearer {keys[key_label]}"} if key_label in keys else {}
    body: dict[str, Any] = {"model": route, "messages": [{"role": "user", "content": "soak: say something"}],
                            "max_tokens": 32, "stream": stream}
    if stream and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(plan["deadline_s"]):
            async with session.post(plan["url"], json=body, headers=headers) as resp:
                status = str(resp.status)
                is_sse = resp.headers.get("content-type", "").startswith("text/event-stream")
                if stream and resp.status == 200 and is_sse:
                    outcome, detail, _ = await read_stream(resp)
                elif stream and resp.status == 200:
                    outcome, detail = "stream_not_sse", f"content-type {resp.headers.get('content-type')!r}"
                else:
                    outcome, detail = classify_json(resp.status, await resp.read(), resp.headers)
    except TimeoutError:
        status, outcome, detail = "none", "hung", f"{route} stream={stream}: no answer within {plan['deadline_s']} s"
    except (aiohttp.ClientError, OSError) as exc:
        status, outcome, detail = "none", "transport_error", f"{route} stream={stream}: {exc!r}"
    if outcome in ("json_ok", "stream_ok"):
        tally.latency_ms[outcome].append((time.perf_counter() - started) * 1000)
    tally.record(key_label, status, outcome, detail)


async def drive(plan: dict[str, Any]) -> Tally:
    """Request i goes out at start + i / rate whatever happened to earlier ones (open loop)."""
    import aiohttp

    rng = random.Random(plan["seed"])
    tally = Tally(planned=int(plan["rate"] * plan["duration_s"]))
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        t0 = loop.time() + 0.2
        next_report = t0 + 10
        for i in range(tally.planned):
            due = t0 + i / plan["rate"]
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            now = loop.time()
            tally.send_lag_ms.append((now - due) * 1000)
            task = loop.create_task(one_request(session, plan, tally, rng))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tally.sent += 1
            tally.first_send = tally.first_send or now
            tally.last_send = now
            if now >= next_report:
                next_report += 10
                done = sum(tally.by_outcome.values())
                print(f"[soak-client] t={now - t0:5.0f}s sent {tally.sent} answered {done} in flight {len(pending)}",
                      file=sys.stderr, flush=True)
        if pending:  # every request has its own deadline; this bound only guards against a bug here
            await asyncio.wait(pending, timeout=plan["deadline_s"] + 10)
        for task in list(pending):
            task.cancel()
            tally.record("unknown", "none", "hung", "still pending after its deadline (client-side bound)")
    return tally


def run_client(plan_path: Path, out_path: Path) -> int:
    import uvloop

    plan = json.loads(plan_path.read_text())
    tally = uvloop.run(drive(plan))
    result = {**vars(tally), "by_status": dict(tally.by_status), "by_outcome": dict(tally.by_outcome),
              "by_key": {k: dict(v) for k, v in tally.by_key.items()}}  # asdict() would garble the Counters
    out_path.write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------------
# role "main": start everything, sample RSS, check, report


def gateway_config(port: int, ups: dict[str, int], auth: str, state_path: Path) -> str:
    timeouts = json.dumps(TIMEOUTS).replace('"', "")
    return f"""server: {{host: {LOOPBACK}, port: {port}, log_level: warning}}
auth: {{mode: {auth}}}
admin:
  tokens: [{{name: soak-operator, role: operator, token_env: {OPERATOR_TOKEN_ENV}}}]
state: {{backend: sqlite, path: "{state_path}"}}
health: {{ema_alpha: 0.3, error_window_s: 30, breaker: {{error_rate_threshold: 0.5, min_requests: 20, cooldown_s: 2}}}}
retry: {{max_retries: 1, backoff_base_s: 0.02, backoff_max_s: 0.1, budget_s: 0.3}}
cooldowns: {{rate_limit_default_s: 1, rate_limit_min_s: 0.5, rate_limit_max_s: 2, auth_s: 5}}
targets:
  soak-a: {{provider: openai, model: soak-a, base_url: "http://{LOOPBACK}:{ups['soak-a']}/v1",
           api_key_env: {UPSTREAM_KEY_ENV}, timeouts: {timeouts}}}
  soak-b: {{provider: openai, model: soak-b, base_url: "http://{LOOPBACK}:{ups['soak-b']}/v1",
           api_key_env: {UPSTREAM_KEY_ENV}, timeouts: {timeouts}}}
  soak-claude: {{provider: anthropic, model: soak-claude, base_url: "http://{LOOPBACK}:{ups['soak-claude']}",
                api_key_env: {UPSTREAM_KEY_ENV}, timeouts: {timeouts}}}
pools:
  openai: {{targets: {{soak-a: 50, soak-b: 50}}}}
  anthropic: {{targets: {{soak-claude: 100}}}}
routes:
  soak: {{pool: openai, fallback: [anthropic]}}
  claude: {{pool: anthropic, fallback: [openai]}}
"""


def start_standins(stack: contextlib.ExitStack, opts: Options, workdir: Path) -> dict[str, int]:
    ports: dict[str, int] = {}
    for i, (name, kind) in enumerate((("soak-a", "openai"), ("soak-b", "openai"), ("soak-claude", "anthropic"))):
        cmd = [opts.python, str(Path(__file__)), "--role", "standin", "--kind", kind, "--name", name,
               "--seed", str(opts.seed + i + 1), "--out", str(workdir / f"{name}-faults.json")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
                                start_new_session=True)
        stack.callback(stop_process, proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        try:
            ports[name] = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            raise BenchError(f"stand-in {name} did not start: {line}{proc.stdout.read()[-1500:]}") from None
        threading.Thread(target=drain, args=(proc, workdir / f"{name}.log"), daemon=True).start()
    return ports


def drain(proc: subprocess.Popen[str], path: Path) -> None:
    assert proc.stdout is not None
    with path.open("w") as out:
        for line in proc.stdout:
            out.write(line)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def admin_post(url: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        with contextlib.suppress(ValueError):
            return int(exc.code), json.loads(raw)
        return int(exc.code), {"raw": raw[:500].decode(errors="replace")}


def create_keys(gateway_url: str, token: str, small_rpm: int) -> dict[str, str]:
    """The load's two client keys, through the admin API: one with room to spare, one that is too small."""
    specs = {
        "main": {"name": "soak-main", "owner": "perf", "tier": "paid", "rpm_limit": 10_000_000,
                 "tpm_limit": 10_000_000_000, "reason": "soak: the load's key, limits out of reach"},
        "small": {"name": "soak-small", "owner": "perf", "tier": "free", "rpm_limit": small_rpm,
                  "reason": "soak: a key whose rpm limit the load reaches"},
    }
    keys = {}
    for label, spec in specs.items():
        status, body = admin_post(gateway_url + "/admin/keys", token, spec)
        if status != 201 or not str(body.get("key", "")).startswith("sk-sb-"):
            raise BenchError(f"POST /admin/keys for the {label} key answered {status}: {json.dumps(body)[:500]}")
        keys[label] = body["key"]
    return keys


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


@dataclass
class RssSamples:
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the load began, KiB)

    def at(self, t: float) -> int | None:
        """The sample closest to ``t``."""
        if not self.samples:
            return None
        return min(self.samples, key=lambda s: abs(s[0] - t))[1]


def watch(proc: subprocess.Popen[Any], gateway_pid: int, limit_s: float) -> tuple[RssSamples, bool]:
    """Sample the gateway's RSS every second until the client exits; False if it overran ``limit_s``."""
    rss = RssSamples()
    began = time.monotonic()
    next_log = began + 30
    while proc.poll() is None:
        now = time.monotonic()
        if now - began > limit_s:
            return rss, False
        value = rss_kib(gateway_pid)
        if value is not None:
            rss.samples.append((round(now - began, 1), value))
        if now >= next_log and value is not None:
            next_log += 30
            log(f"t={now - began:4.0f}s gateway RSS {value / 1024:.1f} MiB")
        time.sleep(1.0)
    value = rss_kib(gateway_pid)
    if value is not None:
        rss.samples.append((round(time.monotonic() - began, 1), value))
    return rss, True


@dataclass
class Check:
    name: str
    passed: bool
    figure: str


def evaluate(tally: dict[str, Any], rss: RssSamples, opts: Options, duration_s: float,
             gateway_alive: bool, keys: dict[str, str]) -> tuple[list[Check], dict[str, Any]]:
    outcomes: Counter[str] = Counter(tally["by_outcome"])
    answered = sum(outcomes.values()) - sum(outcomes[o] for o in UNANSWERED)
    malformed = {o: outcomes[o] for o in MALFORMED_FAILURES if outcomes[o]}
    span = tally["last_send"] - tally["first_send"]
    achieved = (tally["sent"] - 1) / span if span > 0 else 0.0
    baseline_t = RSS_BASELINE_S if duration_s >= 2 * RSS_BASELINE_S else duration_s / 2
    base, end = rss.at(baseline_t), (rss.samples[-1][1] if rss.samples else None)
    growth = 100 * (end - base) / base if base and end else None
    figures = {
        "planned": tally["planned"], "sent": tally["sent"], "answered": answered,
        "achieved_rate": round(achieved, 1), "send_lag_p99_ms": round(percentile(sorted(tally["send_lag_ms"]), 99), 1),
        "rss_start_mib": round(rss.samples[0][1] / 1024, 1) if rss.samples else None,
        "rss_baseline_at_s": baseline_t, "rss_baseline_mib": round(base / 1024, 1) if base else None,
        "rss_end_mib": round(end / 1024, 1) if end else None,
        "rss_max_mib": round(max(s[1] for s in rss.samples) / 1024, 1) if rss.samples else None,
        "rss_growth_pct": round(growth, 2) if growth is not None else None,
    }
    checks = [
        Check("load sent at the target rate",
              achieved >= RATE_TOLERANCE * opts.rate and tally["sent"] == tally["planned"],
              f"{tally['sent']}/{tally['planned']} sent at {achieved:.1f}/s (target {opts.rate:g}/s)"),
        Check("every request answered (sent == received)", answered == tally["sent"],
              f"sent {tally['sent']}, received {answered}, transport errors {outcomes['transport_error']}, "
              f"hung past {opts.deadline_s:g} s {outcomes['hung']}"),
        Check("every failure well-formed (JSON error or in-band event)", not malformed,
              ", ".join(f"{k} {v}" for k, v in malformed.items()) or "0 malformed"),
        Check("no [DONE] after an error event", outcomes[DONE_AFTER_ERROR] == 0, f"{outcomes[DONE_AFTER_ERROR]}"),
        Check("every 429 carries retry-after", outcomes[NO_RETRY_AFTER] == 0,
              f"{tally['by_status'].get('429', 0)} 429s, {outcomes[NO_RETRY_AFTER]} without retry-after"),
        Check(f"gateway RSS growth < {RSS_GROWTH_GOAL_PCT:g}% (t={baseline_t:g}s to end)",
              growth is not None and growth < RSS_GROWTH_GOAL_PCT,
              f"{figures['rss_baseline_mib']} -> {figures['rss_end_mib']} MiB ({figures['rss_growth_pct']}%)"),
        Check("gateway still running at the end", gateway_alive, "alive" if gateway_alive else "exited"),
    ]
    if keys:
        small = tally["by_key"].get("small", {})
        none = tally["by_key"].get("none", {})
        rpm = small_key_rpm(opts.rate, duration_s)
        checks.append(Check(f"small key's limit hit ({rpm} rpm): 429s", small.get("429", 0) > 0,
                            f"small key: {dict(sorted(small.items()))}"))
        checks.append(Check("requests without a key: 401", set(none) <= {"401"},
                            f"no key: {dict(sorted(none.items()))}"))
    return checks, figures


def render(checks: list[Check], figures: dict[str, Any], tally: dict[str, Any], faults: dict[str, Any],
           opts: Options, duration_s: float) -> str:
    lines = [f"soak: {duration_s / 60:g} min at {opts.rate:g} requests/s, auth {opts.auth}, seed {opts.seed}", ""]
    width = max(len(c.name) for c in checks) + 2
    lines.append(f"{'check':<{width}}{'result':<8}figures")
    for c in checks:
        lines.append(f"{c.name:<{width}}{'PASS' if c.passed else 'FAIL':<8}{c.figure}")
    lines.append("")
    lines.append("by status:  " + "  ".join(f"{k} {v}" for k, v in sorted(tally["by_status"].items())))
    lines.append("by outcome: " + "  ".join(f"{k} {v}" for k, v in sorted(tally["by_outcome"].items())))
    for label, counts in sorted(tally["by_key"].items()):
        lines.append(f"key {label + ':':<7}  " + "  ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for kind in ("json_ok", "stream_ok"):
        values = sorted(tally["latency_ms"][kind])
        if values:
            lines.append(f"{kind:<10}  p50 {percentile(values, 50):.1f} ms  p99 {percentile(values, 99):.1f} ms"
                         f"  (n {len(values)})")
    lines.append(f"client: {figures['achieved_rate']}/s achieved, send lag p99 {figures['send_lag_p99_ms']} ms")
    lines.append(f"gateway RSS MiB: start {figures['rss_start_mib']}, t={figures['rss_baseline_at_s']:g}s "
                 f"{figures['rss_baseline_mib']}, end {figures['rss_end_mib']}, max {figures['rss_max_mib']}, "
                 f"growth {figures['rss_growth_pct']}%")
    total: Counter[str] = Counter()
    for counts in faults.values():
        total.update(counts)
    lines.append("upstream faults drawn: " + "  ".join(f"{k} {v}" for k, v in sorted(total.items())))
    for outcome, examples in sorted(tally["examples"].items()):
        lines.append(f"examples of {outcome}:")
        lines += [f"  {e}" for e in examples[:3]]
    return "\n".join(lines)


def write_results(results_dir: Path, report: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(no_nan(report), indent=2, default=str, allow_nan=False) + "\n"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results_dir / f"soak-{stamp}.json").write_text(text)
    path = results_dir / "soak-latest.json"
    path.write_text(text)
    return path


def gateway_log_errors(path: Path) -> dict[str, Any]:
    """How many ERROR lines the gateway logged, and the first few with their tracebacks."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"count": 0, "first": []}
    starts = [i for i, line in enumerate(lines) if " ERROR " in line]
    first = []
    for i in starts[:3]:
        block = [lines[i]]
        for line in lines[i + 1 : i + 60]:
            if line[:4].isdigit():  # the next timestamped log line
                break
            block.append(line)
        first.append("\n".join(block))
    return {"count": len(starts), "first": first}


def run_soak(opts: Options, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    duration_s = opts.minutes * 60
    operator_token = "soak-" + os.urandom(16).hex()
    os.environ[OPERATOR_TOKEN_ENV] = operator_token  # inherited by the gateway only
    os.environ[UPSTREAM_KEY_ENV] = "soak-upstream-key"
    ups = start_standins(stack, opts, workdir)
    log(f"stand-ins: {ups}")
    port = free_port()
    config = workdir / "gateway.yaml"
    config.write_text(gateway_config(port, ups, opts.auth, workdir / "state.db"))
    gw_env = {**os.environ, "XDG_DATA_HOME": str(workdir / "data")}
    gateway: Service = start(stack, "gateway", [opts.python, "-m", "services.gateway", "--config", str(config)],
                             workdir, cwd=REPO_ROOT, env=gw_env)
    url = f"http://{LOOPBACK}:{port}"
    wait_ready(gateway, url + "/ready")
    keys = create_keys(url, operator_token, small_key_rpm(opts.rate, duration_s)) if opts.auth == "keys" else {}
    log(f"gateway pid {gateway.proc.pid} on {url}, auth {opts.auth}"
        + (f", keys created: {', '.join(keys)}" if keys else ""))
    plan = {"url": url + "/v1/chat/completions", "rate": opts.rate, "duration_s": duration_s,
            "deadline_s": opts.deadline_s, "seed": opts.seed, "keys": keys}
    plan_path, out_path = workdir / "plan.json", workdir / "client.json"
    plan_path.write_text(json.dumps(plan))
    log(f"load: {duration_s:g} s at {opts.rate:g}/s ({int(duration_s * opts.rate)} requests)")
    client = subprocess.Popen([opts.python, str(Path(__file__)), "--role", "client", "--plan", str(plan_path),
                               "--out", str(out_path)], cwd=REPO_ROOT, start_new_session=True)
    stack.callback(stop_process, client)
    rss, finished = watch(client, gateway.proc.pid, duration_s + opts.deadline_s + 60)
    if not finished:
        raise BenchError("the load client did not finish in time (it is bounded; this is a bug in the soak)")
    if client.returncode != 0 or not out_path.exists():
        raise BenchError(f"the load client failed with exit status {client.returncode}")
    gateway_alive = gateway.proc.poll() is None
    stop_process(gateway.proc)
    tally = json.loads(out_path.read_text())
    stack.close()  # stops the stand-ins, which then write how many faults they drew
    faults = {}
    for name in ups:
        with contextlib.suppress(OSError, ValueError):
            faults[name] = json.loads((workdir / f"{name}-faults.json").read_text())
    checks, figures = evaluate(tally, rss, opts, duration_s, gateway_alive, keys)
    return {"checks": checks, "figures": figures, "tally": tally, "faults": faults, "rss": rss.samples,
            "duration_s": duration_s, "gateway_log_errors": gateway_log_errors(gateway.log_path)}


def main(argv: Sequence[str] | None = None) -> int:
    args, opts = parse_options(argv)
    if args.role == "standin":
        return run_standin(args.kind, args.name, opts.seed, args.out)
    if args.role == "client":
        return run_client(args.plan, args.out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started, machine = time.monotonic(), machine_info()
    try:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp, contextlib.ExitStack() as stack:
            result = run_soak(opts, Path(tmp), stack)
    except BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soak: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    checks: list[Check] = result["checks"]
    print()
    print(render(checks, result["figures"], result["tally"], result["faults"], opts, result["duration_s"]))
    errors = result["gateway_log_errors"]
    if errors["count"]:
        print(f"gateway log: {errors['count']} ERROR lines; the first:\n{errors['first'][0]}")
    tally = result["tally"]
    report = {
        "benchmark": "soak",
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": machine,
        "switchboard_git": git_revision(),
        "options": asdict(opts),
        "fault_mix": FAULT_MIX_DOC,
        "passed": all(c.passed for c in checks),
        "checks": [asdict(c) for c in checks],
        "figures": result["figures"],
        "by_status": tally["by_status"],
        "by_outcome": tally["by_outcome"],
        "by_key": tally["by_key"],
        "examples": tally["examples"],
        "faults_drawn": result["faults"],
        "latency_ms": {k: {"p50": percentile(sorted(v), 50), "p99": percentile(sorted(v), 99), "n": len(v)}
                       for k, v in tally["latency_ms"].items()},
        "rss_samples_kib": result["rss"],
        "gateway_log_errors": result["gateway_log_errors"],
    }
    path = write_results(opts.results_dir, report)
    print(f"\nresults: {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
