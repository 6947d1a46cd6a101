"""kubesim's /openapi/v3: the index of group versions and, per group version, the operations on each path.

Why it exists: kubectl validates what it sends (``--validate=strict`` by default). It first asks /openapi/v3 whether
the server validates fields itself, by looking for a ``fieldValidation`` query parameter on the PATCH operation that
carries the kind's ``x-kubernetes-group-version-kind``; when it finds one it leaves validation to the server
(kubesim validates every write against the kinds' schemas). Without the document kubectl falls back to the protobuf
/openapi/v2, which kubesim does not serve, and ``kubectl create -f`` / ``apply -f`` fail before sending anything.

The documents carry operations, not schemas: ``kubectl explain`` has nothing to read, and the PATCH request bodies
name no strategic-merge content type, so ``kubectl apply`` computes built-in kinds' strategic merge patches from its
own compiled-in types (as it does for any server whose document lacks them) and custom kinds' as JSON merge patches.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from services.kubesim.discovery import Registry, ResourceKind

OPENAPI_VERSION = "3.0.0"
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
WRITE_QUERY = ("dryRun", "fieldManager", "fieldValidation")
LIST_QUERY = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "timeoutSeconds", "watch",
              "allowWatchBookmarks")


def group_version_path(group: str, version: str) -> str:
    """The key /openapi/v3 lists a group version under: ``api/v1`` for the core group, ``apis/<group>/<version>``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


class OpenApi:
    """Builds the documents once per registry (they never change while kubesim runs)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.documents: dict[str, dict[str, Any]] = {}
        for kind in registry.kinds:
            key = group_version_path(kind.group, kind.version)
            document = self.documents.setdefault(key, _empty_document(key))
            document["paths"].update(_paths(kind))

    def index(self) -> dict[str, Any]:
        """``GET /openapi/v3``: each group version with the URL of its document (the hash lets clients cache it)."""
        return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={_hash(document)}"}
                          for key, document in self.documents.items()}}

    def document(self, key: str) -> dict[str, Any] | None:
        """``GET /openapi/v3/<key>``, or None when no kind is served under that group version."""
        return self.documents.get(key)


def _empty_document(key: str) -> dict[str, Any]:
    return {"openapi": OPENAPI_VERSION, "info": {"title": "Kubernetes (kubesim, SIMULATED)", "version": key},
            "paths": {}, "components": {"schemas": {}}}


def _hash(document: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32].upper()


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": True} for name in names]


def _operation(kind: ResourceKind, verb: str, action: str, query: tuple[str, ...] = (),
               patch_types: tuple[str, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{verb}{kind.kind}",
        "parameters": _query(*query),
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
    }
    if patch_types:
        operation["requestBody"] = {"content": {name: {"schema": {"type": "object"}} for name in patch_types},
                                    "required": True}
    elif action in ("post", "put"):
        operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}},
                                    "required": True}
    return operation


def _paths(kind: ResourceKind) -> dict[str, dict[str, Any]]:
    prefix = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    scope = f"{prefix}/namespaces/{{namespace}}" if kind.namespaced else prefix
    path_parameters = [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
                       ] if kind.namespaced else []
    verbs = set(kind.verbs)
    collection: dict[str, Any] = {"parameters": path_parameters}
    if "list" in verbs:
        collection["get"] = _operation(kind, "list", "list", LIST_QUERY)
    if "create" in verbs:
        collection["post"] = _operation(kind, "create", "post", WRITE_QUERY)
    if "deletecollection" in verbs:
        collection["delete"] = _operation(kind, "deletecollection", "deletecollection", LIST_QUERY)
    paths = {f"{scope}/{kind.plural}": collection}
    if not verbs & {"get", "update", "patch", "delete"}:
        return paths
    named = [*path_parameters, {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    item: dict[str, Any] = {"parameters": named}
    if "get" in verbs:
        item["get"] = _operation(kind, "read", "get")
    if "update" in verbs:
        item["put"] = _operation(kind, "replace", "put", WRITE_QUERY)
    if "patch" in verbs:
        item["patch"] = _operation(kind, "patch", "patch", (*WRITE_QUERY, "force"), PATCH_TYPES)
    if "delete" in verbs:
        item["delete"] = _operation(kind, "delete", "delete", ("dryRun", "gracePeriodSeconds", "propagationPolicy"))
    paths[f"{scope}/{kind.plural}/{{name}}"] = item
    return paths
