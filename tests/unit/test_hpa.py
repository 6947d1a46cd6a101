"""The HPA algorithm (services/hpa.py) against worked examples computed by hand from the Kubernetes
documentation and the controller's code as ../shared/reference/k8s.md section 1 gives it. Each case has its
arithmetic in a comment. Quantities are compared in milli-units as the controller does."""

from __future__ import annotations

import pytest

from services.hpa import (
    Behavior,
    ControllerConfig,
    History,
    HpaSpec,
    MetricReading,
    MetricSpec,
    PodInfo,
    PodMetric,
    Recommendation,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    decide,
)

NOW = 10_000.0  # far past every pod's start, so the CPU initialisation period is over
CPU = MetricSpec("Resource", "cpu", "Utilization", 50)
RPS = MetricSpec("Pods", "http_requests_per_second", "AverageValue", 100)


def pods(count: int, cpu_request: float = 1.0, prefix: str = "p") -> list[PodInfo]:
    return [PodInfo(f"{prefix}{i}", requests={"cpu": cpu_request}) for i in range(count)]


def samples(values: dict[str, float], at: float = NOW) -> MetricReading:
    return MetricReading(pods={name: PodMetric(value, timestamp=at) for name, value in values.items()})


def per_pod(pod_list: list[PodInfo], *values: float) -> MetricReading:
    return samples({pod.name: value for pod, value in zip(pod_list, values, strict=False)})


def conditions(decision) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in decision.conditions}


# ------------------------------------------------------------------------------------ the formula


def test_the_documented_formula_doubles_at_twice_the_target_and_halves_at_half():
    group = pods(4)
    hpa = HpaSpec(max_replicas=20, metrics=(RPS,))
    # 200 / 100 = 2.0 -> ceil(4 x 2.0) = 8; the legacy limit max(2 x 4, 4) = 8 lets it through
    up = decide(hpa, 4, group, {RPS.key: per_pod(group, 200, 200, 200, 200)}, History(), NOW)
    assert (up.desired_replicas, up.metric_replicas, up.winning_metric) == (8, 8, RPS.key)
    assert up.rescale_reason == "Pods/http_requests_per_second above target"
    assert conditions(up) == {
        "AbleToScale": ("True", "SucceededRescale"),
        "ScalingActive": ("True", "ValidMetricFound"),
        "ScalingLimited": ("False", "DesiredWithinRange"),
    }
    assert up.current_metrics == (
        {"type": "Pods", "pods": {"metric": {"name": RPS.name}, "current": {"averageValue": "200"}}},
    )
    # 50 / 100 = 0.5 -> ceil(4 x 0.5) = 2
    down = decide(hpa, 4, group, {RPS.key: per_pod(group, 50, 50, 50, 50)}, History(), NOW)
    assert down.desired_replicas == 2
    assert down.rescale_reason == "All metrics below target"


def test_cpu_utilization_is_a_truncated_ratio_of_sums():
    group = pods(3, cpu_request=0.5)
    hpa = HpaSpec(max_replicas=20, metrics=(CPU,))
    # (400 + 450 + 500)m x 100 / 1500m = 90% -> 90 / 50 = 1.8 -> ceil(1.8 x 3) = ceil(5.4) = 6
    decision = decide(hpa, 3, group, {CPU.key: per_pod(group, 0.4, 0.45, 0.5)}, History(), NOW)
    assert decision.desired_replicas == 6
    assert decision.current_metrics == (
        {
            "type": "Resource",
            "resource": {"name": "cpu", "current": {"averageValue": "450m", "averageUtilization": 90}},
        },
    )


def test_the_truncated_utilization_can_land_inside_the_tolerance():
    group = pods(3)
    target30 = MetricSpec("Resource", "cpu", "Utilization", 30)
    hpa = HpaSpec(max_replicas=20, metrics=(target30,))
    # (333 + 333 + 334)m x 100 / 3000m = 33.33 -> truncated to 33 -> 33 / 30 = 1.1 <= 1 + 0.1: no change
    # (untruncated, 1.111 would give ceil(3.33) = 4)
    decision = decide(hpa, 3, group, {target30.key: per_pod(group, 0.333, 0.333, 0.334)}, History(), NOW)
    assert decision.desired_replicas == 3
    assert decision.metric_replicas == 3


