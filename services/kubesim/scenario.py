"""A kubesim scenario: a YAML file naming a cluster (nodes), the objects on it, the metric sources that feed the
board and a timeline of what happens when. ``load`` reads and checks one completely before anything starts: an
unknown key, a malformed node, a manifest kubesim would refuse or a bad time is a ``ScenarioError`` naming the
file, the key and what was expected. The format::

    name: seed
    extends: other                                         # optional: a shipped name or a file beside this one;
                                                           # its settings, nodes, objects and timeline come first,
                                                           # its metrics unless this file has a metrics key
    settings: {tick: 1, hpa_sync: 15, ready_delay: 2}      # optional; controllers.base.Settings fields, seconds
    cluster:
      nodes:                                               # each entry becomes `count` Nodes, <name>-0, <name>-1, ...
        - {name: cpu, count: 4, cpu: "32", memory: 128Gi}
        - {name: gpu-a100, count: 2, cpu: "96", memory: 1Ti, gpus: 4, gpu_product: NVIDIA-A100-SXM4-80GB}
          # optional: pods (default 110), labels {k: v}; a GPU node carries nvidia.com/gpu capacity, the
          # nvidia.com/gpu.product label the scheduler matches and the nvidia.com/gpu NoSchedule taint
    objects: [<manifests of any kind kubesim serves>]      # created in order (namespaces first), validated as the
                                                           # API server validates them
    metrics:                                               # sources writing the board (services/kubesim/sources)
      - {gateway: {namespace: ai-prod, workload: ai-api, multiplier: 10, interval: 1}}  # url: --gateway-url
      - {prometheus: {address: http://..., query: ..., namespace: ..., metric: ..., workload: "", interval: 5}}
      - {redis: {url: redis://..., key: jobs, namespace: ..., metric: ..., workload: "", interval: 1}}
    timeline:                                              # `at`: seconds from the start on the runner's clock,
                                                           # a number or "90s", "2m", "1h30m"
      - {at: 30s, metric: {namespace: ai-prod, workload: ai-api, name: http_requests_per_second, value: 400}}
      - {at: 60s, crash_loop: {namespace: ai-prod, pod: vllm-server-1}}          # crashing: false ends it
      - {at: 0s, analysis: {namespace: ai-prod, rollout: ai-api, step: 2, outcome: Failed}}
      - {at: 90s, scale: {namespace: ai-prod, kind: Deployment, name: ai-api, replicas: 5}}

A metric event sets one board series (source "timeline"): a workload's total (cpu in cores, memory in bytes, a
Pods metric's sum) or, with no workload, an External metric's value. ``analysis`` decides the AnalysisRun of the
Rollout's step at that index (Successful, Failed, Inconclusive or Error). Events at the same time fire in file
order (an extended scenario's first), so a later one wins."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from services.kubesim.controllers.base import Settings
from services.kubesim.controllers.scheduler import parse_quantity
from services.kubesim.discovery import KUBE_VERSION, Registry
from services.kubesim.errors import ApiError
from services.kubesim.metrics import Series
from services.kubesim.store import Obj, Store

SHIPPED = Path(__file__).parent / "scenarios"
OUTCOMES = ("Successful", "Failed", "Inconclusive", "Error")
SCALABLE = ("Deployment", "StatefulSet", "ReplicaSet", "Rollout")
DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GPU, GPU_PRODUCT = "nvidia.com/gpu", "nvidia.com/gpu.product"

class ScenarioError(Exception):
    """The scenario cannot be used; the message names the file, the key and what was expected."""


@dataclass(frozen=True)
class Feed:
    """One metric source: ``kind`` gateway, prometheus or redis, with its checked options."""

    kind: str
    options: dict[str, Any]
    where: str  # "<file>: metrics[0].gateway", for errors raised when the source is built


@dataclass(frozen=True)
class Event:
    at: float  # seconds after the start
    action: str  # metric, crash_loop, analysis, scale
    fields: dict[str, Any]
    where: str  # "seed.yaml: timeline[3]", for the log


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    settings: Settings
    nodes: tuple[Obj, ...]
    objects: tuple[Obj, ...]
    feeds: tuple[Feed, ...]
    timeline: tuple[Event, ...]
    origins: tuple[str, ...]  # per object, "<file>: objects[<i>]": where it was written (with ``extends``)


def shipped() -> list[str]:
    return sorted(path.stem for path in SHIPPED.glob("*.yaml"))


def resolve(name_or_path: str) -> Path:
    """A shipped scenario's file by name ("seed"), else the path given."""
    if DNS_LABEL.match(name_or_path) and (SHIPPED / f"{name_or_path}.yaml").is_file():
        return SHIPPED / f"{name_or_path}.yaml"
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ScenarioError(f"{name_or_path}: no such scenario file, and not a shipped scenario "
                            f"(shipped: {', '.join(shipped())})")
    return path


