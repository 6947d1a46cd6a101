"""The Autoscaling pane's view model: each HPA (a KEDA ScaledObject with its ``keda-hpa-<name>`` HPA as one entry)
with replicas against min and max, each metric's current figure against its target, the conditions, and *why* the
count is what it is. Pure and Textual-free.

What the console can know, and what it cannot. It reads the HPA object only: spec (metrics, min, max, behavior)
and the status the controller last wrote (currentReplicas, desiredReplicas, currentMetrics, conditions,
lastScaleTime). From those it computes the formula's answer with services/hpa.py (``explain``: the very algorithm
kubesim's controller runs), per metric ceil(current / target x replicas) within the tolerance, and reads what held
the count back from the conditions' reasons (ScaleUpLimit, ScaleDownLimit, ScaleUpStabilized, ScaleDownStabilized,
TooManyReplicas, TooFewReplicas), naming the behavior's numbers. It cannot know the controller's in-memory history
(its past recommendations and scale events): so not when a stabilization window lets go, nor how much of a policy's
period is used up, nor the per-pod samples (the controller discounts missing and unready pods; the status shows only
the averages). The status is as fresh as the controller's last sync (15 s by default), and conditions can lag the
metrics by one sync. A status without currentMetrics (no sync yet, or metrics unavailable) gives no formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from console.sources.kube import KubeSnapshot
from console.views.pods import age_text, timestamp
from services.hpa import Behavior, ControllerConfig, HpaSpec, MetricSpec, ScalingRules, default_behavior, explain
from services.hpa_spec import SpecError, parse_spec
from services.quantity import parse_quantity

Obj = dict[str, Any]
KEDA_HPA_PREFIX = "keda-hpa-"
CONDITIONS = ("AbleToScale", "ScalingActive", "ScalingLimited")
CONTROLLER = ControllerConfig()


@dataclass(frozen=True)
class MetricView:
    label: str  # "cpu (Resource)", "http_requests_per_second (Pods)"
    current: str  # "95%", "125", "-" when the status has no figure
    target: str  # "70%", "100 avg", "5 total"
    proposal: int | None  # what the formula proposes for this metric alone
    above: bool  # current over target (beyond the tolerance)


@dataclass(frozen=True)
class ConditionView:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class HpaView:
    key: str  # namespace/name of the HPA
    title: str  # "HPA ai-api-hpa", "ScaledObject queue-worker (HPA keda-hpa-queue-worker)"
    target: str  # "Deployment ai-api"
    current: int | None
    desired: int | None
    minimum: int
    maximum: int
    metrics: tuple[MetricView, ...]
    conditions: tuple[ConditionView, ...]
    last_scale: str  # "3m ago", "never"
    formula: int | None  # the formula's count for the reported metrics (None: no metrics reported)
    why: tuple[str, ...]  # sentences: the formula, then what holds the count back
    error: str = ""  # the spec could not be read

    @property
    def at_max(self) -> bool:
        return self.current is not None and self.current >= self.maximum

    @property
    def at_min(self) -> bool:
        return self.current is not None and self.current <= self.minimum


@dataclass(frozen=True)
class AutoscalingView:
    entries: tuple[HpaView, ...]
    notes: tuple[str, ...]  # kinds the cluster does not serve, and why


# ---- numbers as the operator reads them ----------------------------------------------------------------------


def figure(value: float) -> str:
    """A quantity without noise: 125, 0.5, 1.25k."""
    if abs(value) >= 10_000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def _target_text(metric: MetricSpec) -> str:
    if metric.target_type == "Utilization":
        return f"{figure(metric.target)}%"
    if metric.target_type == "AverageValue":
        return f"{figure(metric.target)}/pod"
    return figure(metric.target)


def _status_name(entry: Obj) -> tuple[str, str, Obj]:
    """(type, name, current) of one status.currentMetrics entry."""
    kind = str(entry.get("type") or "")
    body = entry.get(kind[:1].lower() + kind[1:]) or {}
    name = body.get("name") if kind in ("Resource", "ContainerResource") else (body.get("metric") or {}).get("name")
    return kind, str(name or ""), body.get("current") or {}


def current_figures(hpa: HpaSpec, status: Obj) -> dict[str, float]:
    """status.currentMetrics as ``explain`` takes them: MetricSpec.key -> utilization %, average or value."""
    wanted = {m.key: m for m in hpa.effective_metrics}
    figures: dict[str, float] = {}
    for entry in status.get("currentMetrics") or []:
        kind, name, current = _status_name(entry)
        metric = wanted.get(f"{kind}/{name}")
        if metric is None:
            continue
        field = {"Utilization": "averageUtilization", "AverageValue": "averageValue", "Value": "value"}[
            metric.target_type]
        if field not in current:
            continue
        try:
            figures[metric.key] = float(current[field]) if field == "averageUtilization" else parse_quantity(
                current[field])
        except (TypeError, ValueError):
            continue
    return figures


# ---- what holds the count back ------------------------------------------------------------------------------


def policy_text(rules: ScalingRules, sign: str) -> str:
    """"+4 pods or 100% per 15 s" from a direction's policies (Max: whichever allows more; Min: the lesser)."""
    policies = rules.policies or ()
    amounts = [(f"{sign}{p.value} pods" if p.type == "Pods" else f"{p.value}%", p.period_seconds) for p in policies]
    joiner = " and " if rules.select_policy == "Min" else " or "
    periods = {period for _, period in amounts}
    if len(periods) == 1:
        text = joiner.join(amount for amount, _ in amounts) + f" per {periods.pop()} s"
    else:
        text = joiner.join(f"{amount} per {period} s" for amount, period in amounts)
    return f"the lesser of {text}" if rules.select_policy == "Min" and len(amounts) > 1 else text


