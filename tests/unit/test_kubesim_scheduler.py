"""The scheduler's pure parts (quantities, fit) and the controllers stepped by hand on an injected clock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.kubesim.controllers.base import Settings
from services.kubesim.controllers.runner import Controllers
from services.kubesim.controllers.scheduler import fits, free, parse_quantity, requests
from services.kubesim.server import KubeApi


@pytest.mark.parametrize(("text", "value"), [("500m", Decimal("0.5")), ("2", Decimal(2)), ("16Gi", Decimal(2**34)),
                                             ("1G", Decimal(10**9)), ("1e3", Decimal(1000)), (4, Decimal(4))])
def test_quantities_parse_with_their_suffixes(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "5Q", "1.2.3"])
def test_a_malformed_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a resource quantity"):
        parse_quantity(text)


def gpu_node(name: str, gpus: int, product: str | None) -> dict:
    labels = {"nvidia.com/gpu.product": product} if product else {}
    return {"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": str(gpus)}}}


def pod(gpus: int = 0, cpu: str = "1", product: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "main", "resources": {"requests": {"cpu": cpu},
                                                                "limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if product:
        spec["nodeSelector"] = {"nvidia.com/gpu.product": product}
    return {"metadata": {"name": "p"}, "spec": spec}


def test_requests_count_a_limit_without_a_request() -> None:
    assert requests(pod(gpus=2, cpu="250m")) == {"cpu": Decimal("0.25"), "memory": 0, "nvidia.com/gpu": 2}


def fit(one: dict, node: dict, bound: list[dict]) -> str | None:
    return fits(requests(one), one["spec"].get("nodeSelector") or {}, node, free(node, bound))


def test_gpu_pods_fit_only_where_gpus_and_the_product_label_allow() -> None:
    a100 = gpu_node("a100", 4, "NVIDIA-A100-SXM4-80GB")
    assert fit(pod(gpus=4, product="NVIDIA-A100-SXM4-80GB"), a100, []) is None
    assert fit(pod(gpus=1), gpu_node("cpu", 0, None), []) == "Insufficient nvidia.com/gpu"
    assert fit(pod(gpus=1, product="NVIDIA-H100-80GB-HBM3"), a100, []) == (
        "node(s) didn't match Pod's node affinity/selector")
    assert fit(pod(gpus=1), a100, [pod(gpus=4)]) == "Insufficient nvidia.com/gpu"
    assert fit(pod(cpu="9"), a100, []) == "Insufficient cpu"


def test_a_pod_turns_ready_only_once_the_ready_delay_has_passed_on_the_clock() -> None:
    now = [100.0]
    api = KubeApi({})
    runner = Controllers(api.store, api.registry, Settings(ready_delay=5.0), clock=lambda: now[0])
    kinds = runner.controllers[0].context.kinds  # type: ignore[attr-defined]
    api.store.create(kinds.nodes, "", gpu_node("n1", 0, None))
    api.store.create(kinds.pods, "default", {"metadata": {"name": "web"},
                                             "spec": {"containers": [{"name": "main", "image": "app:1"}]}})

    def ready() -> tuple[str, str]:
        found = api.store.get(kinds.pods, "default", "web")
        condition = next(c for c in found["status"]["conditions"] if c["type"] == "Ready")
        return found["status"]["phase"], condition["status"]

    runner.tick()
    assert api.store.get(kinds.pods, "default", "web")["spec"]["nodeName"] == "n1"
    assert ready() == ("Running", "False")
    now[0] += 4.9
    runner.tick()
    assert ready() == ("Running", "False")
    now[0] += 0.2
    runner.tick()
    assert ready() == ("Running", "True")
