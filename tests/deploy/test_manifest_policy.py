"""Policy over the built manifests: every container has requests, limits and (if long-running) probes, runs as
non-root without privilege escalation, and prod pins every image; the gateway, vLLM, Redis, HPA, Rollout,
ScaledObjects, RBAC and NetworkPolicy carry the seed's and the issue's numbers; the gateway config in the ConfigMap
is one the gateway loads, and its drain fits the pods' termination grace period."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import yaml

import services.worker
from console.cli import build_parser
from services import promql
from services.gateway.config import GatewayConfig, load_config
from services.gateway.server import add_arguments
from tests.deploy.manifests import (
    BUILDS,
    MANIFESTS,
    OVERLAYS,
    PINNED,
    WORKLOAD_KINDS,
    Obj,
    built,
    containers,
    find,
    pod_specs,
)

WORKER_DIR = Path(services.worker.__file__).parent
CANARY_LABEL, CANARY_ARG = "rollouts_pod_template_hash", "canary-hash"


def container_problems(obj: Obj) -> list[str]:
    """What breaks the container policy in one object (empty: none)."""
    problems = []
    long_running = obj["kind"] in WORKLOAD_KINDS
    for where, spec, container in containers(obj):
        resources = container.get("resources") or {}
        if not {"cpu", "memory"} <= set(resources.get("requests") or {}):
            problems.append(f"{where}: no cpu and memory requests")
        if "memory" not in (resources.get("limits") or {}):
            problems.append(f"{where}: no memory limit")
        if long_running and not (container.get("livenessProbe") and container.get("readinessProbe")):
            problems.append(f"{where}: no liveness and readiness probes")
        pod_security, security = spec.get("securityContext") or {}, container.get("securityContext") or {}
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            problems.append(f"{where}: may run as root (runAsNonRoot)")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser 0")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        image = container["image"]
        if ":" not in image.rsplit("/", 1)[-1]:
            problems.append(f"{where}: image {image} has no tag")
    return problems


def latest_images(objects: list[Obj]) -> list[str]:
    return [f"{where}: {c['image']}" for obj in objects for where, _, c in containers(obj)
            if c["image"].endswith(":latest")]


@pytest.mark.parametrize("build", BUILDS)
def test_every_container_has_resources_probes_and_runs_as_non_root(build: str) -> None:
    objects = built(build)
    assert sum(1 for obj in objects for _ in containers(obj)) >= 4
    assert [problem for obj in objects for problem in container_problems(obj)] == []


def test_the_policy_check_can_fail() -> None:
    statefulset = copy.deepcopy(find(built("overlays/prod"), "StatefulSet", "redis"))
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    del container["readinessProbe"], container["resources"]["limits"]
    statefulset["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    container["image"] = "redis"
    assert len(container_problems(statefulset)) == 4


@pytest.mark.parametrize("build", PINNED)
def test_production_pins_every_image(build: str) -> None:
    assert latest_images(built(build)) == []


def test_only_the_dev_overlay_runs_latest() -> None:
    assert latest_images(built("overlays/dev"))  # the check sees a latest tag where there is one
    assert latest_images(built("base")) == []


# --- the gateway -------------------------------------------------------------------------------------------------

def gateway_config(objects: list[Obj], tmp_path: Path) -> GatewayConfig:
    """The ConfigMap's gateway.yaml, loaded by the gateway's own loader."""
    path = tmp_path / "gateway.yaml"
    path.write_text(find(objects, "ConfigMap", "switchboard-gateway")["data"]["gateway.yaml"])
    return load_config(path)


def test_the_configmap_holds_a_config_the_gateway_loads(tmp_path: Path) -> None:
    config = gateway_config(built("overlays/prod"), tmp_path)
    assert (config.server.host, config.server.port, config.admin.port) == ("0.0.0.0", 8080, 8081)
    assert config.auth.mode == "keys"
    assert config.state.backend == "redis" and config.state.redis_url == config.batch.redis_url == \
        "redis://redis:6379/0"
    assert {token.token_env for token in config.admin.tokens} == {
        "SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_VIEWER_TOKEN", "SWITCHBOARD_WORKER_TOKEN"}
    assert config.targets["vllm/llama-2-70b"].base_url == "http://vllm:8000/v1"


@pytest.mark.parametrize("build", ["base", "overlays/prod"])
def test_gateway_pods_drain_within_their_grace_period(build: str, tmp_path: Path) -> None:
    objects = built(build)
    config = gateway_config(objects, tmp_path)
    workload = find(objects, "Deployment" if build == "base" else "Rollout", "ai-gateway")
    spec = workload["spec"]["template"]["spec"]
    gateway = spec["containers"][0]
    pause = gateway["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 5  # endpoints controllers and proxies drop the pod before it stops accepting
    assert spec["terminationGracePeriodSeconds"] == pause + config.server.grace_period_s + 5


def test_the_gateway_deployment_is_the_issues(tmp_path: Path) -> None:
    objects = built("base")
    deployment = find(objects, "Deployment", "ai-gateway")
    assert deployment["spec"]["replicas"] == 3
    spec = deployment["spec"]["template"]["spec"]
    gateway = spec["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    config = gateway_config(objects, tmp_path)
    secret_envs = {env["name"] for env in gateway["env"] if "secretKeyRef" in env.get("valueFrom", {})}
    named = {t.api_key_env for t in config.targets.values() if t.api_key_env} | {
        t.token_env for t in config.admin.tokens}
    assert secret_envs == named  # every secret the config names comes from a Secret, and only those
    assert not any("value" in env for env in gateway["env"] if env["name"] in named)
    command = gateway["command"]
    assert command[:2] == ["switchboard", "gateway"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    mounted = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    assert Path(parser.parse_args(command[2:]).config).parent == Path(mounted["config"])
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert (ports["http"], ports["admin"]) == (config.server.port, config.admin.port)


def test_the_hpa_is_the_seeds() -> None:
    for build, target in (("base", ("apps/v1", "Deployment")), ("overlays/prod", ("argoproj.io/v1alpha1", "Rollout"))):
        hpa = find(built(build), "HorizontalPodAutoscaler", "ai-gateway")["spec"]
        assert (hpa["scaleTargetRef"]["apiVersion"], hpa["scaleTargetRef"]["kind"]) == target
        assert hpa["scaleTargetRef"]["name"] == "ai-gateway"
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 20)
        cpu, rate = hpa["metrics"]
        assert cpu["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
        assert rate["pods"]["target"] == {"type": "AverageValue", "averageValue": "100"}
        assert hpa["behavior"] == {
            "scaleDown": {"stabilizationWindowSeconds": 300,
                          "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
            "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                     {"type": "Pods", "value": 4, "periodSeconds": 15}]}}


def test_the_pdb_and_network_policy_guard_the_gateway() -> None:
    objects = built("overlays/prod")
    pdb = find(objects, "PodDisruptionBudget", "ai-gateway")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"] == {"app": "ai-gateway"}
    policy = find(objects, "NetworkPolicy", "ai-gateway")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["ingress"]}
    namespaces = {port: {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                         for peer in peers if "namespaceSelector" in peer} for port, peers in by_port.items()}
    assert namespaces == {8080: {"ingress-nginx", "monitoring"}, 8081: {"switchboard-operators"}}
    judge = find(objects, "AnalysisTemplate", "gateway-quality")["spec"]["metrics"][0]["provider"]["job"]
    admin_pods = [peer["podSelector"]["matchLabels"] for peer in by_port[8081] if "podSelector" in peer]
    assert admin_pods == [judge["spec"]["template"]["metadata"]["labels"]]  # the quality gate, nothing else
    monitor = find(objects, "ServiceMonitor", "ai-gateway")["spec"]
    assert monitor["endpoints"][0]["port"] == "http" and monitor["endpoints"][0]["path"] == "/metrics"
    assert monitor["podTargetLabels"] == ["rollouts-pod-template-hash"]  # the canary series label


# --- progressive delivery ----------------------------------------------------------------------------------------

def steps(build: str) -> list[Obj]:
    return find(built(build), "Rollout", "ai-gateway")["spec"]["strategy"]["canary"]["steps"]


def test_the_rollout_walks_the_seeds_steps() -> None:
    prod = steps("overlays/prod")
    assert [step["setWeight"] for step in prod if "setWeight" in step] == [1, 10, 50, 100]
    assert [step["pause"]["duration"] for step in prod if "pause" in step] == ["1h", "2h", "4h"]
    analyses = [[t["templateName"] for t in step["analysis"]["templates"]] for step in prod if "analysis" in step]
    assert analyses == [["gateway-error-rate", "gateway-latency-p99"],
                        ["gateway-error-rate", "gateway-latency-p99", "gateway-quality"],
                        ["gateway-error-rate", "gateway-latency-p99", "gateway-quality"]]
    for step in prod:
        for arg in step.get("analysis", {}).get("args", []):
            if arg["name"] == CANARY_ARG:
                assert arg["valueFrom"] == {"podTemplateHashValue": "Latest"}
    dev = steps("overlays/dev")
    assert [step["pause"]["duration"] for step in dev if "pause" in step] == ["1m", "2m", "4m"]
    for build, interval in (("overlays/prod", "5m"), ("overlays/dev", "1m")):
        gates = [t for t in built(build)
                 if t["kind"] == "AnalysisTemplate" and t["metadata"]["name"] != "gateway-quality"]
        assert [t["spec"]["metrics"][0]["interval"] for t in gates] == [interval, interval]
    assert [step for step in dev if "pause" not in step] == [step for step in prod if "pause" not in step]


@pytest.mark.parametrize("build", ["overlays/dev", "overlays/prod"])
def test_the_rollout_runs_the_deployments_pod_template(build: str) -> None:
    deployment = find(built("base"), "Deployment", "ai-gateway")
    rollout = find(built(build), "Rollout", "ai-gateway")
    template = copy.deepcopy(rollout["spec"]["template"])
    for container in template["spec"]["containers"]:  # the overlay's tag is the one difference allowed
        container["image"] = container["image"].rsplit(":", 1)[0] + ":0.1.0"
    assert template == deployment["spec"]["template"]
    assert rollout["spec"]["replicas"] == deployment["spec"]["replicas"]
    assert rollout["spec"]["selector"] == deployment["spec"]["selector"]


def test_the_analysis_queries_are_promqls() -> None:
    objects = built("overlays/prod")
    queries = {t["metadata"]["name"]: t["spec"]["metrics"][0] for t in objects if t["kind"] == "AnalysisTemplate"}
    error, p99 = queries["gateway-error-rate"], queries["gateway-latency-p99"]
    assert error["provider"]["prometheus"]["query"] == promql.canary_error_rate(CANARY_ARG, CANARY_LABEL)
    assert p99["provider"]["prometheus"]["query"] == promql.canary_p99_ms(CANARY_ARG, CANARY_LABEL)
    assert error["successCondition"] == "result[0] < 0.01"  # the seed's gates
    assert p99["successCondition"] == "isNaN(result[0]) || result[0] < 3000"
    assert all(metric.get("count") for metric in queries.values())  # a step's analysis must end


def test_the_quality_gate_runs_switchboard_judge() -> None:
    template = find(built("overlays/prod"), "AnalysisTemplate", "gateway-quality")
    job = template["spec"]["metrics"][0]["provider"]["job"]["spec"]
    assert job["backoffLimit"] == 0
    container = job["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[0] == "switchboard"
    args = build_parser().parse_args(command[1:])  # a verb and options the CLI really has
    assert args.command == "judge" and args.release == "{{args.release}}"
    assert args.gateway == "http://ai-gateway-admin:8081" and args.token_env == "SWITCHBOARD_ADMIN_TOKEN"
    assert any(env["name"] == args.token_env and "secretKeyRef" in env["valueFrom"] for env in container["env"])
    assert [arg["name"] for arg in template["spec"]["args"]] == ["release"]


# --- vLLM, workers, Redis ----------------------------------------------------------------------------------------

def vllm_args(build: str) -> tuple[list[str], Obj, Obj]:
    statefulset = find(built(build), "StatefulSet", "vllm")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    return container["args"], container["resources"], statefulset


@pytest.mark.parametrize(("build", "gpus", "memory"), [("overlays/prod", 4, "320Gi"), ("overlays/gpu-tp2", 2, "160Gi")])
def test_vllm_tensor_parallel_matches_its_gpus(build: str, gpus: int, memory: str) -> None:
    args, resources, statefulset = vllm_args(build)
    assert f"--tensor-parallel-size={gpus}" in args and not any(
        arg.startswith("--tensor-parallel-size") and arg != f"--tensor-parallel-size={gpus}" for arg in args)
    for side in ("requests", "limits"):
        assert resources[side]["nvidia.com/gpu"] == str(gpus) and resources[side]["memory"] == memory
    spec = statefulset["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    shm = next(volume for volume in spec["volumes"] if volume["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["shm"] == "/dev/shm"
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] in mounts and claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
    startup = spec["containers"][0]["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60  # a 70B model's load


def test_the_vllm_pool_scales_on_its_queue() -> None:
    scaled = find(built("overlays/prod"), "ScaledObject", "vllm")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "vllm"}
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"].startswith("sum(vllm:num_requests_waiting")
    assert scaled["minReplicaCount"] >= 1  # an engine takes minutes to load: never zero


def test_the_worker_manifests_are_the_batch_issues() -> None:
    for name in ("worker-deployment.yaml", "keda-scaledobject.yaml"):
        copied = (MANIFESTS / "base" / "worker" / name).read_text()
        assert copied == (WORKER_DIR / name).read_text(), f"manifests/base/worker/{name} drifted from services/worker"
    objects = built("overlays/prod")
    worker = find(objects, "Deployment", "batch-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["image"] == "ghcr.io/switchboard-dev/switchboard:0.1.0"
    assert build_parser().parse_args(worker["command"][1:]).command == "worker"
    assert find(objects, "ScaledObject", "batch-worker")["spec"]["scaleTargetRef"]["name"] == "batch-worker"


def test_redis_persists_with_aof_on_a_pvc() -> None:
    statefulset = find(built("overlays/prod"), "StatefulSet", "redis")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--appendfsync") + 1] == "always"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {"name": claim, "mountPath": "/data"} in container["volumeMounts"]
    assert args[args.index("--dir") + 1] == "/data"


# --- RBAC for the console -----------------------------------------------------------------------------------------

def verbs(role: Obj) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_console_rbac_viewer_reads_and_operator_acts() -> None:
    objects = built("overlays/prod")
    viewer = verbs(find(objects, "Role", "switchboard-console-viewer"))
    operator = verbs(find(objects, "Role", "switchboard-console-operator"))
    assert all(granted == {"get", "list", "watch"} for granted in viewer.values())
    assert set(viewer) <= set(operator)
    extra = {key: operator[key] - viewer.get(key, set()) for key in operator if operator[key] - viewer.get(key, set())}
    assert extra == {("argoproj.io", "rollouts"): {"patch"}, ("argoproj.io", "rollouts/status"): {"patch"},
                     ("batch", "jobs"): {"create"}}
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for binding in (obj for obj in objects if obj["kind"] == kind):
            for subject in binding["subjects"]:
                find(objects, "ServiceAccount", subject["name"])
                assert subject["namespace"] == "ai-prod"
    assert verbs(find(objects, "ClusterRole", "switchboard-console-nodes")) == {("", "nodes"): {"get", "list", "watch"}}


def test_overlays_are_the_three_the_issue_names() -> None:
    assert sorted(path.name for path in (MANIFESTS / "overlays").iterdir()) == sorted(OVERLAYS)
    for name in OVERLAYS:
        assert yaml.safe_load((MANIFESTS / "overlays" / name / "kustomization.yaml").read_text())
    assert list(pod_specs(find(built("base"), "Deployment", "ai-gateway")))