def held_back(reason: str, spec: HpaSpec, formula: int | None) -> str | None:
    """The sentence for one condition reason that holds the count back, with the behavior's numbers."""
    behavior = default_behavior(spec.behavior, CONTROLLER) if spec.behavior is not None else None
    wants = f" (the formula wants {formula})" if formula is not None else ""
    if reason == "TooManyReplicas":
        return f"capped at maxReplicas {spec.max_replicas}{wants}"
    if reason == "TooFewReplicas":
        return f"held at minReplicas {spec.min_replicas}{wants}"
    if reason == "ScaleUpLimit":
        if behavior is None or behavior.scale_up is None:
            return "scale-up limited to max(2 x current, 4) replicas per sync (no behavior set)"
        return f"scale-up limited to {policy_text(behavior.scale_up, '+')}"
    if reason == "ScaleDownLimit":
        assert behavior is None or behavior.scale_down is not None
        if behavior is None or behavior.scale_down is None:
            return None  # without behavior there is no scale-down rate limit
        return f"scale-down limited to {policy_text(behavior.scale_down, '-')}"
    if reason in ("ScaleDownStabilized", "ScaleUpStabilized"):
        up = reason == "ScaleUpStabilized"
        rules = _rules(behavior, up)
        window = rules.stabilization_window_seconds if rules is not None else int(CONTROLLER.downscale_stabilization)
        direction = "scale-up" if up else "scale-down"
        pick = "lowest" if up else "highest"
        return f"held by the {window} s {direction} window (the {pick} recommendation in it wins){wants}"
    return None


def _rules(behavior: Behavior | None, up: bool) -> ScalingRules | None:
    if behavior is None:
        return None
    return behavior.scale_up if up else behavior.scale_down


# ---- one HPA ------------------------------------------------------------------------------------------------


def _conditions(status: Obj) -> tuple[ConditionView, ...]:
    found = {c.get("type"): c for c in status.get("conditions") or []}
    return tuple(ConditionView(t, str(found[t].get("status") or ""), str(found[t].get("reason") or ""),
                               str(found[t].get("message") or "")) for t in CONDITIONS if t in found)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def hpa_view(hpa: Obj, wall_now: float, scaled_object: Obj | None = None) -> HpaView:
    meta, spec, status = hpa.get("metadata") or {}, hpa.get("spec") or {}, hpa.get("status") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    ref = spec.get("scaleTargetRef") or {}
    title = f"HPA {name}"
    if scaled_object is not None:
        title = f"ScaledObject {(scaled_object.get('metadata') or {}).get('name')} (HPA {name})"
    current, desired = _int(status.get("currentReplicas")), _int(status.get("desiredReplicas"))
    conditions = _conditions(status)
    scaled = timestamp(status.get("lastScaleTime"))
    base = dict(key=f"{namespace}/{name}", title=title, target=f"{ref.get('kind') or '?'} {ref.get('name') or '?'}",
                current=current, desired=desired, conditions=conditions,
                last_scale="never" if scaled is None else f"{age_text(wall_now - scaled)} ago")
    try:
        parsed = parse_spec(hpa)
    except SpecError as exc:
        return HpaView(**base, minimum=_int(spec.get("minReplicas")) or 1, maximum=_int(spec.get("maxReplicas")) or 0,
                       metrics=(), formula=None, why=(), error=f"spec not understood: {exc}")
    figures = current_figures(parsed, status)
    decision = explain(parsed, current, figures, CONTROLLER) if current and figures else None
    proposals = {p.metric.key: p.replicas for p in decision.proposals} if decision else {}
    metrics = []
    for metric in parsed.effective_metrics:
        now_figure = figures.get(metric.key)
        shown = "-" if now_figure is None else (
            f"{figure(now_figure)}%" if metric.target_type == "Utilization" else figure(now_figure))
        above = now_figure is not None and now_figure > metric.target * (1 + CONTROLLER.tolerance)
        metrics.append(MetricView(f"{metric.name} ({metric.type})", shown, _target_text(metric),
                                  proposals.get(metric.key), above))
    formula = decision.metric_replicas if decision else None
    return HpaView(**base, minimum=parsed.min_replicas, maximum=parsed.max_replicas, metrics=tuple(metrics),
                   formula=formula, why=_why(parsed, decision, formula, current, figures, conditions))


