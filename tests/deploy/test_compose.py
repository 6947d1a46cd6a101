"""docker/docker-compose.yaml: valid against the compose-spec JSON schema, and its services wired to each other the
way the gateway config, the worker, Prometheus and Grafana expect. There is no Docker engine here to run it.

The schema is vendored as tests/deploy/compose-spec.json: compose-spec/compose-spec (the Compose Specification's
repository, Apache License 2.0), file schema/compose-spec.json as last changed in commit
a08f8d51631b7127ddac3d2c65537db429d0f1d0 (2025-10-21), taken at the repository's commit 170098ba07d9 (2026-06-23).
The schema carries no version number of its own; the commit is its version. It is JSON Schema draft 7.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from services.gateway.config import GatewayConfig, load_config
from tests.deploy.tools import DOCKER

SCHEMA = Path(__file__).with_name("compose-spec.json")
IMAGE_TAG = re.compile(r"^[a-z0-9./-]+:(?!latest$)v?\d+(\.\d+)+[\w.-]*$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def gateway_config() -> GatewayConfig:
    return load_config(DOCKER / "gateway.yaml")


def schema_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_compose_file_validates_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_rejects_what_compose_would_reject(compose: dict[str, Any]) -> None:
    """The validation above is not vacuous: a misspelt key, ports not given as a list and a depends_on condition
    compose does not know all fail."""
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["imagee"] = broken["services"]["gateway"].pop("image")
    broken["services"]["redis"]["ports"] = "6379:6379"
    broken["services"]["worker"]["depends_on"]["gateway"]["condition"] = "service_ready"
    errors = "\n".join(schema_errors(broken))
    for where in ("imagee", "$.services.redis.ports", "$.services.worker.depends_on"):
        assert where in errors, errors


def test_every_image_is_a_pinned_version_and_ours_are_the_contract_names(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert IMAGE_TAG.match(service["image"]), f"{name}: image {service['image']} is not a pinned version tag"
    assert services["gateway"]["image"] == services["worker"]["image"]
    assert services["gateway"]["image"].startswith("ghcr.io/switchboard-dev/switchboard:")
    assert services["cpu-backend"]["image"].startswith("ghcr.io/switchboard-dev/switchboard-cpu-backend:")


def test_built_services_name_dockerfiles_that_exist(services: dict[str, Any]) -> None:
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert set(built) == {"gateway", "cpu-backend"}
    for name, build in built.items():
        context = (DOCKER / build["context"]).resolve()
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} not found in {context}"


def test_bind_mounts_exist_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} does not exist under docker/"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"


def test_dependencies_name_services_and_wait_for_health_where_it_matters(services: dict[str, Any]) -> None:
    for name, service in services.items():
        needs = service.get("depends_on", [])
        for other in needs:
            assert other in services, f"{name} depends on unknown service {other}"
    assert services["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_redis_persists_every_acknowledged_write(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    assert option(command, "--appendonly") == "yes"
    # The gateway's Redis store warns unless fsync is "always" (services/gateway/state/redis_store.py).
    assert option(command, "--appendfsync") == "always"
    assert any(mount.endswith(":/data") for mount in services["redis"]["volumes"])


def test_only_the_data_plane_is_published_beyond_the_hosts_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            if port != "8080:8080":
                assert port.startswith("127.0.0.1:"), f"{name}: {port} is published on every address"


def test_switchboard_containers_are_hardened(services: dict[str, Any]) -> None:
    for name in ("gateway", "worker", "cpu-backend"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_the_gateway_config_loads_and_points_at_compose_services(gateway_config: GatewayConfig,
                                                                 services: dict[str, Any]) -> None:
    assert gateway_config.server.host == "0.0.0.0" and gateway_config.auth.mode == "keys"
    for url in (gateway_config.state.redis_url, gateway_config.batch.redis_url):
        assert url is not None and urlsplit(url).hostname == "redis"
    local = gateway_config.targets["vllm-local/smollm2"]
    assert local.base_url is not None
    backend = urlsplit(local.base_url)
    assert backend.hostname == "cpu-backend" and str(backend.port) in services["cpu-backend"]["expose"]
    assert gateway_config.admin.port is not None
    assert f"127.0.0.1:{gateway_config.admin.port}:{gateway_config.admin.port}" in services["gateway"]["ports"]


def test_every_token_and_key_the_gateway_reads_is_passed_to_it(gateway_config: GatewayConfig,
                                                               services: dict[str, Any]) -> None:
    environment = services["gateway"]["environment"]
    wanted = {t.token_env for t in gateway_config.admin.tokens}
    wanted |= {t.api_key_env for t in gateway_config.targets.values() if t.api_key_env}
    assert wanted <= set(environment), f"not passed to the gateway: {sorted(wanted - set(environment))}"


def test_the_worker_reaches_the_gateway_with_a_worker_token(gateway_config: GatewayConfig,
                                                            services: dict[str, Any]) -> None:
    worker = services["worker"]
    command = worker["command"]
    assert command[0] == "worker"
    assert option(command, "--config") == "/etc/switchboard/gateway.yaml"
    assert "./gateway.yaml:/etc/switchboard/gateway.yaml:ro" in worker["volumes"]
    gateway_url = urlsplit(option(command, "--gateway-url"))
    assert (gateway_url.hostname, gateway_url.port) == ("gateway", gateway_config.server.port)
    token_env = option(command, "--token-env")
    assert token_env in worker["environment"]
    roles = {t.token_env: t.role for t in gateway_config.admin.tokens}
    assert roles.get(token_env) == "worker"
    metrics_port = option(command, "--metrics-port")
    assert option(command, "--metrics-host") == "0.0.0.0"
    assert worker["environment"]["SWITCHBOARD_HEALTHCHECK_URL"] == f"http://127.0.0.1:{metrics_port}/metrics"


def test_every_variable_the_compose_file_reads_is_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", (DOCKER / "docker-compose.yaml").read_text()))
    example = {line.split("=")[0] for line in (DOCKER / "compose.env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used and used == example
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_prometheus_and_grafana_get_their_files(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    config_path = option([a for arg in prometheus["command"] for a in arg.split("=", 1)], "--config.file")
    mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in prometheus["volumes"] if m.startswith("."))
    assert mounts["./prometheus.yml"] == config_path
    rule_files = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["rule_files"]
    for rule_file in rule_files:
        assert mounts[f"./{rule_file}"] == str(Path(config_path).parent / rule_file)
    grafana = services["grafana"]["volumes"]
    grafana_mounts = dict(m.rsplit(":", 1)[0].split(":", 1) for m in grafana if m.startswith("."))
    assert grafana_mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/switchboard.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == grafana_mounts["./grafana/dashboards"]
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert urlsplit(datasource["datasources"][0]["url"]).hostname == "prometheus"