def test_tolerance_default_and_configured():
    group = pods(5)
    hpa = HpaSpec(max_replicas=20, metrics=(RPS,))
    reading = {RPS.key: per_pod(group, *[109] * 5)}
    # 109 / 100 = 1.09 is within [0.9, 1.1]: keep 5
    assert decide(hpa, 5, group, reading, History(), NOW).desired_replicas == 5
    # 91 / 100 = 0.91 is within too
    assert decide(hpa, 5, group, {RPS.key: per_pod(group, *[91] * 5)}, History(), NOW).desired_replicas == 5
    # the per-pod average truncates in milli-units: (110000 x 4 + 110004)m / 5 = 110000.8 -> 110000m -> 1.1,
    # within (untruncated 1.100008 would give ceil(5.5) = 6)
    edge = decide(hpa, 5, group, {RPS.key: per_pod(group, 110, 110, 110, 110, 110.004)}, History(), NOW)
    assert edge.desired_replicas == 5
    # with a 0.05 tolerance 1.09 is outside: ceil(1.09 x 5) = ceil(5.45) = 6
    tight = ControllerConfig(tolerance=0.05)
    assert decide(hpa, 5, group, reading, History(), NOW, tight).desired_replicas == 6
    # behavior.scaleUp.tolerance (per direction) overrides the flag: 0.2 keeps 5 even under the tight flag
    per_hpa = HpaSpec(max_replicas=20, metrics=(RPS,), behavior=Behavior(scale_up=ScalingRules(tolerance=0.2)))
    assert decide(per_hpa, 5, group, reading, History(), NOW, tight).desired_replicas == 5


def test_several_metrics_take_the_highest_proposal():
    group = pods(3, cpu_request=0.5)
    hpa = HpaSpec(max_replicas=20, metrics=(CPU, RPS))
    readings = {
        # cpu: 1350m x 100 / 1500m = 90% -> 1.8 -> ceil(5.4) = 6
        CPU.key: per_pod(group, 0.4, 0.45, 0.5),
        # rps: avg 250 -> 2.5 -> ceil(7.5) = 8 (the legacy limit max(6, 4) = 6 then caps it)
        RPS.key: per_pod(group, 250, 250, 250),
    }
    decision = decide(hpa, 3, group, readings, History(), NOW)
    assert [p.replicas for p in decision.proposals] == [6, 8]
    assert (decision.metric_replicas, decision.winning_metric) == (8, RPS.key)
    assert decision.desired_replicas == 6
    assert decision.held_back_by == ("ScaleUpLimit",)
    assert conditions(decision)["ScalingLimited"] == ("True", "ScaleUpLimit")
    assert len(decision.current_metrics) == 2


# ---------------------------------------------------------------------- missing metrics and readiness


def test_missing_metrics_count_as_the_target_when_scaling_down():
    group = pods(4)
    hpa = HpaSpec(max_replicas=20, metrics=(RPS,))
    # p3 has no sample. avg(50, 50, 50) = 50 -> 0.5 < 1: p3 is assumed at the target, 100
    # -> avg(50, 50, 50, 100) = 62.5 -> 0.625 -> ceil(0.625 x 4) = ceil(2.5) = 3 (ignoring it would give 2)
    decision = decide(hpa, 4, group, {RPS.key: per_pod(group, 50, 50, 50)}, History(), NOW)
    assert decision.desired_replicas == 3


