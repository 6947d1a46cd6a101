"""OpenAI and every OpenAI-compatible server (vLLM among them), through the official ``openai`` SDK.

The SDK builds, authenticates and sends the request and maps HTTP errors to its exception types.
Responses are taken raw (``cast_to=httpx2.Response``): the body is already OpenAI JSON, so it is
forwarded as bytes and only read for its usage, instead of being parsed into pydantic models and
serialised again (that round trip was most of the gateway's per-request CPU when profiled).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from services.gateway.config import Target, Timeouts
from services.gateway.health import ErrorClass
from services.gateway.providers.base import (
    Endpoint,
    Provider,
    StreamChunk,
    UpstreamError,
    UpstreamResponse,
    UpstreamStream,
    Usage,
    classify_status,
    parse_retry_after,
)

PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completions": "/completions"}


def usage_from(obj: dict[str, Any]) -> Usage | None:
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _error_message(body: object, fallback: str) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return fallback


def translate_sdk_error(exc: Exception) -> UpstreamError:
    """Map the SDK's exception to the gateway's error classes."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else None
        return UpstreamError(
            classify_status(status),
            _error_message(exc.body, exc.message),
            status=status,
            retry_after=parse_retry_after(exc.response.headers),
            body=body,
        )
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamError(ErrorClass.TIMEOUT, "upstream timed out")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(ErrorClass.CONNECT, f"upstream connection failed: {exc.__cause__ or exc}")
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamError(ErrorClass.TIMEOUT, "upstream timed out")
    if isinstance(exc, httpx2.TransportError):
        return UpstreamError(ErrorClass.CONNECT, f"upstream connection broke: {exc}")
    return UpstreamError(ErrorClass.MALFORMED, f"unexpected upstream failure: {exc!r}")


class OpenAICompatProvider(Provider):
    def __init__(self, name: str, target: Target, api_key: str | None) -> None:
        super().__init__(name, target, api_key)
        limits = httpx2.Limits(max_connections=target.max_connections, max_keepalive_connections=target.max_connections)
        self.client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=target.base_url,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(limits=limits),
        )

    def _options(self, timeouts: Timeouts, read_s: float) -> dict[str, Any]:
        return {"timeout": httpx2.Timeout(read_s, connect=timeouts.connect_s, pool=timeouts.connect_s)}

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts) -> UpstreamResponse:
        try:
            response = await self.client.post(
                PATHS[endpoint],
                cast_to=httpx2.Response,
                body=payload,
                options=self._options(timeouts, timeouts.total_s),
            )
        except Exception as exc:
            raise translate_sdk_error(exc) from exc
        body = response.content
        try:
            obj = json.loads(body)
        except ValueError:
            raise UpstreamError(ErrorClass.MALFORMED, "upstream sent a body that is not JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
            raise UpstreamError(ErrorClass.MALFORMED, "upstream response has no 'choices' list")
        return UpstreamResponse(body=body, usage=usage_from(obj))

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts) -> UpstreamStream:
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        try:
            response: httpx2.Response = await self.client.post(
                PATHS[endpoint],
                cast_to=httpx2.Response,
                body=payload,
                options=self._options(timeouts, max(timeouts.ttft_s, timeouts.stall_s)),
                stream=True,
                stream_cls=openai.AsyncStream[dict],
            )
        except Exception as exc:
            raise translate_sdk_error(exc) from exc
        usage = Usage()
        return UpstreamStream(chunks=self._chunks(response, usage), usage=usage, close=response.aclose)

    async def _chunks(self, response: httpx2.Response, usage: Usage) -> AsyncIterator[StreamChunk]:
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    obj = json.loads(data)
                except ValueError:
                    raise UpstreamError(ErrorClass.MALFORMED, "upstream sent a stream event that is not JSON") from None
                if not isinstance(obj, dict):
                    raise UpstreamError(ErrorClass.MALFORMED, "upstream stream event is not an object")
                if "error" in obj:
                    raise UpstreamError(ErrorClass.SERVER, _error_message(obj, "upstream stream error"))
                seen = usage_from(obj)
                if seen is not None:
                    usage.prompt_tokens, usage.completion_tokens = seen.prompt_tokens, seen.completion_tokens
                yield StreamChunk(data.encode(), usage_only=not obj.get("choices") and seen is not None)
        except UpstreamError:
            raise
        except Exception as exc:
            raise translate_sdk_error(exc) from exc
        raise UpstreamError(ErrorClass.CONNECT, "upstream stream ended without [DONE]")

    async def aclose(self) -> None:
        await self.client.close()

