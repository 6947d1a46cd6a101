"""`switchboard release list|show|promote|promote-full|pause|resume|abort|retry` and `switchboard judge` as a
runbook or an Argo AnalysisTemplate Job would call them: subprocesses against a real gateway, and for the
judge's verdicts (and a 409) against a loopback admin API serving fixed releases and recording the POSTs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.admin_api import ReleaseList
from tests.console.harness import NO_UPSTREAM
from tests.console.hostile_api import HostileAdminAPI
from tests.console.sample_data import gate, gateway_state, release_list
from tests.gateway_harness import VIEWER_TOKEN, auth, console_config, fast_settings, free_port, openai_target
from tests.loopback import LoopbackServer, QuietHandler

PAUSE_STEPS = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]


def switchboard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "switchboard"
    assert executable.exists(), "the switchboard console script is missing: run `make test` (pip install -e .)"
    return subprocess.run([str(executable), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def live(gateway, tmp_path: Path):
    """A gateway with pool split (a, b) and release ``rel`` waiting for promote at 20%."""
    gw = gateway({
        **fast_settings(),
        "targets": {"a": openai_target(NO_UPSTREAM, "model-a"), "b": openai_target(NO_UPSTREAM, "model-b")},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
    })
    created = httpx.post(f"{gw.url}/admin/releases", headers=auth(operator="setup@test"), json={
        "name": "rel", "pool": "split", "stable": "a", "canary": "b", "steps": PAUSE_STEPS,
        "analysis_interval_s": 0.2, "reason": "test release"})
    assert created.status_code == 201, created.text
    wait_until(lambda: release(gw)["phase"] == "Paused", "release rel Paused")
    return gw, console_config(tmp_path / "console.yaml", gw.url)


def release(gw, name: str = "rel") -> dict[str, Any]:
    listing = httpx.get(f"{gw.url}/admin/releases", headers=auth(VIEWER_TOKEN)).json()
    return next(r for r in listing["releases"] if r["spec"]["name"] == name)


def audit(gw) -> list[dict[str, Any]]:
    return httpx.get(f"{gw.url}/admin/audit", headers=auth(VIEWER_TOKEN)).json()["entries"]


def wait_until(condition, what: str, within_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {within_s}s waiting for {what}"
        time.sleep(0.05)


def test_list_and_show(live) -> None:
    _, config = live
    listing = switchboard("release", "list", "--config", str(config))
    assert listing.returncode == 0, listing.stderr
    assert "1 release(s)" in listing.stdout
    [row] = [line for line in listing.stdout.splitlines() if line.startswith("rel ")]
    assert "Paused" in row and "2/3" in row and "pause (until promoted)" in row and "20%" in row
    show = switchboard("release", "show", "rel", "--config", str(config))
    assert show.returncode == 0, show.stderr
    assert "pool split: stable a -> canary b" in show.stdout
    assert "step 2/3 pause (until promoted)" in show.stdout and "canary weight 20% (desired 20%)" in show.stdout
    assert "error rate" in show.stdout and "history (newest first)" in show.stdout
    unknown = switchboard("release", "show", "nope", "--config", str(config))
    assert unknown.returncode == 1 and "unknown release 'nope' (known: rel)" in unknown.stderr


def test_promote_sends_the_version_read_and_is_audited(live) -> None:
    gw, config = live
    promoted = switchboard("release", "promote", "rel", "--reason", "canary fine", "--config", str(config))
    assert promoted.returncode == 0, promoted.stderr
    assert "promote: release rel is now" in promoted.stdout
    wait_until(lambda: release(gw)["phase"] == "Healthy", "release rel Healthy after the promote")
    [entry] = [e for e in audit(gw) if e["reason"] == "canary fine"]
    assert entry["operator"] == "runbook@bastion" and "promote" in entry["action"]


def test_abort_then_only_retry(live) -> None:
    gw, config = live
    refused = switchboard("release", "retry", "rel", "--reason", "too early", "--config", str(config))
    assert refused.returncode == 1 and "not Degraded" in refused.stderr and "nothing sent" in refused.stderr
    aborted = switchboard("release", "abort", "rel", "--reason", "bad answers", "--config", str(config))
    assert aborted.returncode == 0, aborted.stderr
    state = release(gw)
    assert state["phase"] == "Degraded" and state["actual_weight"] == 0
    again = switchboard("release", "promote", "rel", "--reason", "oops", "--config", str(config))
    assert again.returncode == 1 and "nothing sent" in again.stderr
    reasons = [e["reason"] for e in audit(gw)]
    assert "bad answers" in reasons and "too early" not in reasons and "oops" not in reasons


def test_writes_need_a_reason_and_a_writable_context(live) -> None:
    gw, config = live
    no_reason = switchboard("release", "abort", "rel", "--config", str(config))
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    readonly = switchboard("release", "abort", "rel", "--reason", "x", "--config", str(config), "--context",
                           "viewonly")
    assert readonly.returncode == 1 and "read-only" in readonly.stderr
    assert release(gw)["phase"] == "Paused"


# ---- against a loopback admin API with fixed releases -----------------------------------------------


class ReleaseAdminAPI(LoopbackServer):
    """Serves ``listing`` at GET /admin/releases; answers every POST with ``post_answer`` and records it
    (path, body, authorization header)."""

    def __init__(self, listing: ReleaseList) -> None:
        self.listing = listing
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.authorizations: list[str | None] = []
        self.post_answer: tuple[int, dict[str, Any]] = (500, {"error": {"message": "not set"}})
        lock = threading.Lock()
        api = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                api.authorizations.append(self.headers.get("authorization"))
                if self.path.split("?", 1)[0] == "/admin/releases":
                    self.send_json(200, api.listing.model_dump(mode="json"))
                else:
                    self.send_json(404, {"error": {"message": "not found", "code": "not_found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                with lock:
                    api.posts.append((self.path, body))
                self.send_json(*api.post_answer)

        super().__init__(Handler)


@pytest.fixture
def release_api() -> Iterator[ReleaseAdminAPI]:
    with ReleaseAdminAPI(release_list(version=41)) as api:
        yield api


def test_a_changed_release_is_a_409_and_the_version_read_was_sent(release_api: ReleaseAdminAPI, tmp_path: Path) -> None:
    config = console_config(tmp_path / "console.yaml", release_api.url)
    message = "state changed by bob@elsewhere at 2026-11-26T21:00:00+00:00 (now version 42): review and retry"
    release_api.post_answer = (409, {"error": {"message": message, "code": "stale_version"},
                                 "current": gateway_state(version=42).model_dump(mode="json")})
    result = switchboard("release", "promote", "prompt-v3", "--reason", "go", "--config", str(config))
    assert result.returncode == 1 and "changed by bob@elsewhere" in result.stderr
    assert release_api.posts == [("/admin/releases/prompt-v3/promote", {"base_version": 41, "reason": "go"})]


def judge(api: ReleaseAdminAPI, name: str) -> subprocess.CompletedProcess[str]:
    return switchboard("judge", "--gateway", api.url, "--release", name, "--token-env", "JUDGE_TOKEN",
                       env={"JUDGE_TOKEN": "judge-secret"})


def with_quality(api: ReleaseAdminAPI, *gates) -> None:  # type: ignore[no-untyped-def]
    listing = release_list(version=41)
    base = listing.releases[0]
    listing.releases[0] = base.model_copy(update={"analysis": [*base.analysis[:3], *gates]})
    api.listing = listing


def test_judge_exit_codes(release_api: ReleaseAdminAPI) -> None:
    """0 pass, 1 fail, 3 inconclusive, 2 unreachable: what an AnalysisTemplate Job's success/failure reads."""
    inconclusive = judge(release_api, "haiku-next")  # the sample: 14 of 20 judged canary answers
    assert inconclusive.returncode == 3, inconclusive.stdout + inconclusive.stderr
    assert "quality gate: inconclusive" in inconclusive.stdout
    canary = next(line for line in inconclusive.stdout.splitlines() if line.startswith("canary"))
    assert canary.split() == ["canary", "0.79", "14", "1", "2"], "quality, judged, judge errors, dropped"
    assert release_api.authorizations[-1] == "Bearer judge-secret"

    with_quality(release_api, gate("quality", "fail", 0.18, 0.10, 260, 40),
                 gate("quality_floor", "pass", 0.66, 0.6, 260, 40))
    failed = judge(release_api, "haiku-next")
    assert failed.returncode == 1 and "quality gate: fail" in failed.stdout
    assert "18.0%" in failed.stdout and "≤ 10.0%" in failed.stdout

    with_quality(release_api, gate("quality", "pass", 0.02, 0.10, 260, 40),
                 gate("quality_floor", "pass", 0.79, 0.6, 260, 40))
    passed = judge(release_api, "haiku-next")
    assert passed.returncode == 0 and "quality gate: pass" in passed.stdout

    no_judge = judge(release_api, "sonnet-4-1")  # no quality gate at all: not a pass
    assert no_judge.returncode == 3 and "no quality gate" in no_judge.stdout

    unknown = judge(release_api, "nope")
    assert unknown.returncode == 2 and "unknown release 'nope'" in unknown.stderr
    assert release_api.posts == [], "judge only reads"


def test_judge_unreachable_is_2() -> None:
    result = switchboard("judge", "--gateway", f"http://127.0.0.1:{free_port()}", "--release", "x")
    assert result.returncode == 2 and "unreachable" in result.stderr


@pytest.mark.parametrize("verb", [["release", "show", "sonnet-4-1"], ["judge", "--release", "sonnet-4-1"]])
def test_server_strings_reach_the_terminal_escaped(tmp_path: Path, verb: list[str]) -> None:
    with HostileAdminAPI() as api:
        config = console_config(tmp_path / "console.yaml", api.url)
        result = switchboard(*verb, "--config", str(config))
    assert result.returncode in (0, 3), result.stderr
    assert not any(ch in result.stdout + result.stderr for ch in "\x1b\x07\u202e")
    if verb[0] == "release":
        assert "rolled back␛[2J␛]0;PWNED␇" in result.stdout
        assert "eve␛[H: gate␛]52;c;cGF5bG9hZA==␇<U+202E>" in result.stdout
