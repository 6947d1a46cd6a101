"""``switchboard worker`` refuses bad input before it starts, saying what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from console.cli import main
from tests.batch_workers import WORKER_TOKEN_ENV, batch_config


def write(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def worker(config: str, *extra: str) -> list[str]:
    return ["worker", "--config", config, "--gateway-url", "http://127.0.0.1:9", "--token-env", WORKER_TOKEN_ENV,
            *extra]


def test_a_config_without_the_batch_queue_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = batch_config("http://127.0.0.1:9", "redis://127.0.0.1:9/0")
    del config["batch"]
    assert main(worker(write(tmp_path / "g.yaml", config))) == 2
    assert "batch.redis_url is not set" in capsys.readouterr().err


def test_an_unset_token_variable_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_TOKEN_ENV)
    config = write(tmp_path / "g.yaml", batch_config("http://127.0.0.1:9", "redis://127.0.0.1:9/0"))
    assert main(worker(config)) == 2
    assert f"${WORKER_TOKEN_ENV} is unset or empty" in capsys.readouterr().err


def test_an_invalid_config_or_concurrency_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = batch_config("http://127.0.0.1:9", "redis://127.0.0.1:9/0")
    bad["batch"]["max_attempts"] = 0
    assert main(worker(write(tmp_path / "bad.yaml", bad))) == 2
    assert "batch.max_attempts" in capsys.readouterr().err
    assert main(worker(str(tmp_path / "missing.yaml"))) == 2
    assert "cannot read configuration" in capsys.readouterr().err
    good = write(tmp_path / "g.yaml", batch_config("http://127.0.0.1:9", "redis://127.0.0.1:9/0"))
    assert main(worker(good, "--concurrency", "0")) == 2
    assert "--concurrency must be at least 1" in capsys.readouterr().err
