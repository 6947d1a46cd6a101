import re
from pathlib import Path

import pytest
import yaml

from services.gateway.config import ConfigError, example_config_path, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    return path


def test_shipped_example_config_is_valid_and_names_the_seed_rules() -> None:
    config = load_config(example_config_path())
    rules = [rule.name for rule in config.routes["auto"].rules or []]
    assert rules[0] == "enterprise-high-quality" and rules[-1] == "fallback-by-preference"
    assert {"task-code", "task-summarization", "latency-sensitive", "cost-small-prompt"} <= set(rules)
    assert config.routes["auto"].fallback == ["mini", "local", "anthropic", "gpt4"]


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read configuration"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "targets: [unclosed\n")
    with pytest.raises(ConfigError, match=r"gw\.yaml: not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["pools"]["p"]["targets"].update(a=150),
         r"pools\.p\.targets\.a: Input should be less than or equal to 100"),
        (lambda c: c["pools"]["p"]["targets"].update(a=0), r"pools\.p: at least one target weight must be above 0"),
        (lambda c: c["pools"]["p"]["targets"].update(ghost=10), r"pools\.p\.targets\.ghost: unknown target"),
        (lambda c: c["routes"]["r"].update(pool="nowhere"), r"routes\.r\.pool: unknown pool 'nowhere'"),
        (lambda c: c["targets"]["a"].update(provider="azure"),
         r"targets\.a\.provider: Input should be 'openai' or 'anthropic'"),
        (lambda c: c["targets"]["a"].pop("model"), r"targets\.a\.model: Field required"),
        (lambda c: c["targets"]["a"].update(timeouts={"ttft_s": -1}),
         r"targets\.a\.timeouts\.ttft_s: Input should be greater than 0"),
        (lambda c: c.update(surprise=1), r"surprise: Extra inputs are not permitted"),
        (lambda c: c["routes"].update(x={"rules": [{"name": "n", "pool": "p", "pools": ["p"]}]}),
         r"routes\.x\.rules\[0\]: give exactly one of 'pool' or 'pools'"),
    ],
)
def test_bad_config_names_file_key_and_expectation(tmp_path: Path, mutate, expected: str) -> None:
    config = {
        "targets": {"a": {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"r": {"pool": "p"}},
    }
    mutate(config)
    path = write(tmp_path, yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid configuration")
    assert re.search(expected, message), message
