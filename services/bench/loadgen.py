"""The built-in runner: an asyncio load generator that streams from any OpenAI-compatible server.

Timings as ``vllm bench serve`` takes them (endpoint_request_func.py): ``st = perf_counter()`` before the POST;
TTFT at the first chunk with generated content; every later chunk with ``choices`` adds a gap (ITL); E2EL ends at
the last chunk with ``choices`` (not the usage chunk or ``[DONE]``); output tokens from the final ``usage``.

Sending follows vLLM's ``get_request``: gaps drawn from a gamma distribution (shape = burstiness; 1 is Poisson),
accumulated, then rescaled so the last request goes out at ``num_prompts / rate``; ``max_concurrency`` is a
semaphore, and its wait is the request's ``queue_time``, outside its timings. Request ``i`` goes out at its planned
offset (sleep to within a millisecond, then yield to the loop until due), so the send lag stays well under a
millisecond; the lag is measured and reported. While requests go out, the collector's automatic full passes are
off: a run holds every record and body it planned, and a full walk of the heap stopped the loop for 45-90 ms, late
enough to make a hundred requests miss their time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import random
import re
import statistics
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import aiohttp

from services.bench.datasets import Prompt, TokenCounter, load_prompts
from services.bench.metrics import RequestRecord, compute, percentile
from services.bench.result import BenchResult, TargetIdentity
from services.bench.runners import Progress, ProgressCallback
from services.bench.spec import BenchSpec

__all__ = ["BenchError", "Progress", "plan_offsets", "run"]

_ROLLING_S = 5.0
_PROGRESS_EVERY_S = 0.25
_SPIN_S = 0.0015  # the last stretch before a send is spent yielding to the loop, not sleeping on a timer
_NO_AUTOMATIC_FULL_PASS = 1_000_000  # young collections between full ones: in practice never


class BenchError(RuntimeError):
    """The run could not start (target unreachable, no model, bad dataset); the message says what to do."""


def plan_offsets(count: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Send times (s from the start) of ``count`` requests at ``rate`` with gamma ``burstiness``, as vLLM plans them."""
    if math.isinf(rate):
        return [0.0] * count
    rng = random.Random(seed)
    if math.isinf(burstiness):
        gaps = [1.0 / rate] * count
    else:
        theta = 1.0 / (rate * burstiness)
        gaps = [rng.gammavariate(burstiness, theta) for _ in range(count)]
    offsets, total = [], 0.0
    for gap in gaps:
        total += gap
        offsets.append(total)
    if offsets and offsets[-1] > 0:
        factor = (count / rate) / offsets[-1]
        offsets = [o * factor for o in offsets]
    return offsets


def _body(spec: BenchSpec, model: str, prompt: Prompt) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if spec.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
        body["max_completion_tokens"] = prompt.output_len
    else:
        body["prompt"] = prompt.text
        body["max_tokens"] = prompt.output_len
    if spec.dataset.kind == "random":
        body["ignore_eos"] = True  # vLLM forces it for random prompts: every request yields output_len tokens
    return body


def _content(choice: dict[str, Any], chat: bool) -> str | None:
    """The generated text a chunk carries ("" when none)."""
    if not chat:
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""
    if not text and delta.get("tool_calls"):
        return json.dumps(delta["tool_calls"])
    return text


class _Rolling:
    """Recent completions for the live figures: output tok/s, median TTFT and ITL over the last few seconds."""

    def __init__(self) -> None:
        self.done: deque[tuple[float, int, float]] = deque()
        self.gaps: deque[tuple[float, float]] = deque(maxlen=5000)

    def add(self, now: float, record: RequestRecord) -> None:
        self.done.append((now, record.output_tokens, record.ttft))
        self.gaps.extend((now, g) for g in record.itl[-200:])

    def figures(self, now: float, elapsed: float) -> tuple[float | None, float | None, float | None]:
        cutoff = now - _ROLLING_S
        while self.done and self.done[0][0] < cutoff:
            self.done.popleft()
        while self.gaps and self.gaps[0][0] < cutoff:
            self.gaps.popleft()
        if not self.done:
            return None, None, None
        window = min(_ROLLING_S, max(elapsed, 1e-3))
        tok_s = sum(t for _, t, _ in self.done) / window
        ttft = statistics.median(x for _, _, x in self.done) * 1000
        itl = statistics.median(g for _, g in self.gaps) * 1000 if self.gaps else None
        return tok_s, ttft, itl


