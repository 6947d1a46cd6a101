"""Label selectors (=, ==, !=, in, notin, exists, !exists) and field selectors, as ``?labelSelector=`` and
``?fieldSelector=`` spell them. A malformed selector is a 400, as on a real API server."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.kubesim.errors import ApiError

Predicate = Callable[[dict[str, Any]], bool]

_SET_TERM = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:\s(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_TERM = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")

# Field selectors every kind supports, then those a kind adds (the API server refuses the rest).
COMMON_FIELDS = ("metadata.name", "metadata.namespace")
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": ("status.phase", "spec.nodeName"),
    "Event": ("involvedObject.kind", "involvedObject.name", "involvedObject.namespace", "involvedObject.uid",
              "reason", "type"),
}


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term for term in terms if term.strip()]


def label_selector(text: str | None) -> Predicate:
    """A predicate over an object's metadata.labels; ``ApiError(400)`` for a selector that does not parse."""
    if not text:
        return lambda obj: True
    tests = [_label_term(term) for term in _split_terms(text)]
    return lambda obj: all(test(obj.get("metadata", {}).get("labels") or {}) for test in tests)


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    if match := _EQ_TERM.match(term):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _SET_TERM.match(term):
        negated, key, op, values_text = match.groups()
        if op and negated:
            raise ApiError(400, f"unable to parse requirement: {term.strip()!r}")
        if op:
            values = {value.strip() for value in values_text.split(",") if value.strip()}
            if not values:
                raise ApiError(400, f"unable to parse requirement: {op} needs at least one value in {term.strip()!r}")
            if op == "in":
                return lambda labels: labels.get(key) in values
            return lambda labels: labels.get(key) not in values
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ApiError(400, f"unable to parse requirement: {term.strip()!r}")


def field_selector(text: str | None, kind: str) -> Predicate:
    """A predicate over the supported field paths of ``kind``; ``ApiError(400)`` for any other field."""
    if not text:
        return lambda obj: True
    allowed = COMMON_FIELDS + KIND_FIELDS.get(kind, ())
    tests: list[Predicate] = []
    for term in _split_terms(text):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise ApiError(400, f"invalid field selector: {term.strip()!r}")
        path, op, value = match.groups()
        if path not in allowed:
            raise ApiError(400, f'field label not supported: "{path}"')
        tests.append(_field_test(path.split("."), op == "!=", value))
    return lambda obj: all(test(obj) for test in tests)


def _field_test(parts: list[str], negated: bool, value: str) -> Predicate:
    def test(obj: dict[str, Any]) -> bool:
        current: Any = obj
        for part in parts:
            current = current.get(part) if isinstance(current, dict) else None
        actual = "" if current is None else str(current)
        return (actual != value) if negated else (actual == value)

    return test
