"""The kinds kubesim serves and the discovery documents (/api, /apis, group versions, /version) that list them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READ_VERBS = ["get", "list", "watch"]
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceKind:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    builtin: bool = True  # False for custom resources: strategic merge patch is refused for them (415)
    status: bool = True  # has a /status subresource: writes to the main resource ignore .status
    scale: bool = False  # has a /scale subresource
    log: bool = False  # has a /log subresource (pods)
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = tuple(ALL_VERBS)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> tuple[str, str]:
        return self.group, self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS: tuple[ResourceKind, ...] = (
    ResourceKind("", "v1", "pods", "Pod", log=True, short_names=("po",)),
    ResourceKind("", "v1", "nodes", "Node", namespaced=False, short_names=("no",)),
    ResourceKind("", "v1", "events", "Event", status=False, short_names=("ev",)),
    ResourceKind("", "v1", "services", "Service", short_names=("svc",)),
    ResourceKind("", "v1", "configmaps", "ConfigMap", status=False, short_names=("cm",)),
    ResourceKind("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
    ResourceKind("apps", "v1", "deployments", "Deployment", scale=True, short_names=("deploy",)),
    ResourceKind("apps", "v1", "statefulsets", "StatefulSet", scale=True, short_names=("sts",)),
    ResourceKind("apps", "v1", "replicasets", "ReplicaSet", scale=True, short_names=("rs",)),
    ResourceKind("batch", "v1", "jobs", "Job"),
    ResourceKind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", short_names=("hpa",)),
    ResourceKind("argoproj.io", "v1alpha1", "rollouts", "Rollout", builtin=False, scale=True, short_names=("ro",)),
    ResourceKind("argoproj.io", "v1alpha1", "analysisruns", "AnalysisRun", builtin=False, short_names=("ar",)),
    ResourceKind("argoproj.io", "v1alpha1", "analysistemplates", "AnalysisTemplate", builtin=False, status=False,
                 short_names=("at",)),
    ResourceKind("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", builtin=False, short_names=("so",)),
    ResourceKind("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
                 namespaced=False, status=False, verbs=("create",)),
    # Stored and validated only (no controller acts on them): what manifests/ applies beside the kinds above.
    ResourceKind("", "v1", "serviceaccounts", "ServiceAccount", status=False, short_names=("sa",)),
    ResourceKind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",)),
    ResourceKind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", status=False,
                 short_names=("netpol",)),
    ResourceKind("rbac.authorization.k8s.io", "v1", "roles", "Role", status=False),
    ResourceKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", status=False),
    ResourceKind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False, status=False),
    ResourceKind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False,
                 status=False),
    ResourceKind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", builtin=False, status=False,
                 short_names=("smon",)),
)

KUBE_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class Registry:
    """Looks kinds up by (group, version, plural) and answers the discovery documents."""

    def __init__(self, kinds: tuple[ResourceKind, ...] = KINDS) -> None:
        self.kinds = kinds
        self._by_path = {(k.group, k.version, k.plural): k for k in kinds}

    def lookup(self, group: str, version: str, plural: str) -> ResourceKind | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, kind: str) -> ResourceKind | None:
        return next((k for k in self.kinds if k.group == group and k.kind == kind), None)

    def groups(self) -> list[str]:
        return list(dict.fromkeys(k.group for k in self.kinds if k.group))

    def versions(self, group: str) -> list[str]:
        return list(dict.fromkeys(k.version for k in self.kinds if k.group == group))

    def api_versions(self) -> dict[str, Any]:
        return {"kind": "APIVersions", "versions": self.versions(""),
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}

    def api_group_list(self) -> dict[str, Any]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self.api_group(g) for g in self.groups()]}

    def api_group(self, group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in self.versions(group)]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                "preferredVersion": versions[0]}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        kinds = [k for k in self.kinds if k.group == group and k.version == version]
        if not kinds:
            return None
        resources: list[dict[str, Any]] = []
        for k in kinds:
            resources.append({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": list(k.verbs), "shortNames": list(k.short_names)})
            if k.status:
                resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get", "patch", "update"]})
            if k.scale:
                resources.append({"name": f"{k.plural}/scale", "singularName": "", "namespaced": k.namespaced,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale",
                                  "verbs": ["get", "patch", "update"]})
            if k.log:
                resources.append({"name": f"{k.plural}/log", "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": kinds[0].api_version,
                "resources": resources}
