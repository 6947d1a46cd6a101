"""Checking a batch input file (OpenAI's JSONL batch format) before anything is queued.

Every line must be a JSON object with a unique non-empty ``custom_id``, ``method`` POST, a ``url`` naming
the batch's endpoint and a ``body`` the gateway accepts (``check_body``, supplied by the gateway: its
own request checks against the configured routes and the key's). The first problem found refuses the
whole file, naming the line (1-based) and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from services.batch.formats import ENDPOINTS
from services.batch.store import QueuedRequest


class BodyRefused(Exception):
    """Raised by ``check_body`` with the reason a request body would be refused."""


class InvalidFile(Exception):
    def __init__(self, line: int | None, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


CheckBody = Callable[[str, str], None]
"""(endpoint, body as a JSON string) -> None, or BodyRefused."""


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def parse_input(content: bytes, *, endpoint: str | None, max_lines: int,
                check_body: CheckBody) -> tuple[str, list[QueuedRequest]]:
    """The requests of a batch input file and their endpoint. ``endpoint`` None (at upload) takes the first
    line's url and holds the others to it. Raises InvalidFile."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content[:exc.start].count(b"\n") + 1
        raise InvalidFile(line, f"not valid UTF-8 (at byte {exc.start} of the file)") from None
    requests: list[QueuedRequest] = []
    seen: dict[str, int] = {}
    # "\n" only: str.splitlines would also split inside strings holding U+2028 and other line separators.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        if len(requests) == max_lines:
            raise InvalidFile(number, f"more than {max_lines} requests in one batch (batch.max_lines)")
        try:
            item = json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise InvalidFile(number, f"not valid JSON: {exc}") from None
        if not isinstance(item, dict):
            raise InvalidFile(number, "must be a JSON object with custom_id, method, url and body")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise InvalidFile(number, "'custom_id' must be a non-empty string")
        if custom_id in seen:
            shown = json.dumps(custom_id)[:80]
            raise InvalidFile(number, f"custom_id {shown} is already used on line {seen[custom_id]}")
        seen[custom_id] = number
        if item.get("method") != "POST":
            raise InvalidFile(number, f"'method' must be \"POST\", not {json.dumps(item.get('method'))[:40]}")
        url = item.get("url")
        if url not in ENDPOINTS:
            raise InvalidFile(number, f"'url' must be one of {', '.join(ENDPOINTS)}, not {json.dumps(url)[:80]}")
        if endpoint is None:
            endpoint = url
        elif url != endpoint:
            raise InvalidFile(number, f"'url' is {url} but the batch's endpoint is {endpoint}; "
                                      "one batch holds requests to one endpoint")
        body = item.get("body")
        if not isinstance(body, dict):
            raise InvalidFile(number, "'body' must be a JSON object (the request)")
        if body.get("stream") is True:
            raise InvalidFile(number, "body: batch requests cannot stream ('stream': true)")
        encoded = json.dumps(body, separators=(",", ":"))
        try:
            check_body(url, encoded)
        except BodyRefused as exc:
            raise InvalidFile(number, f"body: {exc}") from None
        requests.append(QueuedRequest(custom_id, encoded))
    if not requests or endpoint is None:
        raise InvalidFile(None, "the file holds no requests")
    return endpoint, requests