def test_missing_cpu_metrics_count_as_full_request_when_scaling_down():
    group = pods(4)
    hpa = HpaSpec(max_replicas=20, metrics=(CPU,))
    # 600m x 100 / 3000m = 20% -> 0.4 < 1: p3 is assumed at max(100, 50)% of 1000m
    # -> 1600m x 100 / 4000m = 40% -> 0.8 -> ceil(3.2) = 4, not below the current 4: stay at 4
    decision = decide(hpa, 4, group, {CPU.key: per_pod(group, 0.2, 0.2, 0.2)}, History(), NOW)
    assert decision.desired_replicas == 4


def test_missing_metrics_count_as_zero_when_scaling_up():
    group = pods(4)
    hpa = HpaSpec(max_replicas=20, metrics=(RPS,))
    # avg(300, 300, 300) -> 3.0 > 1: p3 is assumed at 0 -> avg = 225 -> 2.25 -> ceil(2.25 x 4) = 9,
    # then the legacy limit max(2 x 4, 4) = 8
    decision = decide(hpa, 4, group, {RPS.key: per_pod(group, 300, 300, 300)}, History(), NOW)
    assert decision.metric_replicas == 9
    assert decision.desired_replicas == 8
    # avg(120, 120, 120) -> 1.2 > 1: p3 at 0 -> avg 90 -> 0.9 < 1: the direction flipped, keep 4
    flipped = decide(hpa, 4, group, {RPS.key: per_pod(group, 120, 120, 120)}, History(), NOW)
    assert flipped.desired_replicas == 4
    # one pod at 200 and three missing: 2.0 > 1, then avg(200, 0, 0, 0) = 50 -> 0.5: a scale-up signal
    # never turns into a scale-down (ceil(0.5 x 4) = 2 would be one): keep 4
    lone = decide(hpa, 4, group, {RPS.key: per_pod(group, 200)}, History(), NOW)
    assert lone.desired_replicas == 4


def test_not_ready_pods_count_as_zero_when_scaling_up():
    group = [*pods(3), PodInfo("starting", phase="Pending", requests={"cpu": 1.0})]
    hpa = HpaSpec(max_replicas=20, metrics=(CPU,))
    # ready: 3000m x 100 / 3000m = 100% -> 2.0 > 1 with an unready pod: it counts as 0
    # -> 3000m x 100 / 4000m = 75% -> 1.5 -> ceil(1.5 x 4) = 6 (the documented ceil(4 x 2.0) would be 8)
    decision = decide(hpa, 4, group, {CPU.key: per_pod(group, 1.0, 1.0, 1.0)}, History(), NOW)
    assert decision.desired_replicas == 6
    # target 70%: ready 100 / 70 = 1.43 (ceil(1.43 x 3 ready) would be 5); with the unready pod at 0:
    # 75% -> 75 / 70 = 1.07, within the tolerance: keep 4
    target70 = MetricSpec("Resource", "cpu", "Utilization", 70)
    hpa70 = HpaSpec(max_replicas=20, metrics=(target70,))
    absorbed = decide(hpa70, 4, group, {target70.key: per_pod(group, 1.0, 1.0, 1.0)}, History(), NOW)
    assert absorbed.desired_replicas == 4
    # two ready at 100% and two unready: 2000m / 4000m = 50% -> 1.0 is within tolerance: keep 4
    two_ready = pods(2) + [PodInfo(f"s{i}", phase="Pending", requests={"cpu": 1.0}) for i in range(2)]
    held = decide(hpa, 4, two_ready, {CPU.key: per_pod(two_ready, 1.0, 1.0)}, History(), NOW)
    assert held.desired_replicas == 4


def test_not_ready_pods_are_left_out_when_scaling_down():
    group = pods(4) + [PodInfo(f"down{i}", ready=False, requests={"cpu": 1.0}) for i in range(2)]
    hpa = HpaSpec(max_replicas=20, metrics=(CPU,))
    # the two Ready=False pods never became ready (transition at start): unready for cpu, dropped
    # ready: 800m x 100 / 4000m = 20% -> 0.4 -> ceil(0.4 x 4 ready) = 2 (ceil(0.4 x 6) would be 3)
    reading = per_pod(group, 0.2, 0.2, 0.2, 0.2, 0.9, 0.9)
    assert decide(hpa, 6, group, {CPU.key: reading}, History(), NOW).desired_replicas == 2


def test_cpu_readiness_rules_during_and_after_initialisation():
    start = NOW - 60  # within the 300 s cpu initialisation period
    hpa = HpaSpec(max_replicas=20, metrics=(CPU,))
    fresh = PodInfo("fresh", start_time=start, ready_transition_time=start, requests={"cpu": 1.0})
    settled = PodInfo("settled", requests={"cpu": 1.0})
    group = [settled, fresh]
    # fresh's sample at NOW-40 predates its transition + 30 s window (NOW-30): unready, and on a
    # scale-up it counts as 0: settled 1000m -> 100% -> 2.0; with fresh at 0: 50% -> 1.0, within: keep 2
    early = MetricReading(pods={"settled": PodMetric(1.0, NOW), "fresh": PodMetric(1.0, NOW - 40)})
    assert decide(hpa, 2, group, {CPU.key: early}, History(), NOW).desired_replicas == 2
    # a sample at NOW-20 is a full window after the transition: both ready, 100% -> 2.0 -> ceil(4.0) = 4
    late = MetricReading(pods={"settled": PodMetric(1.0, NOW), "fresh": PodMetric(1.0, NOW - 20)})
    assert decide(hpa, 2, group, {CPU.key: late}, History(), NOW).desired_replicas == 4
    # past initialisation, a Ready=False pod that was ready once (transition 100 s after start) counts
    flapped = PodInfo("flapped", ready=False, start_time=0.0, ready_transition_time=100.0, requests={"cpu": 1.0})
    both = [settled, flapped]
    reading = MetricReading(pods={"settled": PodMetric(1.0, NOW), "flapped": PodMetric(1.0, NOW)})
    assert decide(hpa, 2, both, {CPU.key: reading}, History(), NOW).desired_replicas == 4
    # ... but a not-ready pod with metrics counts as ready for a Pods metric (only Pending is unready)
    rps_hpa = HpaSpec(max_replicas=20, metrics=(RPS,))
    never_ready = [PodInfo("a", ready=False), PodInfo("b", ready=False)]
    assert (
        decide(rps_hpa, 2, never_ready, {RPS.key: samples({"a": 200, "b": 200})}, History(), NOW).desired_replicas == 4
    )


def test_deleting_and_failed_pods_are_ignored():
    group = [*pods(2), PodInfo("gone", deleting=True), PodInfo("dead", phase="Failed")]
    hpa = HpaSpec(max_replicas=20, metrics=(RPS,))
    # only p0 and p1 count: avg(200, 200) = 2.0 -> ceil(2 x 2) = 4; the ignored pods' samples are dropped
    reading = samples({"p0": 200, "p1": 200, "gone": 0, "dead": 0})
    assert decide(hpa, 4, group, {RPS.key: reading}, History(), NOW).metric_replicas == 4


# ---------------------------------------------------------------------------- unavailable metrics


def test_an_unavailable_metric_still_allows_a_scale_up_but_not_a_scale_down():
    group = pods(4)
    hpa = HpaSpec(max_replicas=20, metrics=(CPU, RPS))
    # cpu has no reading; rps 2.0 -> 8 > 4: scale up on the metrics available
    up = decide(hpa, 4, group, {RPS.key: per_pod(group, 200, 200, 200, 200)}, History(), NOW)
    assert up.desired_replicas == 8
    assert conditions(up)["ScalingActive"] == ("True", "ValidMetricFound")
    assert up.proposals[0].replicas is None and up.proposals[0].error
    # rps 0.5 -> 2 < 4 with cpu missing: no scale down, ScalingActive False for the first bad metric
    down = decide(hpa, 4, group, {RPS.key: per_pod(group, 50, 50, 50, 50)}, History(), NOW)
    assert down.desired_replicas == 4
    assert conditions(down)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert down.history == History()
    # nothing available at all: the same
    none = decide(hpa, 4, group, {}, History(), NOW)
    assert none.desired_replicas == 4
    assert conditions(none)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert none.current_metrics == ()


