"""The three PATCH bodies kubesim accepts: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge.

Strategic merge patch is a merge patch whose lists of objects named in ``MERGE_KEYS`` (containers by name,
env by name, ports by containerPort or port, conditions by type...) merge element by element, with the
``$patch: delete`` and ``$patch: replace`` directives; other lists are replaced whole. That is keyed on the
field's name, not on the OpenAPI path as a real server does, and ``$retainKeys``/``$setElementOrder`` are
ignored. It is only accepted for built-in kinds: custom resources get 415, as on a real API server."""

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


MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "conditions": "type", "hostAliases": "ip", "ownerReferences": "uid",
    "ports": "containerPort",  # or "port" (Service ports): see _merge_key
}


def strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {key: copy.deepcopy(value) for key, value in patch.items() if key != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, _merge_key(key, value + result[key]))
        elif isinstance(value, list):
            result[key] = [_without_directives(item) for item in value]
        else:
            result[key] = strategic_merge(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str:
    if field == "ports" and not any(isinstance(item, dict) and "containerPort" in item for item in items):
        return "port"
    return MERGE_KEYS[field]


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if not all(isinstance(item, dict) and key in item for item in patch + current):
        return [_without_directives(item) for item in patch]
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        index = next((i for i, existing in enumerate(merged) if existing[key] == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(_without_directives(item))
        else:
            merged[index] = strategic_merge(merged[index], item)
    return merged


def _without_directives(item: Any) -> Any:
    return strategic_merge({}, item) if isinstance(item, dict) else copy.deepcopy(item)


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
    return strategic_merge(current, patch) if media == STRATEGIC else merge_patch(current, patch)