class _Run:
    def __init__(self, spec: BenchSpec, session: aiohttp.ClientSession, headers: dict[str, str], model: str,
                 counter: TokenCounter) -> None:
        self.spec, self.session, self.headers, self.model, self.counter = spec, session, headers, model, counter
        self.chat = spec.endpoint == "chat"
        self.semaphore = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
        self.rolling = _Rolling()
        self.done = self.failed = 0
        self.errors: dict[str, int] = {}
        self.lags: list[float] = []

    def encode(self, prompt: Prompt) -> bytes:
        """A request's body, encoded ahead of the run so that sending costs as little as it can."""
        return json.dumps(_body(self.spec, self.model, prompt), separators=(",", ":")).encode()

    async def one(self, prompt: Prompt, record: RequestRecord, planned: float | None, counted: bool,
                  body: bytes | None = None) -> None:
        """Send one request and fill ``record``; ``planned`` (perf_counter) measures the send lag."""
        queued = time.perf_counter()
        if self.semaphore is not None:
            await self.semaphore.acquire()
        try:
            await self._send(body or self.encode(prompt), prompt, record, queued, planned)
        finally:
            if self.semaphore is not None:
                self.semaphore.release()
        if counted:
            if record.success:
                self.done += 1
                self.rolling.add(time.perf_counter(), record)
            else:
                self.failed += 1
                key = record.error[:40]
                self.errors[key] = self.errors.get(key, 0) + 1

    async def _send(self, body: bytes, prompt: Prompt, record: RequestRecord, queued: float,
                    planned: float | None) -> None:
        record.prompt_len = prompt.prompt_len
        generated: list[str] = []
        st = time.perf_counter()
        record.start, record.queue_time = st, st - queued
        if planned is not None:
            self.lags.append(st - record.queue_time - planned)
        first = 0.0
        last = 0.0
        usage_tokens: int | None = None
        try:
            async with self.session.post(self.spec.api_url, data=body, headers=self.headers) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    record.error = f"HTTP {response.status}: {_error_message(text)}"
                    return
                async for raw in response.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    now = time.perf_counter()
                    chunk = json.loads(data)
                    if "error" in chunk and not chunk.get("choices"):
                        record.error = f"stream error: {_error_message(json.dumps(chunk['error']))}"
                        return
                    choices = chunk.get("choices")
                    if choices:
                        if not first:
                            text = _content(choices[0], self.chat)
                            if text:
                                first = now
                                record.ttft = now - st
                                last = now
                                generated.append(text)
                        else:
                            record.itl.append(now - last)
                            last = now
                            generated.append(_content(choices[0], self.chat) or "")
                    usage = chunk.get("usage")
                    if usage:
                        usage_tokens = usage.get("completion_tokens", usage_tokens)
                        if usage.get("prompt_tokens"):
                            record.prompt_len = usage["prompt_tokens"]
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:200]
            return
        except (AttributeError, TypeError, KeyError, IndexError):  # JSON of the wrong shape
            record.error = "malformed chunk: not an OpenAI completion chunk"
            return
        if not first:
            record.error = "Never received a valid chunk to calculate TTFT."
            return
        record.latency = last - st
        text = "".join(generated)
        record.output_tokens = usage_tokens if usage_tokens is not None else (
            self.counter.count(text) if text else 0)
        record.success = True