def test_object_and_external_metrics():
    group = pods(4)
    queue = MetricSpec("External", "queue_length", "AverageValue", 30)
    # AverageValue: 4 pods, total 300 -> 300 / (30 x 4) = 2.5 outside tolerance -> ceil(300 / 30) = 10
    hpa = HpaSpec(max_replicas=50, metrics=(queue,))
    decision = decide(hpa, 4, group, {queue.key: MetricReading(value=300)}, History(), NOW)
    assert decision.metric_replicas == 10
    assert decision.current_metrics[0]["external"]["current"] == {"averageValue": "75"}  # ceil(300 / 4)
    # 125 / (30 x 4) = 1.04 is within the tolerance: stay at 4 (ceil(125 / 30) would be 5)
    calm = decide(hpa, 4, group, {queue.key: MetricReading(value=125)}, History(), NOW)
    assert calm.metric_replicas == 4
    # Value target: 150 / 100 = 1.5 -> ceil(1.5 x 4 ready pods) = 6
    latency = MetricSpec("Object", "latency", "Value", 100, described_object={"kind": "Service", "name": "ai-api"})
    obj = decide(
        HpaSpec(max_replicas=50, metrics=(latency,)), 4, group, {latency.key: MetricReading(value=150)}, History(), NOW
    )
    assert obj.metric_replicas == 6
    assert obj.current_metrics[0]["object"]["describedObject"] == {"kind": "Service", "name": "ai-api"}


# ----------------------------------------------------------------------------------- min and max


def test_min_and_max_clamping_sets_scaling_limited():
    group = pods(10)
    hpa = HpaSpec(min_replicas=2, max_replicas=20, metrics=(RPS,))
    # 300 / 100 = 3 -> ceil(3 x 10) = 30; legacy limit max(20, 4) = 20 is not below max 20: TooManyReplicas
    up = decide(hpa, 10, group, {RPS.key: per_pod(group, *[300] * 10)}, History(), NOW)
    assert up.desired_replicas == 20
    assert conditions(up)["ScalingLimited"] == ("True", "TooManyReplicas")
    # 3 pods at 10 -> 0.1 -> ceil(0.3) = 1 < min 2: TooFewReplicas (legacy and with default behavior)
    three = pods(3)
    for spec in (hpa, HpaSpec(min_replicas=2, max_replicas=20, metrics=(RPS,), behavior=Behavior())):
        down = decide(spec, 3, three, {RPS.key: per_pod(three, 10, 10, 10)}, History(), NOW)
        assert down.desired_replicas == 2
        assert conditions(down)["ScalingLimited"] == ("True", "TooFewReplicas")
    # a target already above max goes straight to max
    over = decide(hpa, 25, pods(25), {}, History(), NOW)
    assert over.desired_replicas == 20
    assert over.rescale_reason == "Current number of replicas above Spec.MaxReplicas"
    # and a target scaled to zero by hand stays there
    zero = decide(hpa, 0, [], {}, History(), NOW)
    assert zero.desired_replicas == 0
    assert conditions(zero)["ScalingActive"] == ("False", "ScalingDisabled")


# ------------------------------------------------------------------------------- default behavior


