"""Every kubesim error leaves as a Kubernetes ``Status`` body, the shape the official client's ApiException carries."""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
}


class ApiError(Exception):
    """An API failure: ``code`` is the HTTP status, ``reason`` the Status reason (AlreadyExists is a 409 too)."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "InternalError")
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        return failure_status(self.code, self.reason, self.message, self.details)


def failure_status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def object_details(name: str, group: str, plural: str) -> dict[str, Any]:
    """The ``details`` block the API server attaches: the object's name, its group and its kind (the plural)."""
    return {"name": name, "group": group, "kind": plural}


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(404, f'{_qualified(group, plural)} "{name}" not found', details=object_details(name, group, plural))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(409, f'{_qualified(group, plural)} "{name}" already exists', reason="AlreadyExists",
                    details=object_details(name, group, plural))


def conflict(group: str, plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details=object_details(name, group, plural),
    )


def invalid(group: str, plural: str, kind: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    summary = ", ".join(f"{cause['field']}: {cause['message']}" for cause in causes)
    details = {**object_details(name, group, plural), "kind": kind, "causes": causes}
    return ApiError(422, f'{kind}.{group or "core"} "{name}" is invalid: {summary}', details=details)


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural
