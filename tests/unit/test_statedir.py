"""Generated secrets in the state directory, the stack's record, and the embedded local context that follows it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from console.contexts import ContextError, load_console_config, pick_context
from console.stack import AlreadyRunning, StackError, gateway_address, stack_lock
from console.statedir import (
    OPERATOR_TOKEN,
    SecretFileError,
    StackRecord,
    ensure_secret,
    read_stack_record,
    remove_stack_record,
    state_dir,
    write_secret,
    write_stack_record,
)


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private XDG state and config homes (no console.yaml: the embedded local context)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SWITCHBOARD_ADMIN_TOKEN", raising=False)
    return tmp_path


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: a file made with the default mode would come out world-readable."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_is_private(xdg: Path, open_umask: None) -> None:
    assert mode(state_dir()) == 0o700


def test_a_generated_secret_is_0600_and_reused(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "operator-token"
    value, created = ensure_secret(path)
    assert created and len(value) >= 32
    assert mode(path) == 0o600 and path.read_text() == value + "\n"
    assert ensure_secret(path) == (value, False), "a later start reuses the stored token"
    assert [p.name for p in tmp_path.iterdir()] == ["operator-token"], "no temporary file is left behind"


def test_a_replaced_secret_keeps_mode_0600(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "client-key"
    write_secret(path, "first", replace=True)
    write_secret(path, "second", replace=True)
    assert path.read_text() == "second\n" and mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_secret(path, "third", replace=False)
    assert path.read_text() == "second\n"


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: p.mkdir(), "is not a regular file"),
    (lambda p: (p.write_text("tok\n"), p.chmod(0o644)), r"has mode 0644: others may read it; delete it"),
    (lambda p: (p.write_text("  \n"), p.chmod(0o600)), "is empty; delete it"),
    (lambda p: (p.write_bytes(b"\xff\xfe\n"), p.chmod(0o600)), "cannot read"),
    (lambda p: p.symlink_to(p.with_name("elsewhere")), "cannot read"),
], ids=["directory", "world-readable", "empty", "not-text", "symlink"])
def test_an_unusable_token_file_is_refused_naming_the_file(tmp_path: Path, make, problem: str) -> None:
    path = tmp_path / "operator-token"
    make(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SecretFileError, match=problem) as refused:
        ensure_secret(path)
    assert str(path) in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing is written over it"


def test_embedded_local_context_follows_the_running_stack(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = state_dir()
    context = pick_context(load_console_config(), None)
    assert context.admin_url == "http://127.0.0.1:8080"
    with pytest.raises(ContextError, match=f"cannot read token_file {directory / OPERATOR_TOKEN}.*"
                                           r"SWITCHBOARD_ADMIN_TOKEN is unset"):
        context.token()

    token_file = directory / OPERATOR_TOKEN
    token, _ = ensure_secret(token_file)
    write_stack_record(directory, StackRecord(123, "http://127.0.0.1:18080", "http://127.0.0.1:18081",
                                              str(token_file)))
    context = pick_context(load_console_config(), None)
    assert context.name == "local" and context.admin_url == "http://127.0.0.1:18081"
    assert context.token() == token
    monkeypatch.setenv("SWITCHBOARD_ADMIN_TOKEN", "from-env")
    assert context.token() == "from-env", "the variable wins when set"

    remove_stack_record(directory)
    assert pick_context(load_console_config(), None).admin_url == "http://127.0.0.1:8080"


def test_a_broken_stack_record_means_the_defaults(xdg: Path) -> None:
    directory = state_dir()
    for text in ("{not json", '{"pid": 1}', '{"pid": 1, "gateway_url": 2, "admin_url": 3, "operator_token_file": 4}'):
        (directory / "stack.json").write_text(text)
        assert read_stack_record() is None
        assert pick_context(load_console_config(), None).admin_url == "http://127.0.0.1:8080"


def test_a_console_file_context_may_name_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "prod.token"
    token_file.write_text("from-file\n")
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump({"contexts": {"prod": {"token_env": "PROD_TOKEN", "token_file": str(token_file)}}}))
    monkeypatch.delenv("PROD_TOKEN", raising=False)
    context = pick_context(load_console_config(path), None)
    assert context.token() == "from-file"
    monkeypatch.setenv("PROD_TOKEN", "from-env")
    assert context.token() == "from-env"


def test_gateway_address_comes_from_the_gateway_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"server": {"host": "0.0.0.0", "port": 9090}, "routes": {"auto": {}, "local": {}}}))
    address = gateway_address(str(path))
    assert (address.url, address.admin_url, address.example_route) == (
        "http://127.0.0.1:9090", "http://127.0.0.1:9090", "local")
    path.write_text(yaml.safe_dump({"admin": {"host": "::1", "port": 9443}, "routes": {"r": {}}}))
    address = gateway_address(str(path))
    assert (address.url, address.admin_url, address.example_route) == (
        "http://127.0.0.1:8080", "http://[::1]:9443", "r")
    path.write_text(yaml.safe_dump({"server": {"port": 0}}))
    with pytest.raises(StackError, match=r"needs a fixed server\.port"):
        gateway_address(str(path))
    with pytest.raises(StackError, match=r"cannot read gateway config .*missing\.yaml"):
        gateway_address(str(tmp_path / "missing.yaml"))


def test_already_running_names_the_console_and_the_token_file(tmp_path: Path) -> None:
    lock = tmp_path / "stack.lock"
    with stack_lock(lock), pytest.raises(AlreadyRunning) as refused, stack_lock(lock):
        pass
    message = str(refused.value)
    assert "`switchboard console` opens another console" in message and str(tmp_path / OPERATOR_TOKEN) in message