def test_default_scale_up_is_the_larger_of_doubling_and_four_pods_per_15_seconds():
    hpa = HpaSpec(max_replicas=50, metrics=(RPS,), behavior=Behavior())
    group = pods(3)
    hot = {RPS.key: per_pod(group, *[1000] * 3)}  # 10.0 -> ceil(30) = 30
    # from 3: Pods 3 + 4 = 7, Percent ceil(3 x 2) = 6, Max -> 7
    first = decide(hpa, 3, group, hot, History(), NOW)
    assert first.desired_replicas == 7
    assert first.held_back_by == ("ScaleUpLimit",)
    assert first.history.scale_up_events == (ScaleEvent(4, NOW),)
    # 10 s later at 7: the +4 is inside the period, so it starts from 3 again: 7 -> no change
    seven = pods(7)
    hot7 = {RPS.key: per_pod(seven, *[1000] * 7)}
    second = decide(hpa, 7, seven, hot7, first.history, NOW + 10)
    assert second.desired_replicas == 7
    assert conditions(second)["ScalingLimited"] == ("True", "ScaleUpLimit")
    # 16 s later the event has left the 15 s period: from 7: 7 + 4 = 11, ceil(7 x 2) = 14 -> 14
    third = decide(hpa, 7, seven, hot7, first.history, NOW + 16)
    assert third.desired_replicas == 14
    # without behavior the legacy cap is max(2 x current, 4): from 1 that is 4, where the defaults give 1 + 4 = 5
    one = pods(1)
    legacy = decide(HpaSpec(max_replicas=50, metrics=(RPS,)), 1, one, {RPS.key: per_pod(one, 1000)}, History(), NOW)
    assert legacy.desired_replicas == 4
    defaulted = decide(hpa, 1, one, {RPS.key: per_pod(one, 1000)}, History(), NOW)
    assert defaulted.desired_replicas == 5


@pytest.mark.parametrize("behavior", [None, Behavior()], ids=["legacy", "defaulted"])
def test_default_scale_down_waits_for_a_300_second_window(behavior):
    hpa = HpaSpec(max_replicas=20, metrics=(RPS,), behavior=behavior)
    group = pods(10)
    busy = {RPS.key: per_pod(group, *[100] * 10)}  # 1.0: recommend 10
    quiet = {RPS.key: per_pod(group, *[40] * 10)}  # 0.4 -> ceil(4.0) = 4
    first = decide(hpa, 10, group, busy, History(), NOW)
    assert first.history.recommendations == (Recommendation(10, NOW),)
    # 100 s later: the highest recommendation in the last 300 s is 10: hold
    held = decide(hpa, 10, group, quiet, first.history, NOW + 100)
    assert (held.metric_replicas, held.stabilized_replicas, held.desired_replicas) == (4, 10, 10)
    assert held.held_back_by == ("ScaleDownStabilized",)
    assert conditions(held)["AbleToScale"] == ("True", "ScaleDownStabilized")
    # 301 s after the 10: only the 4 from NOW+100 is left in the window; 100% per 15 s lets 10 -> 4 through
    free = decide(hpa, 10, group, quiet, held.history, NOW + 301)
    assert free.desired_replicas == 4
    assert free.held_back_by == ()
    # the stale 10 was replaced, not kept
    assert [r.replicas for r in free.history.recommendations] == [4, 4]


# ---------------------------------------------------------------------------------- custom policies


@pytest.mark.parametrize(("select", "expected"), [("Max", 20), ("Min", 14), ("Disabled", 10)])
def test_scale_up_select_policy(select, expected):
    # from 10: Pods 10 + 4 = 14, Percent ceil(10 x 2) = 20; Max -> 20, Min -> 14, Disabled -> 10
    rules = ScalingRules(
        select_policy=select, policies=(ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15))
    )
    hpa = HpaSpec(max_replicas=50, metrics=(RPS,), behavior=Behavior(scale_up=rules))
    group = pods(10)
    decision = decide(hpa, 10, group, {RPS.key: per_pod(group, *[500] * 10)}, History(), NOW)  # wants 50
    assert decision.desired_replicas == expected
    assert conditions(decision)["ScalingLimited"] == ("True", "ScaleUpLimit")


@pytest.mark.parametrize(("select", "expected"), [("Max", 5), ("Min", 8), ("Disabled", 10)])
def test_scale_down_select_policy(select, expected):
    # from 10: Pods 10 - 2 = 8, Percent int(10 x 0.5) = 5; Max (biggest change) -> 5, Min -> 8, Disabled -> 10
    rules = ScalingRules(
        stabilization_window_seconds=0,
        select_policy=select,
        policies=(ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60)),
    )
    hpa = HpaSpec(max_replicas=50, metrics=(RPS,), behavior=Behavior(scale_down=rules))
    group = pods(10)
    decision = decide(hpa, 10, group, {RPS.key: per_pod(group, *[10] * 10)}, History(), NOW)  # wants 1
    assert decision.desired_replicas == expected
    assert conditions(decision)["ScalingLimited"] == ("True", "ScaleDownLimit")


