"""A judge stand-in: an OpenAI-protocol upstream that grades the requests asking for structured output.

A chat request that asks for a format (vLLM's ``structured_outputs`` with ``choice`` or ``json``, its older
``guided_choice``/``guided_json``, or OpenAI's ``response_format``) is answered with the grade, in that
format: ``"4"`` for a choice, ``{"score": 4}`` for JSON. Every other request gets the plain reply, so one
stand-in can also serve ordinary traffic. The grade is a score, a raw reply (garbage, to test parsing),
or a function of the judge prompt (to grade one arm's answers lower than the other's)::

    with JudgeStandin(score=4) as judge:
        judge.grade_with(lambda prompt: 2 if "canary" in prompt else 5)
        judge.grade_with("I think it is quite good")  # unparseable
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, Literal

from tests.standins.openai_api import OpenAIProvider, _content_text
from tests.standins.server import Provider, Standin

Grade = int | str | Callable[[str], int | str]


def requested_format(body: dict[str, Any]) -> Literal["choice", "json"] | None:
    """The reply format a chat request asks for, or None for free text."""
    structured = body.get("structured_outputs")
    if isinstance(structured, dict):
        if structured.get("choice") is not None:
            return "choice"
        if structured.get("json") is not None or structured.get("json_object"):
            return "json"
    if body.get("guided_choice") is not None:
        return "choice"
    if body.get("guided_json") is not None:
        return "json"
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
        return "json"
    return None


def prompt_text(body: dict[str, Any]) -> str:
    """Every message's text, joined: what a grading function looks at."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    return "\n".join(_content_text(m.get("content")) for m in messages if isinstance(m, dict))


class JudgeProvider(OpenAIProvider):
    standin: JudgeStandin

    def reply_for(self, body: dict[str, Any]) -> str:
        fmt = requested_format(body)
        if fmt is None:
            return self.standin.reply
        grade = self.standin.grade(prompt_text(body))
        if isinstance(grade, str):
            return grade
        return str(grade) if fmt == "choice" else json.dumps({"score": grade})


class JudgeStandin(Standin):
    """An OpenAI stand-in whose structured-output requests get a configurable grade (4 by default)."""

    def __init__(self, name: str = "judge", score: Grade = 4, reply: str | None = None, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        super().__init__(kind="openai", name=name, reply=reply, port=port, host=host)
        self._grade_lock = threading.Lock()
        self._grade: Grade = score

    def _make_provider(self) -> Provider:
        return JudgeProvider(self)

    def grade_with(self, grade: Grade) -> None:
        """A score (any int, out of range too), a raw reply, or a function of the judge prompt giving either."""
        with self._grade_lock:
            self._grade = grade

    def grade(self, prompt: str) -> int | str:
        with self._grade_lock:
            grade = self._grade
        return grade(prompt) if callable(grade) else grade
