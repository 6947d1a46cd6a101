"""An autoscaling/v2 HorizontalPodAutoscaler object's spec as services/hpa.py's ``HpaSpec``: kubesim's controller
and the console's Autoscaling pane read HPAs through this one parser, so what the console explains is what kubesim
runs."""

from __future__ import annotations

from typing import Any

from services.hpa import Behavior, HpaSpec, MetricSpec, ScalingPolicy, ScalingRules
from services.quantity import parse_quantity

Obj = dict[str, Any]


class SpecError(ValueError):
    """The HPA's spec cannot be turned into the algorithm's input."""


# ------------------------------------------------------------------------------------------------- the spec


def parse_spec(hpa: Obj) -> HpaSpec:
    """An autoscaling/v2 HorizontalPodAutoscaler's spec as the algorithm's HpaSpec; SpecError says what is wrong."""
    spec = hpa.get("spec") or {}
    try:
        metrics = tuple(_metric(entry) for entry in spec.get("metrics") or [])
        behavior = spec.get("behavior")
        minimum = spec.get("minReplicas")
        return HpaSpec(max_replicas=_integer(spec.get("maxReplicas"), "spec.maxReplicas"),
                       min_replicas=1 if minimum is None else _integer(minimum, "spec.minReplicas"),
                       metrics=metrics,
                       behavior=None if behavior is None else Behavior(_rules(behavior, "scaleUp"),
                                                                       _rules(behavior, "scaleDown")))
    except SpecError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise SpecError(str(exc)) from exc


def _integer(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    return value


def _metric(entry: Obj) -> MetricSpec:
    kind = entry.get("type")
    if kind not in ("Resource", "Pods", "Object", "External"):
        raise SpecError(f"unknown metric source type {kind!r}")
    source = entry.get(kind[0].lower() + kind[1:]) or {}
    if kind == "Resource":
        name = source.get("name")
    else:
        name = (source.get("metric") or {}).get("name")
    target = source.get("target") or {}
    target_type = target.get("type")
    field = {"Utilization": "averageUtilization", "AverageValue": "averageValue", "Value": "value"}.get(target_type)
    if field is None or field not in target:
        raise SpecError(f"metric {name!r}: target needs a type (Utilization, AverageValue, Value) and its value")
    value = target[field]
    amount = float(_integer(value, f"metric {name!r} averageUtilization")) if field == "averageUtilization" \
        else parse_quantity(value)
    described = source.get("describedObject") if kind == "Object" else None
    if kind == "Object" and not (described or {}).get("name"):
        raise SpecError(f"Object metric {name!r} needs describedObject.name")
    return MetricSpec(kind, name or "", target_type, amount, described_object=described)


def _rules(behavior: Obj, direction: str) -> ScalingRules | None:
    rules = behavior.get(direction)
    if rules is None:
        return None
    policies = rules.get("policies")
    tolerance = rules.get("tolerance")
    return ScalingRules(
        stabilization_window_seconds=rules.get("stabilizationWindowSeconds"),
        select_policy=rules.get("selectPolicy"),
        policies=None if policies is None else tuple(
            ScalingPolicy(policy.get("type"), _integer(policy.get("value"), f"{direction} policy value"),
                          _integer(policy.get("periodSeconds"), f"{direction} policy periodSeconds"))
            for policy in policies),
        tolerance=None if tolerance is None else parse_quantity(tolerance))