def test_every_scale_event_in_a_policys_period_counts():
    rules = ScalingRules(
        select_policy="Min", policies=(ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 200, 60))
    )
    hpa = HpaSpec(max_replicas=100, metrics=(RPS,), behavior=Behavior(scale_up=rules))

    def hot(count: int) -> dict[str, MetricReading]:
        return {RPS.key: per_pod(pods(count), *[1000] * count)}  # always wants 10x

    # t=0 from 4: Pods 4 + 4 = 8, Percent ceil(4 x 3) = 12, Min -> 8 (+4)
    first = decide(hpa, 4, pods(4), hot(4), History(), NOW)
    assert first.desired_replicas == 8
    # t=16 from 8: Pods (the +4 is out of 15 s) 8 + 4 = 12; Percent (in 60 s) from 8 - 4 = 4: 12 -> 12 (+4)
    second = decide(hpa, 8, pods(8), hot(8), first.history, NOW + 16)
    assert second.desired_replicas == 12
    assert second.history.scale_up_events == (ScaleEvent(4, NOW), ScaleEvent(4, NOW + 16))
    # t=32 from 12: Pods 12 + 4 = 16; Percent from 12 - 4 - 4 = 4: 12 -> Min 12: hold
    third = decide(hpa, 12, pods(12), hot(12), second.history, NOW + 32)
    assert third.desired_replicas == 12
    assert third.held_back_by == ("ScaleUpLimit",)


def test_scale_up_stabilization_window_takes_the_lowest_recent_recommendation():
    hpa = HpaSpec(
        max_replicas=50, metrics=(RPS,), behavior=Behavior(scale_up=ScalingRules(stabilization_window_seconds=60))
    )
    history = History(
        recommendations=(Recommendation(3, NOW - 100), Recommendation(5, NOW - 30), Recommendation(8, NOW - 10))
    )
    group = pods(4)
    # wants ceil(2.5 x 4) = 10; lowest in the 60 s up window is min(10, 5, 8) = 5 (the 3 is 100 s old),
    # highest in the 300 s down window is max(10, 3, 5, 8) = 10: current 4 is raised to 5 and capped at 10
    # -> 5; the rate limit (from 4: max(4 + 4, 8) = 8) lets it through
    decision = decide(hpa, 4, group, {RPS.key: per_pod(group, *[250] * 4)}, history, NOW)
    assert (decision.metric_replicas, decision.stabilized_replicas, decision.desired_replicas) == (10, 5, 5)
    assert decision.held_back_by == ("ScaleUpStabilized",)
    assert conditions(decision)["ScalingLimited"] == ("False", "DesiredWithinRange")
    assert decision.history.recommendations[-1] == Recommendation(10, NOW)


# ------------------------------------------------------------------------------------ the seed's HPA


