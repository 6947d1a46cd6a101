"""Reading a ``multipart/form-data`` body (what ``client.files.create`` sends) that is already in memory.

A few lines instead of a dependency: the batch API takes one small form (``purpose`` and ``file``),
and the body is read whole under a size limit anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class FormError(ValueError):
    pass


@dataclass(frozen=True)
class FormField:
    name: str
    filename: str | None
    data: bytes


def _params(header: str) -> dict[str, str]:
    values = {}
    for name, value in _PARAM.findall(header):
        if value.startswith('"'):
            # Backslash escapes (RFC 7578) and the HTML5 percent-escapes httpx and browsers write for '"', CR, LF.
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
            value = value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
        values[name.lower()] = value
    return values


def boundary_of(content_type: str) -> str:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind != "multipart/form-data":
        raise FormError(f"the body must be multipart/form-data, not {kind or 'unnamed'}")
    boundary = _params(content_type).get("boundary")
    if not boundary or len(boundary) > 200:
        raise FormError("multipart/form-data without a boundary")
    return boundary


def parse_form(content_type: str, body: bytes) -> dict[str, FormField]:
    """The form's fields by name (the first of each name). Raises FormError."""
    delimiter = b"\r\n--" + boundary_of(content_type).encode("latin-1")
    parts = (b"\r\n" + body).split(delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise FormError("the multipart body is cut short (no closing boundary)")
    fields: dict[str, FormField] = {}
    for part in parts[1:-1]:
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            raise FormError("a multipart part has no header block")
        disposition = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
        if disposition is None or not disposition.lower().startswith("form-data"):
            raise FormError("a multipart part has no Content-Disposition: form-data")
        params = _params(disposition)
        if "name" not in params:
            raise FormError("a multipart part has no name")
        fields.setdefault(params["name"], FormField(params["name"], params.get("filename"), data))
    return fields