def load(name_or_path: str) -> Scenario:
    scenario = _read(resolve(name_or_path), ())
    _dry_run(scenario)
    return scenario


def _read(path: Path, extending: tuple[Path, ...]) -> Scenario:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read it: {exc}") from None
    check = _Checker(path)
    top = check.mapping(data, "the top level", required=("name",),
                        optional=("extends", "settings", "cluster", "objects", "metrics", "timeline"))
    name = check.text(top["name"], "name")
    base = _base(check, top["extends"], path, extending) if "extends" in top else None
    settings = check.settings(top.get("settings") or {}, base.settings if base else Settings())
    cluster = check.mapping(top.get("cluster") or {}, "cluster", optional=("nodes",))
    nodes = tuple(node for i, entry in enumerate(check.sequence(cluster.get("nodes") or [], "cluster.nodes"))
                  for node in check.nodes(entry, f"cluster.nodes[{i}]"))
    entries = check.sequence(top.get("objects") or [], "objects")
    objects = tuple(check.manifest(entry, f"objects[{i}]") for i, entry in enumerate(entries))
    origins = tuple(f"{path}: objects[{i}]" for i in range(len(objects)))
    feeds = tuple(check.feed(entry, f"metrics[{i}]")
                  for i, entry in enumerate(check.sequence(top.get("metrics") or [], "metrics")))
    timeline = tuple(check.event(entry, f"timeline[{i}]")
                     for i, entry in enumerate(check.sequence(top.get("timeline") or [], "timeline")))
    if base is None:
        return Scenario(name, path, settings, nodes, objects, feeds, timeline, origins)
    return Scenario(name, path, settings, base.nodes + nodes, base.objects + objects,
                    feeds if "metrics" in top else base.feeds, base.timeline + timeline, base.origins + origins)


def _base(check: _Checker, value: object, path: Path, extending: tuple[Path, ...]) -> Scenario:
    """The scenario ``extends`` names: a shipped name, or a file relative to this one."""
    name = check.text(value, "extends")
    relative = path.parent / name
    try:
        base_path = relative if relative.is_file() else resolve(name)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: extends: {exc}") from None
    chain = (*extending, path.resolve())
    if base_path.resolve() in chain:
        raise ScenarioError(f"{path}: extends: {name!r} extends this scenario in turn (a cycle)")
    return _read(base_path, chain)


def apply(scenario: Scenario, store: Store, registry: Registry) -> None:
    """Creates the scenario's nodes and objects in ``store`` (on the server's loop), in order."""
    nodes = registry.by_kind("", "Node")
    assert nodes is not None
    for node in scenario.nodes:
        _create(store, registry, node, f"{scenario.path}: cluster.nodes (node {node['metadata']['name']})")
        if nodes.status:  # .status is ignored on create: the node's capacity is its status
            name, now = node["metadata"]["name"], datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            stamped = [{**condition, "lastHeartbeatTime": now, "lastTransitionTime": now}
                       for condition in node["status"]["conditions"]]
            status = {**node["status"], "conditions": stamped}
            store.replace(nodes, "", name, {**store.get(nodes, "", name), "status": status}, "status")
    for obj, origin in zip(scenario.objects, scenario.origins, strict=True):
        _create(store, registry, obj, origin)


