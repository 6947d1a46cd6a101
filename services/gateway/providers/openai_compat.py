"""OpenAI and every OpenAI-compatible server (vLLM among them), with the official ``openai`` SDK.

The SDK client defines the wire: base URL, authentication and default headers. Two ways to send:

- ``sdk``: every request goes through ``AsyncOpenAI.post`` with ``cast_to=httpx2.Response``, so the
  body is forwarded as bytes instead of being parsed into models and serialised again.
- ``direct`` (the default): the headers and URL the SDK client computes are sent through one pooled
  aiohttp session. Profiling the gateway showed the SDK's per-request work (options deep-copy,
  httpx2 request and header models) at about 0.4 ms per request, more than the gateway's whole
  overhead budget; the direct path skips it and gives byte-identical requests.

Both read the same bytes back and classify errors the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
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
    headers_within,
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


def status_error(status: int, raw_body: bytes | object, headers: Mapping[str, str] | None) -> UpstreamError:
    """An error answer (status >= 400) as the gateway's error class."""
    body: object = raw_body
    if isinstance(raw_body, bytes):
        try:
            body = json.loads(raw_body)
        except ValueError:
            body = raw_body.decode(errors="replace")[:500]
    return UpstreamError(
        classify_status(status),
        _error_message(body, f"upstream answered {status}"),
        status=status,
        retry_after=parse_retry_after(headers),
        body=body if isinstance(body, dict) else None,
    )


def transport_error(exc: BaseException) -> UpstreamError:
    """Map SDK, httpx2 and aiohttp failures (no HTTP status) to the gateway's error classes."""
    if isinstance(exc, openai.APIStatusError):
        return status_error(exc.status_code, exc.body, exc.response.headers)
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | asyncio.TimeoutError):
        return UpstreamError(ErrorClass.TIMEOUT, "upstream timed out")
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError | aiohttp.ClientError | OSError):
        return UpstreamError(ErrorClass.CONNECT, f"upstream connection failed: {exc.__cause__ or exc}")
    return UpstreamError(ErrorClass.MALFORMED, f"unexpected upstream failure: {exc!r}")


def parse_body(body: bytes) -> UpstreamResponse:
    try:
        obj = json.loads(body)
    except ValueError:
        raise UpstreamError(ErrorClass.MALFORMED, "upstream sent a body that is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        raise UpstreamError(ErrorClass.MALFORMED, "upstream response has no 'choices' list")
    return UpstreamResponse(body=body, usage=usage_from(obj))


async def sse_chunks(lines: AsyncIterator[bytes | str], usage: Usage) -> AsyncIterator[StreamChunk]:
    """OpenAI SSE ``data:`` lines as chunks; ``usage`` is filled from the chunk that carries it."""
    try:
        async for raw_line in lines:
            line = raw_line.decode() if isinstance(raw_line, bytes) else raw_line
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
        raise transport_error(exc) from exc
    raise UpstreamError(ErrorClass.CONNECT, "upstream stream ended without [DONE]")


class OpenAICompatProvider(Provider):
    def __init__(self, name: str, target: Target, api_key: str | None) -> None:
        super().__init__(name, target, api_key)
        limits = httpx2.Limits(max_connections=target.max_connections,
                               max_keepalive_connections=target.max_connections)
        self.client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=target.base_url,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(limits=limits) if target.client == "sdk" else None,
        )
        self.base_url = str(self.client.base_url).rstrip("/")
        self.headers = {
            key: value
            for key, value in {**self.client.default_headers, **self.client.auth_headers}.items()
            if isinstance(value, str)
        }
        self._session: aiohttp.ClientSession | None = None
        timeouts = target.timeouts
        self._complete_timeout = aiohttp.ClientTimeout(sock_connect=timeouts.connect_s, sock_read=timeouts.total_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            sock_connect=timeouts.connect_s, sock_read=max(timeouts.ttft_s, timeouts.stall_s)
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.target.max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, headers=self.headers, auto_decompress=True)
        return self._session

    @staticmethod
    def _sdk_options(timeouts: Timeouts, read_s: float) -> dict[str, Any]:
        return {"timeout": httpx2.Timeout(read_s, connect=timeouts.connect_s, pool=timeouts.connect_s)}

    async def complete(self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts) -> UpstreamResponse:
        if self.target.client == "sdk":
            try:
                # stream=True returns at the headers, so ttft_s can bound them; the body is read after.
                sdk_response: httpx2.Response = await headers_within(timeouts.ttft_s, self.client.post(
                    PATHS[endpoint], cast_to=httpx2.Response, body=payload,
                    options=self._sdk_options(timeouts, timeouts.total_s), stream=True,
                    stream_cls=openai.AsyncStream[dict],
                ))
                try:
                    body = await sdk_response.aread()
                finally:
                    await sdk_response.aclose()
            except UpstreamError:
                raise
            except Exception as exc:
                raise transport_error(exc) from exc
            return parse_body(body)
        try:
            response = await headers_within(timeouts.ttft_s, self.session.post(
                self.base_url + PATHS[endpoint], data=json.dumps(payload).encode(), timeout=self._complete_timeout,
            ))
            try:
                body = await response.read()
            finally:
                response.release()
            if response.status >= 400:
                raise status_error(response.status, body, response.headers)
        except UpstreamError:
            raise
        except Exception as exc:
            raise transport_error(exc) from exc
        return parse_body(body)

    async def open_stream(self, endpoint: Endpoint, payload: dict[str, Any], timeouts: Timeouts) -> UpstreamStream:
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        read_s = max(timeouts.ttft_s, timeouts.stall_s)
        usage = Usage()
        if self.target.client == "sdk":
            try:
                sdk_response: httpx2.Response = await self.client.post(
                    PATHS[endpoint], cast_to=httpx2.Response, body=payload,
                    options=self._sdk_options(timeouts, read_s), stream=True, stream_cls=openai.AsyncStream[dict],
                )
            except Exception as exc:
                raise transport_error(exc) from exc
            return UpstreamStream(chunks=sse_chunks(sdk_response.aiter_lines(), usage), usage=usage,
                                  close=sdk_response.aclose)
        try:
            response = await self.session.post(self.base_url + PATHS[endpoint], data=json.dumps(payload).encode(),
                                               timeout=self._stream_timeout)
        except Exception as exc:
            raise transport_error(exc) from exc
        if response.status >= 400:
            try:
                body = await response.read()
            except Exception as exc:
                raise transport_error(exc) from exc
            finally:
                response.release()
            raise status_error(response.status, body, response.headers)

        async def close() -> None:
            # close(), not release(): a stream abandoned half-way must drop its connection so the
            # upstream sees the disconnect and stops generating.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

        return UpstreamStream(chunks=sse_chunks(response.content, usage), usage=usage, close=close)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.client.close()
