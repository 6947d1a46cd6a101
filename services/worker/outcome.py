"""What a gateway answer means for a queued request: done (a result line), wait (back-pressure, not an attempt)
or retry (a failed attempt). The rules are the batch contract's; they live here so they read as one table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from services.batch.formats import result_line

BACK_PRESSURE_503 = frozenset({"yielding_to_interactive", "overloaded"})  # the gateway asks to come back later
RETRYABLE_STATUSES = frozenset({408})  # with every 5xx not listed above
DEFAULT_WAIT_S = 5.0
MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class Outcome:
    kind: Literal["done", "wait", "retry"]
    reason: str  # a bounded word, used as a metric label: ok, failed, yielding, rate_limited, server_error, ...
    ok: bool = False
    line: dict[str, Any] | None = None  # the result line, for "done" (and the last answer, for "retry")
    wait_s: float = 0.0


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return code if isinstance(code, str) else None
    return None


def _retry_after(headers: Any) -> float:
    try:
        value = float(headers.get("retry-after", ""))
    except ValueError:
        return DEFAULT_WAIT_S
    return min(max(value, 0.0), MAX_WAIT_S)


def from_answer(custom_id: str, status: int, headers: Any, raw: bytes) -> Outcome:
    """Classify the gateway's HTTP answer to one queued request."""
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", errors="replace")
    line = result_line(custom_id, status, body, upstream_request_id=headers.get("x-request-id"))
    code = _error_code(body)
    if 200 <= status < 300:
        return Outcome("done", "ok", ok=True, line=line)
    if status == 503 and code in BACK_PRESSURE_503:
        return Outcome("wait", "yielding", wait_s=_retry_after(headers))
    if status == 429 and code != "insufficient_quota":
        return Outcome("wait", "rate_limited", wait_s=_retry_after(headers))
    if status >= 500 or status in RETRYABLE_STATUSES:
        return Outcome("retry", "server_error" if status >= 500 else "timeout", line=line)
    return Outcome("done", "failed", line=line)


def no_answer(custom_id: str, reason: Literal["timeout", "connection"], detail: str) -> Outcome:
    """A request that got no HTTP answer: timed out, or the connection failed or dropped."""
    line = result_line(custom_id, None, error_code="request_timeout" if reason == "timeout" else "connection_error",
                       error_message=detail)
    return Outcome("retry", reason, line=line)


def poisoned(custom_id: str, attempts: int, last: Outcome | None) -> dict[str, Any]:
    """The error line of a request given up after ``attempts`` tries: the last answer when there was one
    (its status and body, as OpenAI's error file has them), else why none came."""
    if last is not None and last.line is not None:
        return last.line
    return result_line(custom_id, None, error_code="max_attempts_exceeded",
                       error_message=f"no result after {attempts} attempts (a worker stopped while holding it)")
