"""Threaded uvicorn runner, fault model and the shared request/response machinery of the stand-ins.

A stand-in is a small raw-ASGI app speaking one provider's wire protocol. Provider modules
(`openai_api`, `anthropic_api`) only turn a parsed request into an *answer*: a JSON response or a list
of SSE events. Everything that makes an upstream misbehave (status faults, slow first byte, stalls,
connection cuts, malformed bodies, per-chunk delays) is applied here, generically, to that answer, so
both protocols fail in exactly the same ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

Kind = Literal["openai", "anthropic"]
FaultKind = Literal["ok", "status", "slow_first_byte", "stall", "cut", "malformed", "delay", "paced"]


# --------------------------------------------------------------------------------------------------
# Fault model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One way for the next upstream request to go wrong (or `ok()` to go right).

    Build them with the classmethods; the fields are the union of every kind's parameters.
    """

    kind: FaultKind
    status_code: int | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    body: Mapping[str, Any] | str | None = None
    seconds: float = 0.0
    after_chunks: int = 0
    first_seconds: float = 0.0

    @classmethod
    def ok(cls) -> Fault:
        """An explicit normal answer (useful in a queue: `push(Fault.status(500), Fault.ok())`)."""
        return cls("ok")

    @classmethod
    def status(
        cls,
        code: int,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        body: Mapping[str, Any] | str | None = None,
    ) -> Fault:
        """An error response in the provider's error shape; `body` replaces that shape verbatim."""
        return cls("status", status_code=code, retry_after=retry_after, retry_after_ms=retry_after_ms, body=body)

    @classmethod
    def slow_first_byte(cls, seconds: float) -> Fault:
        """Sleep before the response headers go out (stream and non-stream)."""
        return cls("slow_first_byte", seconds=seconds)

    @classmethod
    def stall(cls, after_chunks: int, seconds: float) -> Fault:
        """Streams only: send `after_chunks` content chunks, go silent for `seconds`, then carry on."""
        return cls("stall", after_chunks=after_chunks, seconds=seconds)

    @classmethod
    def cut(cls, after_chunks: int = 0) -> Fault:
        """Close the TCP connection: mid-body for streams, before any response otherwise."""
        return cls("cut", after_chunks=after_chunks)

    @classmethod
    def malformed(cls) -> Fault:
        """200 with a non-JSON body, or an SSE stream whose second data line is not JSON."""
        return cls("malformed")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """A normal answer, `seconds` late (non-stream) or with `seconds` between SSE events (stream)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def paced(cls, first_s: float, gap_s: float) -> Fault:
        """Streams: `first_s` before the first content event, `gap_s` before each later content event (the
        events around them go out at once): a known time to first token and inter-chunk gap."""
        return cls("paced", seconds=gap_s, first_seconds=first_s)


@dataclass(frozen=True)
class RecordedRequest:
    """What the stand-in received: header keys are lower-case; `body` is {} for an empty body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    method: str = "POST"


# --------------------------------------------------------------------------------------------------
# Answers produced by the provider modules
# --------------------------------------------------------------------------------------------------