def test_the_seed_hpa_through_a_spike_and_back():
    hpa = HpaSpec(
        min_replicas=2,
        max_replicas=20,
        metrics=(
            MetricSpec("Resource", "cpu", "Utilization", 70),
            MetricSpec("Pods", "http_requests_per_second", "AverageValue", 100),
        ),
        behavior=Behavior(
            scale_down=ScalingRules(stabilization_window_seconds=300, policies=(ScalingPolicy("Percent", 10, 60),)),
            scale_up=ScalingRules(
                stabilization_window_seconds=0,
                policies=(ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)),
            ),
        ),
    )
    cpu, rps = (m.key for m in hpa.metrics)

    def load(count: int, cpu_each: float, rps_values: list[float]) -> tuple[list[PodInfo], dict[str, MetricReading]]:
        group = pods(count, cpu_request=0.5)
        return group, {cpu: per_pod(group, *[cpu_each] * count), rps: per_pod(group, *rps_values)}

    # t=0, 3 pods: cpu 3 x 465m = 1395m x 100 / 1500m = 93% -> 93/70 = 1.33 -> ceil(3.99) = 4
    # rps (350 + 380 + 370) / 3 = 366.666 (366666m) -> 3.67 -> ceil(11.0) = 11; max -> 11
    # up limit: ceil(3 x 2) = 6 and 3 + 4 = 7, Max -> 7
    group, readings = load(3, 0.465, [350, 380, 370])
    spike = decide(hpa, 3, group, readings, History(), 0.0)
    assert [p.replicas for p in spike.proposals] == [4, 11]
    assert (spike.metric_replicas, spike.desired_replicas, spike.held_back_by) == (11, 7, ("ScaleUpLimit",))

    # t=15, 7 pods: cpu 350m each = 70% -> 1.0 keeps 7; rps 157 -> ceil(1.57 x 7) = ceil(10.99) = 11
    # the +4 at t=0 is not after 15 - 15 = 0, so the period starts at 7: limits 14 and 11 -> 11 goes through
    group, readings = load(7, 0.35, [157] * 7)
    grown = decide(hpa, 7, group, readings, spike.history, 15.0)
    assert [p.replicas for p in grown.proposals] == [7, 11]
    assert grown.desired_replicas == 11

    # t=30, 11 pods, load gone: cpu 100m = 20% -> 0.286 -> ceil(3.14) = 4; rps 20 -> ceil(2.2) = 3; max 4
    # highest recommendation in the last 300 s is 11: hold at 11
    group, readings = load(11, 0.1, [20] * 11)
    quiet = decide(hpa, 11, group, readings, grown.history, 30.0)
    assert (quiet.metric_replicas, quiet.desired_replicas, quiet.held_back_by) == (4, 11, ("ScaleDownStabilized",))

    # t=331: the 11s (t=0, 15) are out of the window, the 4 from t=30 remains -> 4;
    # then 10% per 60 s: int(11 x 0.9) = 9 -> 9
    later = decide(hpa, 11, group, readings, quiet.history, 331.0)
    assert (later.stabilized_replicas, later.desired_replicas, later.held_back_by) == (4, 9, ("ScaleDownLimit",))
    assert later.history.scale_down_events == (ScaleEvent(2, 331.0),)

    # t=361, 9 pods: the -2 at 331 is inside the 60 s period, so it starts from 11: int(9.9) = 9 = current
    group, readings = load(9, 0.1, [20] * 9)
    assert decide(hpa, 9, group, readings, later.history, 361.0).desired_replicas == 9
    # t=392: the period is clear: int(9 x 0.9) = 8
    assert decide(hpa, 9, group, readings, later.history, 392.0).desired_replicas == 8


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "build",
    [
        lambda: HpaSpec(min_replicas=5, max_replicas=2),
        lambda: HpaSpec(max_replicas=0),
        lambda: MetricSpec("Pods", "rps", "Utilization", 50),
        lambda: MetricSpec("Resource", "cpu", "Utilization", 0),
        lambda: MetricSpec("Sideways", "x", "Value", 1),
        lambda: ScalingRules(select_policy="Most"),
        lambda: ScalingPolicy("Pods", 0, 15),
        lambda: ScalingRules(policies=()),
        lambda: HpaSpec(max_replicas=3, metrics=(RPS, RPS)),
    ],
)
def test_bad_specs_are_refused_with_a_clear_error(build):
    with pytest.raises(ValueError):
        build()


def test_an_empty_metrics_list_means_cpu_at_80_percent():
    group = pods(2)
    # 2 x 1000m = 100% -> 100 / 80 = 1.25 -> ceil(2.5) = 3
    reading = {"Resource/cpu": per_pod(group, 1.0, 1.0)}
    assert decide(HpaSpec(max_replicas=10), 2, group, reading, History(), NOW).desired_replicas == 3