def formula_text(metric: MetricSpec | None, value: float | None, replicas: int, formula: int) -> str:
    """The winning metric's arithmetic: ``formula: ceil(95% / 70% x 20) = 28 (cpu)``."""
    if metric is None or value is None:
        return f"formula: {formula} replicas"
    unit = "%" if metric.target_type == "Utilization" else ""
    ratio = value / metric.target
    if formula == replicas and abs(ratio - 1) <= CONTROLLER.tolerance:
        return f"formula: {metric.name} within {CONTROLLER.tolerance:.0%} of its target: stays at {replicas}"
    if metric.type in ("Object", "External") and metric.target_type == "AverageValue":
        sum_ = f"{figure(value * replicas)}"
        return f"formula: ceil({sum_} / {figure(metric.target)}) = {formula} ({metric.name}, total over target)"
    return (f"formula: ceil({figure(value)}{unit} / {figure(metric.target)}{unit} x {replicas}) = {formula} "
            f"({metric.name})")


def _why(spec: HpaSpec, decision: Any, formula: int | None, current: int | None, figures: dict[str, float],
         conditions: tuple[ConditionView, ...]) -> tuple[str, ...]:
    lines: list[str] = []
    if decision is None or formula is None or current is None:
        lines.append("no current metrics reported yet: the formula cannot be computed")
    else:
        winner = next((p.metric for p in decision.proposals if p.metric.key == decision.winning_metric), None)
        lines.append(formula_text(winner, figures.get(winner.key) if winner else None, current, formula))
    by_type = {c.type: c for c in conditions}
    reasons = [c.reason for c in (by_type.get("AbleToScale"), by_type.get("ScalingLimited"))
               if c is not None and (c.type != "ScalingLimited" or c.status == "True")]
    for reason in reasons:
        sentence = held_back(reason, spec, formula)
        if sentence:
            lines.append(sentence)
    active = by_type.get("ScalingActive")
    if active is not None and active.status == "False":
        lines.append(f"not scaling: {active.reason}")
    return tuple(lines)


def autoscaling_view(snapshot: KubeSnapshot, wall_now: float) -> AutoscalingView:
    """Every HPA, the KEDA ones under their ScaledObject; notes for the kinds the cluster does not serve."""
    notes = []
    for kind, label in (("hpas", "HorizontalPodAutoscalers"), ("scaledobjects", "ScaledObjects")):
        state = snapshot.kinds.get(kind)
        if state is not None and state.absent is not None:
            notes.append(f"{label}: {state.absent.split(': ', 1)[-1]}")
    scaled = {}
    for obj in snapshot.objects("scaledobjects"):
        meta = obj.get("metadata") or {}
        hpa_name = (obj.get("status") or {}).get("hpaName") or f"{KEDA_HPA_PREFIX}{meta.get('name')}"
        scaled[(meta.get("namespace"), hpa_name)] = obj
    entries = []
    for hpa in snapshot.objects("hpas"):
        meta = hpa.get("metadata") or {}
        entries.append(hpa_view(hpa, wall_now, scaled.pop((meta.get("namespace"), meta.get("name")), None)))
    notes += [f"ScaledObject {(obj.get('metadata') or {}).get('name')}: no HPA {KEDA_HPA_PREFIX}"
              f"{(obj.get('metadata') or {}).get('name')} yet (KEDA creates it)" for obj in scaled.values()]
    return AutoscalingView(tuple(entries), tuple(notes))