def _create(store: Store, registry: Registry, obj: Obj, where: str) -> None:
    api_version, kind_name = obj["apiVersion"], obj["kind"]
    group, _, version = api_version.rpartition("/")
    kind = registry.by_kind(group, kind_name)
    meta = obj["metadata"]
    label = f"{kind_name} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta.get('name')}"
    if kind is None or kind.version != version:
        raise ScenarioError(f"{where} ({label}): kubesim does not serve {api_version} {kind_name}")
    namespace = (meta.get("namespace") or "default") if kind.namespaced else ""
    try:
        store.create(kind, namespace, copy.deepcopy(obj))
    except ApiError as exc:
        raise ScenarioError(f"{where} ({label}): refused as the API server would ({exc.code} "
                            f"{exc.reason}): {exc.message}") from None


def _dry_run(scenario: Scenario) -> None:
    """Applies the scenario to a scratch API's store, so a manifest kubesim would refuse fails the load."""
    from services.kubesim.server import KubeApi  # the server module imports the controllers; only loading needs it

    scratch = KubeApi({})
    apply(scenario, scratch.store, scratch.registry)


class _Checker:
    """Reads one file's parts, raising ScenarioError with the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, expected: str, got: object = dataclasses.MISSING) -> ScenarioError:
        shown = "" if got is dataclasses.MISSING else f", got {got!r}"
        return ScenarioError(f"{self.path}: {where}: expected {expected}{shown}")

    def mapping(self, value: object, where: str, required: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "a mapping", value)
        allowed = (*required, *optional)
        for key in value:
            if key not in allowed:
                raise ScenarioError(f"{self.path}: {where}: unknown key {key!r} (expected one of "
                                    f"{', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.fail(f"{where}.{key}" if where != "the top level" else key, "a value (it is required)")
        return value

    def sequence(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "a list", value)
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, "a non-empty string", value)
        return value

    def name(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not DNS_LABEL.match(value) or len(value) > 63:
            raise self.fail(where, "a DNS label (lower-case letters, digits and '-')", value)
        return value

    def number(self, value: object, where: str, minimum: float = 0.0, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum or (
                positive and value <= 0):
            raise self.fail(where, "a positive number" if positive else f"a number >= {minimum:g}", value)
        return float(value)

    def integer(self, value: object, where: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"an integer >= {minimum}", value)
        return value

    def quantity(self, value: object, where: str) -> str:
        try:
            if isinstance(value, bool) or not isinstance(value, str | int | float) or parse_quantity(value) <= 0:
                raise ValueError
        except ValueError:
            raise self.fail(where, 'a positive resource quantity ("32", "500m", "128Gi")', value) from None
        return str(value)

    def duration(self, value: object, where: str) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        match = DURATION.match(value) if isinstance(value, str) else None
        if not match or not any(match.groups()):
            raise self.fail(where, 'seconds from the start: a number >= 0 or a duration ("30s", "2m", "1h30m")',
                            value)
        hours, minutes, seconds = (float(part or 0) for part in match.groups())
        return hours * 3600 + minutes * 60 + seconds

    def settings(self, value: object, start: Settings) -> Settings:
        """``start`` (the defaults, or the extended scenario's) with the given fields replaced."""
        fields = tuple(field.name for field in dataclasses.fields(Settings))
        given = self.mapping(value, "settings", optional=fields)
        return dataclasses.replace(start, **{key: self.number(given[key], f"settings.{key}", positive=True)
                                             for key in given})

    def nodes(self, value: object, where: str) -> list[Obj]:
        node = self.mapping(value, where, required=("name", "cpu", "memory"),
                            optional=("count", "gpus", "gpu_product", "pods", "labels"))
        name = self.name(node["name"], f"{where}.name")
        count = self.integer(node.get("count", 1), f"{where}.count", minimum=1)
        capacity = {"cpu": self.quantity(node["cpu"], f"{where}.cpu"),
                    "memory": self.quantity(node["memory"], f"{where}.memory"),
                    "pods": str(self.integer(node.get("pods", 110), f"{where}.pods", minimum=1))}
        gpus = self.integer(node.get("gpus", 0), f"{where}.gpus")
        labels = self.mapping(node.get("labels") or {}, f"{where}.labels", optional=tuple(node.get("labels") or {}))
        for key, label in labels.items():
            if not isinstance(key, str) or not isinstance(label, str):
                raise self.fail(f"{where}.labels", "string keys and string values", {key: label})
        if "gpu_product" in node and not gpus:
            raise self.fail(f"{where}.gpu_product", "gpus > 0 on the same entry (a product names the GPUs)")
        extra: dict[str, str] = {}
        if gpus:
            capacity[GPU] = str(gpus)
            extra = {"nvidia.com/gpu.count": str(gpus), "nvidia.com/gpu.present": "true"}
            if "gpu_product" in node:
                extra[GPU_PRODUCT] = self.text(node["gpu_product"], f"{where}.gpu_product")
        return [self._node(f"{name}-{i}", name, capacity, {**extra, **labels}, gpus > 0) for i in range(count)]

    @staticmethod
    def _node(name: str, pool: str, capacity: dict[str, str], labels: dict[str, str], gpu: bool) -> Obj:
        """The Node as the scenario describes it; ``apply`` stamps its condition times when it creates it, so a
        loaded scenario is the same data whenever it is read."""
        node: Obj = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "kubernetes.io/arch": "amd64", "kubesim.switchboard/pool": pool,
                                                  **labels}},
            "spec": {"taints": [{"key": GPU, "effect": "NoSchedule"}]} if gpu else {},
            "status": {
                "capacity": capacity, "allocatable": dict(capacity),
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status (simulated)"}],
                "nodeInfo": {"machineID": name, "systemUUID": name, "bootID": name, "kernelVersion": "6.1.0-kubesim",
                             "osImage": "kubesim (simulated)", "containerRuntimeVersion": "kubesim://1.0",
                             "kubeletVersion": KUBE_VERSION["gitVersion"], "kubeProxyVersion": "",
                             "operatingSystem": "linux", "architecture": "amd64"},
            },
        }
        return node

    def manifest(self, value: object, where: str) -> Obj:
        obj = self.mapping(value, where, required=("apiVersion", "kind", "metadata"),
                           optional=tuple(key for key in value if key not in ("apiVersion", "kind", "metadata"))
                           if isinstance(value, dict) else ())
        self.text(obj["apiVersion"], f"{where}.apiVersion")
        self.text(obj["kind"], f"{where}.kind")
        meta = self.mapping(obj["metadata"], f"{where}.metadata", required=("name",),
                            optional=tuple(key for key in obj["metadata"] if key != "name")
                            if isinstance(obj["metadata"], dict) else ())
        self.text(meta["name"], f"{where}.metadata.name")
        return obj

    def feed(self, value: object, where: str) -> Feed:
        kinds: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
            "gateway": (("namespace", "workload"), ("multiplier", "interval")),
            "prometheus": (("address", "query", "namespace", "metric"), ("workload", "interval")),
            "redis": (("url", "key", "namespace", "metric"), ("workload", "interval")),
        }
        entry = self.mapping(value, where, optional=tuple(kinds))
        if len(entry) != 1:
            raise self.fail(where, f"exactly one of {', '.join(kinds)}", value)
        kind, options = next(iter(entry.items()))
        required, optional = kinds[kind]
        options = dict(self.mapping(options, f"{where}.{kind}", required=required, optional=optional))
        for key in ("namespace", "workload", "metric", "address", "query", "url", "key"):
            if key in options and not (key == "workload" and options[key] == ""):
                self.text(options[key], f"{where}.{kind}.{key}")
        for key in ("multiplier", "interval"):
            if key in options:
                self.number(options[key], f"{where}.{kind}.{key}", positive=True)
        return Feed(kind, options, f"{self.path}: {where}.{kind}")

    def event(self, value: object, where: str) -> Event:
        actions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
            "metric": (("namespace", "name", "value"), ("workload",)),
            "crash_loop": (("namespace", "pod"), ("crashing",)),
            "analysis": (("namespace", "rollout", "step", "outcome"), ()),
            "scale": (("namespace", "kind", "name", "replicas"), ()),
        }
        entry = self.mapping(value, where, required=("at",), optional=tuple(actions))
        at = self.duration(entry["at"], f"{where}.at")
        named = [key for key in entry if key != "at"]
        if len(named) != 1:
            raise self.fail(where, f"`at` and exactly one of {', '.join(actions)}", value)
        action = named[0]
        required, optional = actions[action]
        fields = dict(self.mapping(entry[action], f"{where}.{action}", required=required, optional=optional))
        inner = f"{where}.{action}"
        for key in ("namespace", "pod", "rollout", "name"):
            if key in fields:
                self.text(fields[key], f"{inner}.{key}")
        if action == "metric":
            self.number(fields["value"], f"{inner}.value")
            fields.setdefault("workload", "")
            if not isinstance(fields["workload"], str):
                raise self.fail(f"{inner}.workload", "a string (empty for an External metric)", fields["workload"])
        elif action == "crash_loop":
            if not isinstance(fields.setdefault("crashing", True), bool):
                raise self.fail(f"{inner}.crashing", "true or false", fields["crashing"])
        elif action == "analysis":
            self.integer(fields["step"], f"{inner}.step")
            if fields["outcome"] not in OUTCOMES:
                raise self.fail(f"{inner}.outcome", f"one of {', '.join(OUTCOMES)}", fields["outcome"])
        else:
            if fields["kind"] not in SCALABLE:
                raise self.fail(f"{inner}.kind", f"one of {', '.join(SCALABLE)}", fields["kind"])
            self.integer(fields["replicas"], f"{inner}.replicas")
        return Event(at, action, fields, f"{self.path.name}: {where}")