@dataclass
class JsonAnswer:
    status: int
    body: Mapping[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SseEvent:
    """One SSE event. `content` marks the events that carry generated text (what `after_chunks` counts)."""

    data: str
    event: str | None = None
    content: bool = False

    def encode(self, data: str | None = None) -> bytes:
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {self.data if data is None else data}\n\n".encode()


@dataclass
class StreamAnswer:
    events: list[SseEvent]
    headers: dict[str, str] = field(default_factory=dict)


Answer = JsonAnswer | StreamAnswer


class Provider(Protocol):
    """What a provider module implements; pure functions of the request, no I/O."""

    def is_completion(self, method: str, path: str) -> bool:
        """Whether this request consumes a fault (completion endpoints do, model listings do not)."""
        ...

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> Answer:
        """The normal answer, including the provider's own validation errors."""
        ...

    def error(self, status: int, message: str | None = None) -> JsonAnswer:
        """An error response in the provider's shape."""
        ...


def sse_json(obj: Any, event: str | None = None, content: bool = False) -> SseEvent:
    return SseEvent(json.dumps(obj, separators=(",", ":")), event=event, content=content)


def words_of(text: str) -> list[str]:
    return text.split()


# --------------------------------------------------------------------------------------------------
# ASGI app: request parsing, recording, fault application
# --------------------------------------------------------------------------------------------------


class _Exchange:
    """Per-request state: the ASGI callables plus an event set when the client goes away."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self.receive = receive
        self.send = send
        self.disconnected = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    def listen(self) -> None:
        """Watch `receive` for http.disconnect; only call once the request body has been read."""
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return

    def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()


class _App:
    """The raw ASGI application shared by both protocols."""

    def __init__(self, standin: Standin, provider: Provider) -> None:
        self.standin = standin
        self.provider = provider
        self.stopping: asyncio.Event | None = None  # created on the server loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not spoken here
            return
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        ex = _Exchange(receive, send)
        ex.listen()
        try:
            await self._handle(scope, bytes(raw), ex)
        finally:
            ex.close()

    async def _handle(self, scope: Scope, raw: bytes, ex: _Exchange) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body: Any
        parse_error: str | None = None
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            body, parse_error = {}, f"request body is not valid JSON: {exc}"
        self.standin._record(RecordedRequest(path, headers, body if isinstance(body, dict) else {}, method))

        fault = self.standin._next_fault() if self.provider.is_completion(method, path) else Fault.ok()
        if parse_error is not None:
            answer: Answer = self.provider.error(400, parse_error)
        else:
            answer = self.provider.handle(method, path, headers, body)

        if fault.kind == "slow_first_byte" and await self._sleep(fault.seconds, ex):
            await self._abandon(ex)
            return
        if fault.kind == "status":
            assert fault.status_code is not None
            answer = self._status_answer(fault)
        if fault.kind == "cut" and isinstance(answer, JsonAnswer):
            await self._cut(ex)
            return
        if isinstance(answer, JsonAnswer):
            if fault.kind == "delay" and await self._sleep(fault.seconds, ex):
                await self._abandon(ex)
                return
            await self._send_json(answer, ex, malformed=fault.kind == "malformed")
        else:
            await self._send_stream(answer, fault, ex)

    def _status_answer(self, fault: Fault) -> JsonAnswer:
        assert fault.status_code is not None
        answer = self.provider.error(fault.status_code)
        if fault.body is not None:
            answer.body = fault.body
        if fault.retry_after is not None:
            value = fault.retry_after
            answer.headers["retry-after"] = str(int(value)) if float(value).is_integer() else str(value)
        if fault.retry_after_ms is not None:
            answer.headers["retry-after-ms"] = str(fault.retry_after_ms)
        return answer

    async def _sleep(self, seconds: float, ex: _Exchange) -> bool:
        """Sleep, but wake early (returning True) if the client disconnects or the stand-in stops."""
        if seconds <= 0:
            return ex.disconnected.is_set() or self._stopping()
        assert self.stopping is not None
        waiters = [asyncio.ensure_future(ex.disconnected.wait()), asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return ex.disconnected.is_set() or self._stopping()

    def _stopping(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    async def _send_json(self, answer: JsonAnswer, ex: _Exchange, *, malformed: bool = False) -> None:
        if malformed:
            status, payload = 200, b'{"id": "standin-malformed", "content": [{"text": '
        elif isinstance(answer.body, str):
            status, payload = answer.status, answer.body.encode()
        else:
            status, payload = answer.status, json.dumps(answer.body).encode()
        headers = {"content-type": "application/json", **answer.headers, "content-length": str(len(payload))}
        await ex.send({"type": "http.response.start", "status": status, "headers": _encode_headers(headers)})
        await ex.send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _send_stream(self, answer: StreamAnswer, fault: Fault, ex: _Exchange) -> None:
        events = answer.events
        # Index of the event *before which* a stall or cut happens: just after the N-th content event
        # (or just before the first one when N == 0), never later than after the last content event.
        content_ix = [i for i, e in enumerate(events) if e.content]
        if not content_ix:
            action_at = 0
        elif fault.after_chunks <= 0:
            action_at = content_ix[0]
        else:
            action_at = content_ix[min(fault.after_chunks, len(content_ix)) - 1] + 1

        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            **answer.headers,
        }
        await ex.send({"type": "http.response.start", "status": 200, "headers": _encode_headers(headers)})
        for i, event in enumerate(events):
            if i == action_at and fault.kind == "cut":
                await self._cut(ex)
                return
            if i == action_at and fault.kind == "stall" and await self._sleep(fault.seconds, ex):
                await self._end_stream_early(ex)
                return
            if i > 0 and fault.kind == "delay" and await self._sleep(fault.seconds, ex):
                await self._end_stream_early(ex)
                return
            if fault.kind == "paced" and event.content and await self._sleep(
                fault.first_seconds if i == content_ix[0] else fault.seconds, ex
            ):
                await self._end_stream_early(ex)
                return
            if ex.disconnected.is_set() or self._stopping():
                await self._end_stream_early(ex)
                return
            # The second data line, truncated: an object missing its closing brace is never valid JSON.
            data = event.data[: max(1, len(event.data) // 2)] if fault.kind == "malformed" and i == 1 else None
            last = i == len(events) - 1
            if last:
                # Counted before the final write so that a client which has seen the end of the stream
                # can assert on completed_streams without polling.
                self.standin._count("completed")
            await ex.send({"type": "http.response.body", "body": event.encode(data), "more_body": not last})

    async def _end_stream_early(self, ex: _Exchange) -> None:
        if ex.disconnected.is_set():
            self.standin._count("cancelled")
        else:  # stopping: do not leave the server waiting for this stream
            await self._cut(ex)

    async def _abandon(self, ex: _Exchange) -> None:
        """The client left (or we are stopping) before any response was sent."""
        if not ex.disconnected.is_set():
            await self._cut(ex)

    async def _cut(self, ex: _Exchange) -> None:
        """Close the TCP connection without completing the HTTP response.

        ASGI has no "abort" message. uvicorn's `send` is a bound method of its per-request cycle object,
        which holds the asyncio transport, so we close that directly (flushing what was already written,
        then FIN). We then wait for uvicorn's own connection_lost bookkeeping to mark the cycle
        disconnected, so that returning from the app makes it neither send a 500 nor log an error.
        """
        transport = getattr(getattr(ex.send, "__self__", None), "transport", None)
        if transport is None:
            raise _CutConnection("stand-in cut the connection")  # uvicorn closes on mid-body errors
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ex.disconnected.wait(), timeout=2.0)


class _CutConnection(Exception):
    """Fallback for servers whose `send` does not expose the transport."""


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


# --------------------------------------------------------------------------------------------------
# The Standin: threaded uvicorn server + thread-safe control surface
# --------------------------------------------------------------------------------------------------


class Standin:
    """A fake OpenAI or Anthropic upstream on loopback, served by uvicorn in a background thread."""

    def __init__(
        self,
        kind: Kind = "openai",
        name: str | None = None,
        reply: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        if kind not in ("openai", "anthropic"):
            raise ValueError(f"unknown stand-in kind {kind!r}")
        self.kind: Kind = kind
        self.name = name or f"standin-{kind}"
        self.reply = reply if reply is not None else f"Hello from {self.name}"
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._default: Fault | Callable[[], Fault] | None = None
        self._requests: list[RecordedRequest] = []
        self._completed = 0
        self._cancelled = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._app: _App | None = None
        self._error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _make_provider(self) -> Provider:
        if self.kind == "openai":
            from tests.standins.openai_api import OpenAIProvider

            return OpenAIProvider(self)
        from tests.standins.anthropic_api import AnthropicProvider

        return AnthropicProvider(self)

    def start(self, timeout: float = 10.0) -> Self:
        """Bind, start serving in a daemon thread, and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("stand-in already started")
        # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it every small response write waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._app = _App(self, self._make_provider())
        config = uvicorn.Config(
            self._app,
            loop="asyncio",
            lifespan="off",
            access_log=False,
            log_config=None,  # never reconfigure the process's logging from a test helper
            log_level=None,
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(server, sock), name=f"standin-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(timeout=1)
                self._thread = self._server = None
                raise RuntimeError(f"stand-in {self.name} failed to start") from self._error
            time.sleep(0.005)
        return self

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            assert self._app is not None
            self._app.stopping = asyncio.Event()
            await server.serve(sockets=[sock])

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
        finally:
            sock.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: in-flight stalls and delays are cut short so this returns promptly."""
        server, thread, loop, app = self._server, self._thread, self._loop, self._app
        if server is None or thread is None:
            return
        server.should_exit = True
        if loop is not None and app is not None and app.stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(app.stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = self._loop = None

    def serve_forever(self) -> None:
        """Start and block until `stop()` is called from another thread (the CLI uses signals)."""
        self.start()
        assert self._thread is not None
        self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- control surface (any thread) ----------------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Queue faults; each request to a completion endpoint consumes one, in order."""
        with self._lock:
            self._queue.extend(faults)

    def set_default(self, fault: Fault | Callable[[], Fault] | None) -> None:
        """The fault used when the queue is empty; None means normal answers. A function is called
        once per such request (on the server thread) and its Fault used: random faults for a soak."""
        with self._lock:
            self._default = fault

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._default = None
            self._requests.clear()
            self._completed = self._cancelled = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received (completion endpoints and model listings), in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def completed_streams(self) -> int:
        """Streams whose last event was sent; already counted when the client reads that event."""
        with self._lock:
            return self._completed

    @property
    def cancelled_streams(self) -> int:
        """Streams whose client disconnected before the last event was sent.

        Counted when the server notices the disconnect (at its next write or while sleeping), so poll.
        A short stream is written in full within a millisecond, so a test that wants to see a
        cancellation needs the stream still running: use Fault.delay or Fault.stall.
        """
        with self._lock:
            return self._cancelled

    # -- used by the app (server thread) -------------------------------------------------------------

    def _next_fault(self) -> Fault:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            default = self._default
        if callable(default):
            return default()
        return default or Fault.ok()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _count(self, what: Literal["completed", "cancelled"]) -> None:
        with self._lock:
            if what == "completed":
                self._completed += 1
            else:
                self._cancelled += 1

    def __repr__(self) -> str:
        return f"Standin(kind={self.kind!r}, name={self.name!r}, url={self.url!r})"
