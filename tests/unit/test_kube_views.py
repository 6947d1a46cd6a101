"""The cluster panes' view models (console.views): pods grouped by workload, and each HPA's why, from hand-built
KubeSnapshots."""

from __future__ import annotations

from console.views.autoscaling import autoscaling_view, hpa_view
from console.views.pods import PodRowCache, age_text, filtered, gpus_requested, last_warnings, pod_groups
from services.hpa import HpaSpec, MetricSpec, explain
from tests.console.sample_data import (
    A100,
    keda_objects,
    kube_event,
    kube_hpa,
    kube_node,
    kube_pod,
    kube_snapshot,
    owner,
    seed_cluster,
)

WALL = 1_795_730_000.0


def rows_by_name(snapshot) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {pod.name: pod for group in pod_groups(snapshot) for pod in group.pods}


# ---- pods ---------------------------------------------------------------------------------------------------


def test_pods_are_grouped_by_their_workload_gpu_workloads_first_bare_pods_last() -> None:
    deployment_rs = {"metadata": {"name": "web-7f9", "namespace": "ai-prod", "ownerReferences": owner("Deployment",
                                                                                                      "web")}}
    snapshot = seed_cluster(WALL)
    objects = {kind: list(state.objects.values()) for kind, state in snapshot.kinds.items()}
    objects["replicasets"].append(deployment_rs)
    objects["pods"].append(kube_pod("web-7f9-xyz", owners=owner("ReplicaSet", "web-7f9"), created=WALL - 60))
    objects["pods"].append(kube_pod("orphan-rs-pod", owners=owner("ReplicaSet", "gone-rs"), created=WALL - 60))
    groups = pod_groups(kube_snapshot(objects))
    assert [g.workload for g in groups] == ["StatefulSet vllm-server", "Deployment web", "ReplicaSet gone-rs",
                                            "Rollout ai-api", "(none)"]
    assert [p.name for p in groups[0].pods] == ["vllm-server-0", "vllm-server-1"]
    assert groups[0].gpus == 8
    assert [p.name for p in groups[-1].pods] == ["debug-shell"]


def test_the_namespace_prefixes_the_workload_when_the_snapshot_spans_namespaces() -> None:
    pods = [kube_pod("db-0", owners=owner("StatefulSet", "db"), created=WALL, namespace="data")]
    groups = pod_groups(kube_snapshot({"pods": pods}, namespace=None))
    assert [g.workload for g in groups] == ["data/StatefulSet db"]


def test_cached_rows_are_the_rows_built_afresh_and_a_new_resource_version_rebuilds_its_row() -> None:
    pods = [kube_pod("web-0", owners=owner("StatefulSet", "web"), created=WALL - 30, restarts=1),
            kube_pod("web-1", owners=owner("StatefulSet", "web"), created=WALL - 30)]
    for pod in pods:
        pod["metadata"]["resourceVersion"] = "7"
    cache = PodRowCache()
    first = pod_groups(kube_snapshot({"pods": pods}), cache)
    assert first == pod_groups(kube_snapshot({"pods": pods}), cache) == pod_groups(kube_snapshot({"pods": pods}))
    pods[0]["status"]["containerStatuses"][0]["restartCount"] = 5
    pods[0]["metadata"]["resourceVersion"] = "8"
    cached = pod_groups(kube_snapshot({"pods": pods}), cache)
    assert cached == pod_groups(kube_snapshot({"pods": pods}))
    assert [(p.name, p.restarts, age_text(p.age_s(WALL + 90))) for p in cached[0].pods] == [("web-0", 5, "2m"),
                                                                                              ("web-1", 0, "2m")]
    assert cached[0].pods[1] is first[0].pods[1]  # the unchanged pod kept its row


def test_a_pod_row_names_its_gpus_node_gpu_model_readiness_restarts_and_age() -> None:
    vllm = rows_by_name(seed_cluster(WALL))["vllm-server-0"]
    assert (vllm.gpus, vllm.node, vllm.gpu_model, vllm.phase, vllm.ready, vllm.containers, vllm.restarts) == (
        4, "gpu-a100-0", A100, "Running", 1, 1, 0)
    assert age_text(vllm.age_s(WALL)) == "3d" and vllm.problem is None
    cpu_pod = rows_by_name(seed_cluster(WALL))["debug-shell"]
    assert (cpu_pod.gpus, cpu_pod.gpu_model, age_text(cpu_pod.age_s(WALL))) == (0, "", "40m")


def test_gpus_come_from_requests_or_else_limits() -> None:
    pod = kube_pod("p", created=WALL)
    pod["spec"]["containers"] = [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2"}}},
                                 {"name": "b", "resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "2"},
                                                             "limits": {"nvidia.com/gpu": "1"}}},
                                 {"name": "c", "resources": {"requests": {"cpu": "500m"}}}]
    assert gpus_requested(pod) == 3


def test_crash_looping_not_ready_and_unschedulable_pods_carry_their_reason() -> None:
    rows = rows_by_name(seed_cluster(WALL))
    crashing = rows["ai-api-6d5f7c9b8-klmno"]
    assert (crashing.problem, crashing.restarts, crashing.ready) == ("CrashLoopBackOff", 7, 0)
    pending = rows["vllm-server-1"]
    assert pending.problem == "Unschedulable" and pending.node == ""
    assert pending.warning == "FailedScheduling: 0/6 nodes are available: 6 Insufficient nvidia.com/gpu."
    assert rows["ai-api-6d5f7c9b8-abcde"].problem is None
    slow = kube_pod("slow", ready=False, created=WALL)
    assert rows_by_name(kube_snapshot({"pods": [slow]}))["slow"].problem == "NotReady"


def test_a_pending_pod_without_its_event_shows_the_schedulers_condition() -> None:
    pod = kube_pod("big", gpus=8, phase="Pending", created=WALL, unschedulable="0/6 nodes are available")
    row = rows_by_name(kube_snapshot({"pods": [pod]}))["big"]
    assert row.warning == "FailedScheduling: 0/6 nodes are available"


def test_the_last_warning_event_is_the_latest_warning_for_that_very_pod() -> None:
    events = [
        kube_event("a", "Unhealthy", "probe failed", WALL - 300),
        kube_event("a", "BackOff", "Back-off restarting", WALL - 30),
        kube_event("a", "Pulled", "pulled", WALL - 5, type_="Normal"),
        kube_event("b", "Evicted", "memory", WALL - 1),
        kube_event("a", "Other", "same name elsewhere", WALL, namespace="other"),
    ]
    latest = last_warnings(events)
    assert latest[("ai-prod", "a")]["reason"] == "BackOff"
    assert latest[("ai-prod", "b")]["reason"] == "Evicted"
    assert latest[("other", "a")]["reason"] == "Other"
    assert rows_by_name(seed_cluster(WALL))["ai-api-6d5f7c9b8-klmno"].warning == (
        "BackOff: Back-off restarting failed container api")


def test_the_filter_keeps_rows_whose_pod_workload_or_node_holds_the_text() -> None:
    groups = pod_groups(seed_cluster(WALL))
    assert [p.name for g in filtered(groups, "A100") for p in g.pods] == ["vllm-server-0"]
    assert [g.workload for g in filtered(groups, "rollout")] == ["Rollout ai-api"]
    assert [p.name for g in filtered(groups, "KLMNO") for p in g.pods] == ["ai-api-6d5f7c9b8-klmno"]
    assert filtered(groups, "nothing-like-this") == []
    assert filtered(groups, "") == groups


def test_a_node_without_the_gpu_label_gives_no_model() -> None:
    snapshot = kube_snapshot({"nodes": [kube_node("plain")], "pods": [kube_pod("p", node="plain", created=WALL)]})
    assert rows_by_name(snapshot)["p"].gpu_model == ""


# ---- autoscaling --------------------------------------------------------------------------------------------


def test_the_seed_hpa_at_max_says_the_formula_and_the_cap() -> None:
    view = autoscaling_view(seed_cluster(WALL), WALL).entries[0]
    assert (view.title, view.target, view.current, view.minimum, view.maximum, view.at_max) == (
        "HPA ai-api-hpa", "Deployment ai-api", 20, 2, 20, True)
    assert [(m.label, m.current, m.target, m.proposal) for m in view.metrics] == [
        ("cpu (Resource)", "95%", "70%", 28), ("http_requests_per_second (Pods)", "125", "100/pod", 25)]
    assert view.formula == 28
    assert view.why == ("formula: ceil(95% / 70% x 20) = 28 (cpu)", "capped at maxReplicas 20 (the formula wants 28)")
    assert [(c.type, c.status, c.reason) for c in view.conditions] == [
        ("AbleToScale", "True", "ReadyForNewScale"), ("ScalingActive", "True", "ValidMetricFound"),
        ("ScalingLimited", "True", "TooManyReplicas")]
    assert view.last_scale == "1h ago"


def test_scale_up_limited_names_the_policies() -> None:
    view = hpa_view(kube_hpa(current=4, desired=8, cpu=60, rps="300", limited=("True", "ScaleUpLimit"),
                             able="SucceededRescale"), WALL)
    assert view.formula == 12
    assert view.why == ("formula: ceil(300 / 100 x 4) = 12 (http_requests_per_second)",
                        "scale-up limited to 100% or +4 pods per 15 s")


def test_scale_down_stabilized_names_the_window() -> None:
    view = hpa_view(kube_hpa(current=10, desired=10, cpu=30, rps="40", able="ScaleDownStabilized"), WALL)
    assert view.formula == 5
    assert view.why[1] == "held by the 300 s scale-down window (the highest recommendation in it wins) " \
                          "(the formula wants 5)"


def test_scale_down_limited_and_too_few_replicas() -> None:
    limited = hpa_view(kube_hpa(current=10, desired=9, cpu=10, rps="10", limited=("True", "ScaleDownLimit")), WALL)
    assert limited.why[-1] == "scale-down limited to 10% per 60 s"
    floor = hpa_view(kube_hpa(current=2, desired=2, cpu=10, rps="10", limited=("True", "TooFewReplicas")), WALL)
    assert floor.why[-1] == "held at minReplicas 2 (the formula wants 1)" and floor.at_min


def test_the_api_servers_default_scale_up_policies_when_behavior_sets_only_scale_down() -> None:
    hpa = kube_hpa(current=4, desired=8, cpu=60, rps="300", limited=("True", "ScaleUpLimit"),
                   behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    assert hpa_view(hpa, WALL).why[-1] == "scale-up limited to +4 pods or 100% per 15 s"
    legacy = kube_hpa(current=4, desired=8, cpu=60, rps="300", limited=("True", "ScaleUpLimit"), behavior={})
    del legacy["spec"]["behavior"]
    assert hpa_view(legacy, WALL).why[-1] == (
        "scale-up limited to max(2 x current, 4) replicas per sync (no behavior set)")


def test_a_metric_within_tolerance_keeps_the_count() -> None:
    view = hpa_view(kube_hpa(current=6, desired=6, cpu=75, rps=None), WALL)
    assert view.metrics[1].current == "-" and view.metrics[1].proposal is None
    assert view.why == ("formula: cpu within 10% of its target: stays at 6",)


def test_no_current_metrics_gives_no_formula() -> None:
    view = hpa_view(kube_hpa(current=3, desired=3, cpu=None, rps=None), WALL)
    assert view.formula is None and view.why[0] == "no current metrics reported yet: the formula cannot be computed"


def test_an_unreadable_spec_is_said_not_guessed() -> None:
    hpa = kube_hpa(current=3, desired=3, cpu=50, rps="10")
    hpa["spec"]["metrics"][0]["resource"]["target"] = {"type": "Sideways"}
    view = hpa_view(hpa, WALL)
    assert view.error.startswith("spec not understood") and view.why == ()


def test_keda_scaled_objects_are_one_entry_with_their_hpa() -> None:
    view = autoscaling_view(seed_cluster(WALL), WALL)
    keda = view.entries[1]
    assert keda.title == "ScaledObject queue-worker (HPA keda-hpa-queue-worker)"
    assert (keda.current, keda.desired, keda.formula) == (3, 6, 8)
    assert keda.why == ("formula: ceil(36 / 5) = 8 (s0-redis-jobs, total over target)",
                        "scale-up limited to max(2 x current, 4) replicas per sync (no behavior set)")
    assert view.notes == ()


def test_a_scaled_object_without_its_hpa_yet_and_an_absent_kind_are_noted() -> None:
    scaled, _ = keda_objects()
    view = autoscaling_view(kube_snapshot({"scaledobjects": [scaled]}), WALL)
    assert view.entries == ()
    assert view.notes == ("ScaledObject queue-worker: no HPA keda-hpa-queue-worker yet (KEDA creates it)",)
    absent = autoscaling_view(seed_cluster(WALL, keda=False), WALL)
    assert absent.notes == ("ScaledObjects: not served by this cluster",)
    assert [e.title for e in absent.entries] == ["HPA ai-api-hpa"]


def test_explain_is_the_controllers_arithmetic() -> None:
    spec = HpaSpec(10, 1, (MetricSpec("Resource", "cpu", "Utilization", 50),
                           MetricSpec("External", "queue", "Value", 10)))
    decision = explain(spec, 4, {"Resource/cpu": 80, "External/queue": 25})
    assert [p.replicas for p in decision.proposals] == [7, 10]  # ceil(1.6 x 4); ceil(2.5 x 4)
    assert explain(spec, 4, {"Resource/cpu": 54}).proposals[0].replicas == 4  # within the 0.1 tolerance
