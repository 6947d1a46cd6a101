"""docker/prometheus.yml and docker/alert-rules.yml: `promtool check` passes, the alert rules fire (and stay quiet)
on known series (`promtool test rules`), their error-rate and p99 expressions are the ones services/promql.py
renders, and the scrape jobs reach the compose services on the ports those services listen on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services import promql
from tests.deploy.tools import DOCKER, run_tool

RULES = DOCKER / "alert-rules.yml"
RULE_TESTS = Path(__file__).with_name("alert-rules.test.yml")
ALERT_WINDOW = "5m"


def rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_promtool_accepts_the_prometheus_config_and_its_rule_files() -> None:
    result = run_tool("promtool", "check", "config", str(DOCKER / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check above is not vacuous: the same config with a malformed interval fails."""
    broken = (DOCKER / "prometheus.yml").read_text().replace("scrape_interval: 15s", "scrape_interval: often")
    (tmp_path / "prometheus.yml").write_text(broken)
    (tmp_path / "alert-rules.yml").write_text(RULES.read_text())
    result = run_tool("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode != 0 and "often" in result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    result = run_tool("promtool", "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


def test_the_alerts_fire_on_known_series_and_only_then() -> None:
    result = run_tool("promtool", "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {case["alertname"] for test in cases for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert firing == set(rules())


def test_the_error_rate_and_p99_alerts_use_the_shared_promql() -> None:
    alerts = rules()
    assert alerts["SwitchboardTargetErrorRateHigh"]["expr"] == f"{promql.error_rate(ALERT_WINDOW)} > 0.05"
    assert alerts["SwitchboardTargetLatencyP99High"]["expr"] == f"{promql.latency_quantile(0.99, ALERT_WINDOW)} > 30"


def test_the_breaker_and_queue_alerts_read_every_replica_without_adding_them_up() -> None:
    alerts = rules()
    assert alerts["SwitchboardBreakerOpen"]["expr"].startswith("max by (target) (switchboard_breaker_state)")
    queue = alerts["SwitchboardBatchQueueStale"]["expr"]
    assert queue.startswith("max by (endpoint) (switchboard_batch_queue_oldest_age_seconds)")


@pytest.mark.parametrize("alert", sorted(rules()))
def test_every_alert_has_a_severity_and_a_summary(alert: str) -> None:
    rule = rules()[alert]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert rule["for"], "an alert without 'for' pages on a single bad scrape"


def test_the_scrape_jobs_reach_the_compose_services_on_their_ports() -> None:
    jobs = scrape_jobs()
    services = yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())["services"]
    gateway_port = yaml.safe_load((DOCKER / "gateway.yaml").read_text())["server"]["port"]
    worker_command = services["worker"]["command"]
    worker_port = int(worker_command[worker_command.index("--metrics-port") + 1])
    assert jobs["switchboard-gateway"]["dns_sd_configs"][0] == {"names": ["gateway"], "type": "A",
                                                                 "port": gateway_port, "refresh_interval": "30s"}
    assert jobs["switchboard-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert jobs["switchboard-worker"]["dns_sd_configs"][0]["port"] == worker_port
    assert jobs["vllm"]["static_configs"][0]["targets"] == [f"cpu-backend:{services['cpu-backend']['expose'][0]}"]
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
