"""The objects the batch API answers with, in OpenAI's shapes, built from what the store keeps in Redis.

A batch is one Redis hash of strings; :func:`batch_object` turns it into OpenAI's Batch object (what
``client.batches.retrieve`` parses). Result lines are the JSONL lines of OpenAI's output and error files.
"""

from __future__ import annotations

import json
from typing import Any

from services.batch.ids import request_id

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
"""OpenAI's endpoint names -> the stream each is queued on."""

FINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
TIMESTAMPS = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
              "expired_at", "cancelling_at", "cancelled_at")


def _int_or_none(value: str | None) -> int | None:
    return int(float(value)) if value else None


def batch_object(fields: dict[str, str]) -> dict[str, Any]:
    """OpenAI's Batch object from the batch's hash."""
    errors = fields.get("errors")
    metadata = fields.get("metadata")
    return {
        "id": fields["id"],
        "object": "batch",
        "endpoint": fields["endpoint"],
        "errors": json.loads(errors) if errors else None,
        "input_file_id": fields["input_file_id"],
        "completion_window": fields.get("completion_window", "24h"),
        "status": fields["status"],
        "output_file_id": fields.get("output_file_id") or None,
        "error_file_id": fields.get("error_file_id") or None,
        **{name: _int_or_none(fields.get(name)) for name in TIMESTAMPS},
        "request_counts": {"total": int(fields.get("total", 0)), "completed": int(fields.get("completed", 0)),
                           "failed": int(fields.get("failed", 0))},
        "metadata": json.loads(metadata) if metadata else None,
    }


def file_object(fields: dict[str, str]) -> dict[str, Any]:
    """OpenAI's File object from the file's hash."""
    return {
        "id": fields["id"],
        "object": "file",
        "bytes": int(fields["bytes"]),
        "created_at": int(float(fields["created_at"])),
        "expires_at": _int_or_none(fields.get("expires_at")),
        "filename": fields["filename"],
        "purpose": fields["purpose"],
        "status": "processed",
        "status_details": None,
    }


def result_line(custom_id: str, status_code: int | None, body: Any = None, *, upstream_request_id: str | None = None,
                error_code: str | None = None, error_message: str | None = None) -> dict[str, Any]:
    """One line of an output or error file: the upstream's answer, or ``error`` when none came."""
    response = None
    if status_code is not None:
        response = {"status_code": status_code, "request_id": upstream_request_id or request_id(), "body": body}
    error = None if error_code is None and error_message is None else {"code": error_code, "message": error_message}
    return {"id": request_id(), "custom_id": custom_id, "response": response, "error": error}