def _error_message(text: str) -> str:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        data = json.loads(text)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:160]
    return " ".join(text.split())[:160]


async def _get_json(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
        if response.status != 200:
            return None
        return await response.json(content_type=None)


async def identify(session: aiohttp.ClientSession, spec: BenchSpec, headers: dict[str, str]) -> TargetIdentity:
    """The model (the spec's, or the first of GET /v1/models) and, when the engine says, its name and version."""
    try:
        models = await _get_json(session, f"{spec.v1_url}/models", headers)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        if spec.model is None:
            raise BenchError(f"cannot list models at {spec.v1_url}/models: {exc}") from None
        models = None
    entries = models.get("data") if isinstance(models, dict) else None
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    model = spec.model
    if model is None:
        if not entries or not isinstance(entries[0].get("id"), str):
            raise BenchError(f"no model given and GET {spec.v1_url}/models lists none; set model")
        model = entries[0]["id"]
    entry = next((e for e in entries if e.get("id") == model), {})
    engine = "vllm" if entry.get("owned_by") == "vllm" else None
    flags = {k: entry[k] for k in ("max_model_len", "root", "parent") if entry.get(k) is not None} or None
    version = None
    root = spec.v1_url.removesuffix("/v1")
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        answer = await _get_json(session, f"{root}/version", headers)
        if isinstance(answer, dict) and isinstance(answer.get("version"), str):
            version = answer["version"][:64]
            engine = engine or "vllm"
    if engine == "vllm":
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError):
            flags = {**(flags or {}), **await _engine_config(session, f"{root}/metrics", headers)} or None
    return TargetIdentity(base_url=spec.base_url, model=model, engine=engine, engine_version=version,
                          engine_flags=flags)


_CONFIG_INFO = re.compile(r'^vllm:cache_config_info\{(?P<labels>[^}]*)\}', re.MULTILINE)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


