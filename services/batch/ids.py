"""Object ids in OpenAI's styles: ``file-...``, ``batch_...``, ``batch_req_...``."""

from __future__ import annotations

import secrets


def file_id() -> str:
    return "file-" + secrets.token_hex(12)


def batch_id() -> str:
    return "batch_" + secrets.token_hex(12)


def request_id() -> str:
    return "batch_req_" + secrets.token_hex(12)
