"""The three PATCH bodies kubesim accepts: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge.

Strategic merge patch is applied as a merge patch: maps merge, lists are replaced whole (a real server merges
lists such as containers by their merge keys). It is only accepted for built-in kinds; custom resources get 415,
as on a real API server."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

from services.kubesim.errors import ApiError

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(content_type: str, current: dict[str, Any], body: bytes, builtin: bool) -> dict[str, Any]:
    media = content_type.split(";")[0].strip().lower()
    if media == STRATEGIC and not builtin:
        raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                            f"{JSON_PATCH}, {MERGE}, {APPLY}")
    if media not in (MERGE, JSON_PATCH, STRATEGIC):
        raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                            f"{JSON_PATCH}, {MERGE}, {STRATEGIC}")
    try:
        patch = json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, f"error decoding patch: {exc}") from exc
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise ApiError(400, "json patch must be a list of operations")
        try:
            return jsonpatch.apply_patch(current, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, f"the server rejected our request due to an error in our request: {exc}",
                           reason="Invalid") from exc
    if not isinstance(patch, dict):
        raise ApiError(400, "a merge patch must be a JSON object")
    return merge_patch(current, patch)
