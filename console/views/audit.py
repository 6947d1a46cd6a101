"""How an audit entry's change reads, in the Audit pane and from `switchboard audit` alike."""

from __future__ import annotations

from typing import Any

from services.admin_api import AuditRecord


def describe(entry: AuditRecord) -> str:
    """A gateway change as ``change(before, after)``; an external action (a rollout patch sent to the cluster) as
    its outcome and the exact patches: ``ok: PATCH ai-prod/rollouts/ai-api/status (merge): {...}``."""
    if entry.kind != "gateway" and isinstance(entry.after, dict):
        detail = entry.after.get("detail") or []
        return f"{entry.after.get('outcome', '?')}: " + "; ".join(str(line) for line in detail)
    return change(entry.before, entry.after)


def change(before: Any, after: Any) -> str:
    """``a 50->70, b 50->30`` for weights, ``drained false->true`` for drains, ``created key 'svc' (paid)``
    for a record that appears (``deleted ...`` when it goes), else ``before -> after``."""
    if before is None and isinstance(after, dict):
        return f"created {_record(after)}"
    if after is None and isinstance(before, dict):
        return f"deleted {_record(before)}"
    if isinstance(before, dict) and isinstance(after, dict):
        keys = list(dict.fromkeys([*before, *after]))
        parts = [f"{k} {_v(before.get(k))}->{_v(after.get(k))}" for k in keys if before.get(k) != after.get(k)]
        return ", ".join(parts) or "no change"
    return f"{_v(before)} -> {_v(after)}"


def _record(record: dict[str, Any]) -> str:
    name = record.get("name")
    if name is None:
        return "record"
    return f"'{name}'" + (f" ({record['tier']})" if "tier" in record else "")


def _v(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)
