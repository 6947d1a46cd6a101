"""OpenAI's error body shape and the status codes the gateway answers with."""

from __future__ import annotations

import json

from services.gateway.health import ErrorClass

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}

# When every attempt failed, the client sees the status that best describes the last failure.
FINAL_STATUS = {
    ErrorClass.RATE_LIMIT: 429,
    ErrorClass.TIMEOUT: 504,
    ErrorClass.AUTH: 502,
    ErrorClass.SERVER: 502,
    ErrorClass.CONNECT: 502,
    ErrorClass.MALFORMED: 502,
}


def error_object(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's ``{"error": {...}}`` shape; the data plane and the admin API both answer with it."""
    error_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps(error_object(status, message, code=code, param=param)).encode()


class ClientGone(Exception):
    """The client disconnected; the work done for it was cancelled."""


class ClientStalled(ClientGone):
    """The client stopped reading a stream past its deadline: the upstream is cancelled and the
    connection dropped, so a reader that never reads cannot hold an upstream connection."""


class RequestError(Exception):
    """A request the gateway refuses before routing it."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 error_type: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type
        self.retry_after_s = retry_after_s

    def body(self) -> bytes:
        body = error_object(self.status, self.message, code=self.code, param=self.param)
        if self.error_type is not None:
            body["error"]["type"] = self.error_type
        return json.dumps(body).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [] if self.retry_after_s is None else [(b"retry-after", str(self.retry_after_s).encode())]