def series(options: dict[str, Any]) -> Series:
    """The board series a prometheus or redis feed writes."""
    return Series(options["namespace"], options["metric"], options.get("workload", ""))


def sources(scenario: Scenario, gateway_url: str | None) -> tuple[tuple[Any, ...], list[str]]:
    """The scenario's metric sources, and a note for each feed left out (a gateway feed with no gateway URL).
    Each source's module is imported here, so a scenario naming one that is not installed fails clearly."""
    built: list[Any] = []
    notes: list[str] = []
    for feed in scenario.feeds:
        options = feed.options
        interval = {"interval_s": float(options["interval"])} if "interval" in options else {}
        if feed.kind == "gateway":
            if not gateway_url:
                notes.append(f"{feed.where} ({options['namespace']}/{options['workload']}) is not fed: "
                             "no --gateway-url")
                continue
            module = _source_module("gateway", feed)
            built.append(module.GatewaySource(gateway_url, options["namespace"], options["workload"],
                                              multiplier=float(options.get("multiplier", 1.0)), **interval))
        elif feed.kind == "prometheus":
            module = _source_module("prometheus", feed)
            built.append(module.PrometheusSource(options["address"], options["query"], series(options), **interval))
        else:
            module = _source_module("redis_length", feed)
            built.append(module.RedisLengthSource(options["url"], options["key"], series(options), **interval))
    return tuple(built), notes


def _source_module(name: str, feed: Feed) -> Any:
    module = f"services.kubesim.sources.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        missing = f"{feed.where}: this kubesim has no {feed.kind} source ({module} is missing)"
        raise ScenarioError(missing) from None
