"""`switchboard status|weights|drain|undrain|audit|keys` as a runbook would call them, against a real gateway."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.hostile_api import HostileAdminAPI
from tests.gateway_harness import (
    VIEWER_TOKEN,
    GatewayProcess,
    auth,
    console_config,
    fast_settings,
    openai_target,
)
from tests.loopback import LoopbackServer, QuietHandler
from tests.standins import Fault


@pytest.fixture
def setup(standin, gateway, tmp_path: Path):
    a, b = standin(name="a"), standin(name="b")
    gw = gateway({
        **fast_settings(),
        "targets": {"a": openai_target(a.url), "b": openai_target(b.url)},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    })
    return gw, a, console_config(tmp_path / "console.yaml", gw.url)


def switchboard(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "switchboard"
    assert executable.exists(), "the switchboard console script is missing: run `make test` (pip install -e .)"
    return subprocess.run([str(executable), *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60, env=os.environ.copy())


def test_status_exit_codes(setup) -> None:
    gw, a, config = setup
    healthy = switchboard(config, "status")
    assert healthy.returncode == 0, healthy.stderr
    assert "gateway ready" in healthy.stdout and "a " in healthy.stdout
    a.push(Fault.status(429, retry_after=30))
    for _ in range(50):  # the split is 50/50: send until a has taken its 429
        httpx.post(gw.url + "/v1/chat/completions", json={"model": "r", "messages": [{"role": "user", "content": "x"}]})
        if a.requests:
            break
    degraded = switchboard(config, "status")
    assert degraded.returncode == 1 and "cooling_down" in degraded.stdout
    assert "TTFT-P50" in degraded.stdout and "TOTAL-P50" in degraded.stdout  # the two latencies apart
    b_row = next(line for line in degraded.stdout.splitlines() if line.startswith("b "))
    assert b_row.split()[-2].endswith("ms") and b_row.split()[-4] == "-"  # b served a plain answer: no TTFT
    unreachable = switchboard(config, "status", "--context", "gone")
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stdout


def test_weights_set_is_audited_with_operator_and_reason(setup) -> None:
    gw, _, config = setup
    result = switchboard(config, "weights", "set", "split", "a=70", "b=30", "--reason", "runbook step 3")
    assert result.returncode == 0, result.stderr
    assert "pool split: a 50 -> 70, b 50 -> 30 (now state v1)" in result.stdout
    shown = switchboard(config, "weights", "show")
    assert "a" in shown.stdout and " 70" in shown.stdout
    entry = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"][0]
    assert (entry["operator"], entry["reason"], entry["after"]) == ("runbook@bastion", "runbook step 3",
                                                                   {"a": 70, "b": 30})
    audit = switchboard(config, "audit")
    assert "runbook@bastion" in audit.stdout and "runbook step 3" in audit.stdout


def test_drain_and_undrain(setup) -> None:
    gw, _, config = setup
    assert switchboard(config, "drain", "b", "--reason", "maintenance").returncode == 0
    assert "DRAINED" in switchboard(config, "weights", "show").stdout
    assert switchboard(config, "undrain", "b", "--reason", "done").returncode == 0
    actions = [e["action"] for e in httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]]
    assert actions == ["undrain", "drain"]


def test_bad_input_and_read_only_change_nothing(setup) -> None:
    gw, _, config = setup
    bad = switchboard(config, "weights", "set", "split", "a=lots", "--reason", "x")
    assert bad.returncode == 2 and "TARGET=WEIGHT" in bad.stderr
    refused = switchboard(config, "weights", "set", "split", "a=0", "b=0", "--reason", "x")
    assert refused.returncode == 1 and "at least one target weight must be above 0" in refused.stderr
    unknown = switchboard(config, "drain", "ghost", "--reason", "x")
    assert unknown.returncode == 1 and "unknown target 'ghost'" in unknown.stderr
    readonly = switchboard(config, "weights", "set", "split", "a=10", "--reason", "x", "--context", "viewonly")
    assert readonly.returncode == 1 and "read-only" in readonly.stderr
    assert httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"] == []


class ChangeAfterRead(LoopbackServer):
    """A loopback proxy in front of the gateway: right after it has forwarded the first ``GET /admin/state``,
    another operator commits a change, so a write built on what the client read is based on a version gone."""

    def __init__(self, upstream: str, change: Callable[[], None]) -> None:
        self.changed = threading.Event()
        proxy = self

        class Forward(QuietHandler):
            def forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
                answer = httpx.request(self.command, upstream + self.path, headers=headers,
                                       content=self.rfile.read(length) if length else None, timeout=10)
                if self.command == "GET" and self.path == "/admin/state" and not proxy.changed.is_set():
                    change()
                    proxy.changed.set()
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = forward

        super().__init__(Forward)


@pytest.mark.parametrize("verb", ["drain", "undrain"])
def test_drain_sends_the_version_it_read_so_a_change_in_between_is_a_conflict(setup, tmp_path: Path,
                                                                             verb: str) -> None:
    gw, _, _ = setup
    if verb == "undrain":
        httpx.post(f"{gw.url}/admin/targets/b/drain", headers=auth(), json={"reason": "before"}).raise_for_status()

    def bob() -> None:
        change = {"weights": {"a": 30, "b": 70}, "base_version": gw.state()["version"], "reason": "bob's change"}
        httpx.put(f"{gw.url}/admin/pools/split/weights", headers=auth(operator="bob@elsewhere"),
                  json=change).raise_for_status()

    drained_before = gw.target_state("b")["drained"]
    with ChangeAfterRead(gw.url, bob) as proxy:
        result = switchboard(console_config(tmp_path / "racy.yaml", proxy.url), verb, "b", "--reason", "maint")
        assert proxy.changed.is_set(), "the verb never read the state"
    assert result.returncode == 1, result.stdout + result.stderr
    assert "changed by bob@elsewhere" in result.stderr and "retry" in result.stderr
    assert gw.target_state("b")["drained"] is drained_before
    latest = httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"][0]
    assert latest["reason"] == "bob's change"


# ---- client keys ------------------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def keyed(standin, tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    """`switchboard gateway` as a process with client keys on (auth mode keys) and admin tokens."""
    upstream = standin(name="up")
    process = GatewayProcess({
        **fast_settings(auth={"mode": "keys"}),
        "targets": {"a": openai_target(upstream.url)},
        "pools": {"p": {"targets": {"a": 100}}},
        "routes": {"r": {"pool": "p"}, "other": {"pool": "p"}},
    }, str(tmp_path)).start()
    yield process, console_config(tmp_path / "console.yaml", process.url)
    process.stop()


def chat(gw: GatewayProcess, key: str | None, model: str = "r") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gw.url + "/v1/chat/completions", headers=headers, json={"model": model, "messages": MESSAGES},
                      timeout=10)


def audit(gw: GatewayProcess) -> list[dict[str, Any]]:
    return httpx.get(gw.url + "/admin/audit", headers=auth(VIEWER_TOKEN), timeout=5).json()["entries"]


def listed(gw: GatewayProcess) -> list[dict[str, Any]]:
    return httpx.get(gw.url + "/admin/keys", headers=auth(VIEWER_TOKEN), timeout=5).json()["keys"]


def test_keys_create_list_show_disable_enable_delete(keyed) -> None:
    gw, config = keyed
    created = switchboard(config, "keys", "create", "--name", "ci-bot", "--owner", "team-a", "--tier", "paid",
                          "--route", "r", "--rpm", "60", "--tpm", "100000", "--budget-usd", "5",
                          "--budget-period", "week", "--expires", "30d", "--reason", "onboarding")
    assert created.returncode == 0, created.stderr
    [secret] = re.findall(r"^sk-sb-\S+$", created.stdout, re.MULTILINE)
    assert created.stdout.count(secret) == 1 and "cannot be shown again" in created.stdout
    [key_id] = re.findall(r"created (key_\w+) 'ci-bot' for team-a: tier paid", created.stdout)

    assert chat(gw, None).status_code == 401
    assert chat(gw, secret).status_code == 200
    assert chat(gw, secret, model="other").status_code != 200, "the key may use route r only"

    table = switchboard(config, "keys", "list")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(key_id))
    assert "ci-bot" in row and "team-a" in row and "paid" in row and "active" in row and "/60" in row
    assert "$5.00 week" in row and secret not in table.stdout
    shown = switchboard(config, "keys", "show", key_id)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^routes\s+r$", shown.stdout, re.MULTILINE) and re.search(r"^tier\s+paid$", shown.stdout,
                                                                              re.MULTILINE)
    assert secret not in shown.stdout and secret[:9] in shown.stdout

    off = switchboard(config, "keys", "disable", key_id, "--reason", "leaked in a ticket")
    assert off.returncode == 0 and f"disabled {key_id}" in off.stdout
    assert chat(gw, secret).status_code == 401
    assert "disabled" in switchboard(config, "keys", "show", key_id).stdout
    on = switchboard(config, "keys", "enable", key_id, "--reason", "rotated upstream")
    assert on.returncode == 0 and chat(gw, secret).status_code == 200
    gone = switchboard(config, "keys", "delete", key_id, "--reason", "team left")
    assert gone.returncode == 0 and f"deleted {key_id}" in gone.stdout
    assert chat(gw, secret).status_code == 401
    missing = switchboard(config, "keys", "show", key_id)
    assert missing.returncode == 1 and f"unknown client key '{key_id}'" in missing.stderr

    entries = [(e["action"], e["reason"]) for e in audit(gw)]
    assert entries == [("delete_key", "team left"), ("enable_key", "rotated upstream"),
                       ("disable_key", "leaked in a ticket"), ("create_key", "onboarding")]
    assert {e["operator"] for e in audit(gw)} == {"runbook@bastion"}
    assert all(secret not in str(e) for e in audit(gw))


def test_keys_create_writes_the_key_to_a_new_0600_file_only(keyed, tmp_path: Path) -> None:
    gw, config = keyed
    path = tmp_path / "secrets" / "ci.key"
    path.parent.mkdir()
    made = switchboard(config, "keys", "create", "--name", "ci", "--owner", "team-a", "--reason", "ci",
                       "--key-file", str(path))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert secret.startswith("sk-sb-") and secret not in made.stdout and "will not be shown again" in made.stdout
    assert chat(gw, secret).status_code == 200
    again = switchboard(config, "keys", "create", "--name", "ci2", "--owner", "team-a", "--reason", "ci",
                        "--key-file", str(path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert path.read_text().strip() == secret and [k["name"] for k in listed(gw)] == ["ci"]


def test_keys_bad_input_read_only_and_refusals_change_nothing(keyed) -> None:
    gw, config = keyed
    base = ["keys", "create", "--name", "svc", "--owner", "team-a"]
    no_reason = switchboard(config, *base)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    for extra, message in (
        (["--expires", "yesterday"], "expected a duration like 30d"),
        (["--expires", "2001-01-01T00:00:00Z"], "that time has passed"),
        (["--rpm", "0"], "rpm_limit"),
        (["--budget-usd", "-5"], "budget_usd"),
        (["--name", "evil\x1b[2J"], "control or bidi character U+001B"),
    ):
        bad = switchboard(config, *base, *extra, "--reason", "x")
        assert bad.returncode == 2 and message in bad.stderr, (extra, bad.stderr)
    readonly = switchboard(config, *base, "--reason", "x", "--context", "viewonly")
    assert readonly.returncode == 1 and "read-only" in readonly.stderr
    viewer = switchboard(config, *base, "--reason", "x", "--context", "viewer")
    assert viewer.returncode == 1 and "refused (403)" in viewer.stderr
    unknown = switchboard(config, "keys", "disable", "key_nope", "--reason", "x")
    assert unknown.returncode == 1 and "unknown client key" in unknown.stderr
    unreachable = switchboard(config, "keys", "list", "--context", "gone")
    assert unreachable.returncode == 2 and "unreachable" in unreachable.stderr
    assert listed(gw) == [] and audit(gw) == []


# ---- terminal safety ---------------------------------------------------------------------------------------

TERMINAL_ACTS_ON = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@pytest.mark.parametrize("verb", [["status"], ["weights", "show"], ["audit"], ["keys", "list"],
                                  ["keys", "show", "key_x"], ["drain", "plain-target", "--reason", "r"]])
def test_server_strings_reach_the_terminal_escaped(tmp_path: Path, verb: list[str]) -> None:
    with HostileAdminAPI() as api:
        result = switchboard(console_config(tmp_path / "console.yaml", api.url), *verb)
    shown = result.stdout + result.stderr
    assert not TERMINAL_ACTS_ON.search(shown), repr(shown)
    assert "\u241b" in shown, "the escapes are shown as control pictures, not dropped"