async def _engine_config(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict[str, str]:
    """vLLM's engine settings as its /metrics shows them (the labels of ``vllm:cache_config_info``)."""
    async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
        if response.status != 200:
            return {}
        text = (await response.content.read(1 << 20)).decode()
    found = _CONFIG_INFO.search(text)
    if found is None:
        return {}
    return {key: value[:64] for key, value in _LABEL.findall(found["labels"])[:40]}


@contextlib.contextmanager
def _no_full_collections() -> Iterator[None]:
    """Young generations are still collected (cheap); the interpreter's thresholds come back afterwards."""
    saved = gc.get_threshold()
    gc.set_threshold(saved[0], saved[1], _NO_AUTOMATIC_FULL_PASS)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


async def _wait_until(due: float) -> None:
    remaining = due - time.perf_counter()
    if remaining > _SPIN_S:
        await asyncio.sleep(remaining - _SPIN_S)
    # A timer wakes a millisecond late at worst; yielding until due keeps other requests' streams moving.
    while time.perf_counter() < due:  # noqa: ASYNC110
        await asyncio.sleep(0)


async def run(spec: BenchSpec, progress: ProgressCallback | None = None,
              cancel: asyncio.Event | None = None) -> BenchResult:
    """One run of ``spec`` (its sweep rates are ignored: see ``runners.run_sweep``).

    A set ``cancel`` stops sending at once and closes the streams in flight; the result then covers the requests
    that finished, with ``cancelled`` True. BenchError when the run cannot start.
    """
    try:
        key = spec.api_key()
    except KeyError as exc:
        raise BenchError(str(exc.args[0])) from None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    counter = TokenCounter(spec.tokenizer)
    prompts = load_prompts(spec, counter, spec.num_prompts)
    warm = load_prompts(spec, counter, spec.warmups, seed_offset=1) if spec.warmups else []
    connector = aiohttp.TCPConnector(limit=spec.max_concurrency or 0, keepalive_timeout=60, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    cancel = cancel or asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        target = await identify(session, spec, headers)
        state = _Run(spec, session, headers, target.model, counter)
        if warm and not cancel.is_set():
            _report(progress, state, spec, 0.0, "warmup")
            warmups = [asyncio.ensure_future(state.one(p, RequestRecord(), None, False)) for p in warm]
            await _until_done_or_cancelled(warmups, cancel)
        records = [RequestRecord() for _ in prompts]
        bodies = [state.encode(p) for p in prompts]
        offsets = plan_offsets(len(prompts), spec.request_rate, spec.burstiness, spec.seed)
        tasks: list[asyncio.Future[None]] = []
        t0 = time.perf_counter()

        async def dispatch() -> None:
            for prompt, record, body, offset in zip(prompts, records, bodies, offsets, strict=True):
                due = t0 + offset
                if offset > 0:
                    await _wait_until(due)
                if cancel.is_set():
                    return
                planned = None if math.isinf(spec.request_rate) else due  # all at once: no schedule to miss
                tasks.append(asyncio.ensure_future(state.one(prompt, record, planned, True, body)))
            if tasks:
                await asyncio.wait(tasks)

        ticker = asyncio.ensure_future(_tick(progress, state, spec, t0))
        sender = asyncio.ensure_future(dispatch())
        try:
            with _no_full_collections():
                await _until_done_or_cancelled([sender], cancel)
        finally:
            ended = time.perf_counter()
            ticker.cancel()
            for task in (sender, *tasks):
                task.cancel()
            await asyncio.gather(sender, *tasks, ticker, return_exceptions=True)
    cancelled = cancel.is_set()
    # Cancelled mid-flight requests are neither completed nor failed: they are left out.
    finished = [r for r in records if r.success or r.error]
    metrics = compute(finished, ended - t0, spec)
    lags = sorted(lag * 1000 for lag in state.lags)
    metrics["send_lag_p50_ms"] = percentile(lags, 50)
    metrics["send_lag_p99_ms"] = percentile(lags, 99)
    metrics["send_lag_max_ms"] = lags[-1] if lags else 0.0
    sent = [r.start for r in records if r.start]
    span = max(sent) - t0 if sent else 0.0
    metrics["send_rate"] = len(sent) / span if span > 0 else None  # requests/s as sent (inf rate: None)
    _report(progress, state, spec, ended - t0, "done")
    return BenchResult(spec=spec, runner="builtin", metrics=metrics, target=target, tokenizer=counter.name,
                       cancelled=cancelled, warmups_done=len(warm), errors=state.errors)


async def _until_done_or_cancelled(futures: list[asyncio.Future[None]], cancel: asyncio.Event) -> None:
    waiter = asyncio.ensure_future(cancel.wait())
    pending: set[asyncio.Future[Any]] = set(futures)
    try:
        while pending and not cancel.is_set():
            _, pending = await asyncio.wait([*pending, waiter], return_when=asyncio.FIRST_COMPLETED)
            pending.discard(waiter)
    finally:
        waiter.cancel()
        if cancel.is_set():
            for future in futures:
                future.cancel()
            await asyncio.gather(*futures, return_exceptions=True)


def _report(progress: ProgressCallback | None, state: _Run, spec: BenchSpec, elapsed: float, phase: str) -> None:
    if progress is None:
        return
    tok_s, ttft, itl = state.rolling.figures(time.perf_counter(), elapsed)
    progress(Progress(done=state.done, failed=state.failed, total=spec.num_prompts, elapsed_s=elapsed,
                      output_tok_s=tok_s, ttft_median_ms=ttft, itl_median_ms=itl, phase=phase,
                      rate=spec.request_rate))


async def _tick(progress: ProgressCallback | None, state: _Run, spec: BenchSpec, t0: float) -> None:
    if progress is None:
        return
    while True:
        await asyncio.sleep(_PROGRESS_EVERY_S)
        _report(progress, state, spec, time.perf_counter() - t0, "run")
