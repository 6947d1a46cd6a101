"""The contract every provider adapter meets.

An adapter turns an OpenAI-shaped request into a call through the provider's official SDK and
returns OpenAI-shaped bytes, so the gateway forwards responses without re-encoding them. Errors
leave an adapter only as :class:`UpstreamError`, classified once, here, for the retry policy.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from services.gateway.config import Target, Timeouts
from services.gateway.health import ErrorClass

Endpoint = Literal["chat", "completions"]
T = TypeVar("T")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


class UpstreamError(Exception):
    """One failed upstream attempt, with the class that decides what the gateway does next."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body


def classify_status(status: int) -> ErrorClass:
    """The error class of an HTTP status. 503 and Anthropic's 529 (overloaded) are SERVER errors,
    retried and fallen back from like any 5xx; the proxy also cools the target down for their
    Retry-After when they carry one. Every other 4xx but 401/403/404/408/429 is the client's."""
    if status == 429:
        return ErrorClass.RATE_LIMIT
    if status in (401, 403, 404):
        return ErrorClass.AUTH
    if status == 408 or status >= 500:
        return ErrorClass.SERVER if status != 408 else ErrorClass.TIMEOUT
    return ErrorClass.CLIENT


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (delta seconds); None when absent or unreadable."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return float(raw)
        except ValueError:
            return None
    return None


async def headers_within(seconds: float, opening: Awaitable[T]) -> T:
    """Await a non-stream answer's response headers for at most ``seconds`` (the target's ``ttft_s``).

    The body is read afterwards under the request's ``total_s``, which the proxy enforces.
    A timeout raised by the HTTP client itself passes through unchanged.
    """
    timeout = asyncio.timeout(seconds)
    try:
        async with timeout:
            return await opening
    except TimeoutError:
        if not timeout.expired():
            raise
        raise UpstreamError(ErrorClass.TIMEOUT, f"no response headers within {seconds:g} s (ttft_s)") from None


@dataclass
class UpstreamResponse:
    """A complete non-streaming answer: an OpenAI-format JSON body and the usage read from it."""

    body: bytes
    usage: Usage | None


@dataclass
class StreamChunk:
    """One OpenAI ``chat.completion.chunk`` (or ``text_completion``) as JSON bytes, without SSE framing."""

    data: bytes
    usage_only: bool = False  # the trailing chunk with ``choices: []`` and usage


@dataclass
class UpstreamStream:
    """An open upstream stream. ``chunks`` raises UpstreamError on a broken or malformed stream."""

    chunks: AsyncIterator[StreamChunk]
    usage: Usage = field(default_factory=Usage)
    close: Any = None  # async callable releasing the connection

    async def aclose(self) -> None:
        if self.close is not None:
            await self.close()


class Provider(abc.ABC):
    """One target's client. Created once per target at start-up and reused for every request."""

    def __init__(self, name: str, target: Target, api_key: str | None) -> None:
        self.name = name
        self.target = target
        self.api_key = api_key

    @abc.abstractmethod
    async def complete(self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts) -> UpstreamResponse:
        """Send a non-streaming request; ``payload`` is the client's body with ``model`` already set.

        The response headers must arrive within ``timeouts.ttft_s`` (use :func:`headers_within`).
        """

    @abc.abstractmethod
    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts) -> UpstreamStream:
        """Send a streaming request and return once the upstream answered with a success status.

        The payload always asks for usage (``stream_options.include_usage``); the gateway drops the
        usage chunk when the client did not ask for it.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release pooled connections."""
