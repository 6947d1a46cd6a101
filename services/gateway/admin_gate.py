"""The admin API's front door: a known token and a small body before anything is parsed.

FastAPI reads and parses a request's body before it runs the dependencies that check the token, so
without this gate anyone who reaches the port could make the gateway parse megabytes of JSON. Here
the bearer token is checked first (401 without one of the configured tokens), then the body is read
with a size cap (413) and a time limit (408), and only then handed to the API. The OpenAPI document
and its docs page stay public: they hold no state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from services.gateway.auth import TokenSet
from services.gateway.errors import error_body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_ADMIN_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0
PUBLIC_PATHS = frozenset({"/admin/openapi.json", "/admin/docs"})


class _Refused(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class AdminGate:
    def __init__(self, app: ASGIApp, tokens: TokenSet, max_body_bytes: int = MAX_ADMIN_BODY_BYTES,
                 body_timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            self._check_token(scope)
            body = await self._read_body(scope, receive)
        except _Refused as refused:
            await _answer(send, refused)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_token(self, scope: Scope) -> None:
        if not len(self.tokens):
            raise _Refused(401, "the admin API has no tokens configured (admin.tokens)", "no_tokens")
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if self.tokens.authenticate(authorization.decode("latin-1")) is None:
            raise _Refused(401, "missing or invalid bearer token", "invalid_token")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _Refused(413, f"admin request bodies are limited to {self.max_body_bytes} bytes", "body_too_large")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise asyncio.CancelledError
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise _Refused(413, f"admin request bodies are limited to {self.max_body_bytes} bytes",
                                       "body_too_large")
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                           "body_timeout") from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the already-read body once, then listens to the client again."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, refused: _Refused) -> None:
    body = error_body(refused.status, refused.message, code=refused.code)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refused.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if refused.status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
