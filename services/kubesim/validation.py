"""Schema validation of every write, as a real API server does it: built-in kinds against the OpenAPI schemas
kubernetes-validate ships (strict: an unknown field is refused, as with field validation Strict), the Argo Rollouts
and KEDA kinds against the ``openAPIV3Schema`` of their CRDs (packaged in ``crds/``). A refused write is a 422
``Invalid`` Status whose ``details.causes`` name each bad field.

Schemas are loaded and compiled once per process (the CRDs are large; the contract tests start many servers)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from services.kubesim.discovery import KUBE_VERSION, ResourceKind
from services.kubesim.errors import invalid

Obj = dict[str, Any]
Validator = Any  # a compiled jsonschema validator
CRD_FILES = {
    ("argoproj.io", "rollouts"): "argo-rollouts-rollout-crd.yaml",
    ("argoproj.io", "analysisruns"): "argo-rollouts-analysis-run-crd.yaml",
    ("argoproj.io", "analysistemplates"): "argo-rollouts-analysis-template-crd.yaml",
    ("keda.sh", "scaledobjects"): "keda-scaledobjects-crd.yaml",
}
SCHEMA_VERSION = f"{KUBE_VERSION['major']}.{KUBE_VERSION['minor']}.0"  # the schemas of the version kubesim reports
MAX_CAUSES = 20


def validate_schema(kind: ResourceKind, obj: Obj, old: Obj | None) -> None:
    """A ``Store`` validator: raises ApiError(422) listing every schema violation of ``obj``."""
    validator = schema_validator(kind)
    if validator is None:
        return
    errors = list(validator.iter_errors(obj))
    if not errors:
        return
    causes = [cause for error in errors for cause in _causes(best_match([error]))][:MAX_CAUSES]
    name = str((obj.get("metadata") or {}).get("name", ""))
    raise invalid(kind.group, kind.plural, kind.kind, name, causes)


def crd_text(filename: str) -> str:
    """The packaged CRD file's text (read from the installed package, never from the source tree)."""
    return resources.files("services.kubesim").joinpath("crds", filename).read_text(encoding="utf-8")


@functools.cache
def schema_validator(kind: ResourceKind) -> Validator | None:
    """The compiled validator for a kind, or None for a kind that has no schema (SelfSubjectAccessReview)."""
    if kind.builtin:
        return _builtin_validator(kind)
    filename = CRD_FILES.get((kind.group, kind.plural))
    return _crd_validator(filename, kind.version) if filename else None


# --- built-in kinds ----------------------------------------------------------------------------------------------

def _schema_dir() -> Any:
    return resources.files("kubernetes_validate").joinpath("kubernetes-json-schema", f"v{SCHEMA_VERSION}-local-strict")


@functools.cache
def _definitions() -> Resource[Any]:
    return Resource.from_contents(json.loads(_schema_dir().joinpath("_definitions.json").read_text()))


def _builtin_validator(kind: ResourceKind) -> Validator | None:
    """kubernetes-validate's own lookup (``validate(data, version, strict=True)``), with the schema kept compiled."""
    group = kind.group.split(".")[0]
    api_version = f"{group}-{kind.version}" if group else kind.version
    filename = f"{kind.kind.lower()}-{api_version}.json"
    path = _schema_dir().joinpath(filename)
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = _definitions() @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


# --- custom resources --------------------------------------------------------------------------------------------

def _crd_validator(filename: str, version: str) -> Validator:
    crd = yaml.load(crd_text(filename), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    served = [entry for entry in crd["spec"]["versions"] if entry["name"] == version]
    if not served:
        raise RuntimeError(f"{filename} has no version {version}")
    schema = _structural(served[0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft4Validator(schema)


def _structural(node: Any) -> Any:
    """An OpenAPI v3 structural schema as plain JSON Schema: ``nullable`` and ``x-kubernetes-int-or-string`` become
    types, and an object with declared properties refuses any other field unless it sets
    ``x-kubernetes-preserve-unknown-fields`` (the API server's pruning, made strict)."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _structural(value) for key, value in node.items()}
    if schema.get("x-kubernetes-int-or-string"):
        schema["type"] = ["integer", "string"]
    if schema.pop("nullable", False) and "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"]
    if schema.get("x-kubernetes-embedded-resource"):
        schema.setdefault("properties", {})
        for key in ("apiVersion", "kind"):
            schema["properties"].setdefault(key, {"type": "string"})
        schema["properties"].setdefault("metadata", {"type": "object"})
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    return schema


# --- errors as the API server words them -------------------------------------------------------------------------

def _causes(error: ValidationError) -> list[dict[str, str]]:
    where = _field(error.absolute_path)
    value = json.dumps(error.instance)[:80]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        declared = error.schema.get("properties") or {}
        unknown = sorted(key for key in error.instance if key not in declared)
        return [{"field": _join(where, key), "reason": "FieldValueInvalid",
                 "message": f'unknown field "{_join(where, key)}": field not declared in schema'} for key in unknown]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return [{"field": _join(where, missing), "reason": "FieldValueRequired", "message": "Required value"}]
    if error.validator == "type":
        return [{"field": where, "reason": "FieldValueTypeInvalid",
                 "message": f"Invalid value: {value}: {where} in body must be of type {_types(error.validator_value)}"}]
    if error.validator == "enum":
        supported = ", ".join(json.dumps(option) for option in error.validator_value)
        return [{"field": where, "reason": "FieldValueNotSupported",
                 "message": f"Unsupported value: {value}: supported values: {supported}"}]
    return [{"field": where, "reason": "FieldValueInvalid", "message": f"Invalid value: {value}: {error.message}"}]


def _field(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else _join(text, str(part))[len(text):]
    return text or "<root>"


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent and parent != "<root>" else key


def _types(expected: Any) -> str:
    names = [name for name in (expected if isinstance(expected, list) else [expected]) if name != "null"]
    return "/".join(names)

