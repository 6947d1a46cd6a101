"""How an audit entry's change reads (console/views/audit.py), for the Audit pane and `switchboard audit` alike."""

from __future__ import annotations

from console.views.audit import describe
from services.admin_api import AuditRecord


def record(**fields: object) -> AuditRecord:
    values: dict[str, object] = {"version": 3, "time": 1_764_000_000.0, "actor": "ops", "operator": "alice@bastion",
                                 "action": "set_weights", "target": "chat", "reason": "why", "before": None,
                                 "after": None}
    values.update(fields)
    return AuditRecord.model_validate(values)


def test_a_cluster_action_reads_as_its_outcome_and_the_patches_sent() -> None:
    patch = 'PATCH ai-prod/rollouts/ai-api/status (merge): {"status": {"abort": true}}'
    entry = record(kind="kubernetes", action="rollout.abort", target="kubesim/ai-prod/rollouts/ai-api",
                   after={"detail": [patch], "outcome": "ok"})
    assert describe(entry) == f"ok: {patch}"
    refused = record(kind="kubernetes", action="rollout.promote", after={"detail": [], "outcome": "refused"})
    assert describe(refused) == "refused: "


def test_gateway_changes_read_as_before_and_after() -> None:
    assert describe(record(before={"a": 50, "b": 50}, after={"a": 70, "b": 30})) == "a 50->70, b 50->30"
    assert describe(record(action="create_key", after={"name": "svc", "tier": "paid"})) == "created 'svc' (paid)"
