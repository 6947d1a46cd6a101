"""Canary releases through the real gateway: stand-in upstreams, the openai SDK, the admin API, a stand-in judge;
real gateway processes on SQLite for a restart and on Redis for two replicas and a SIGKILLed lease holder.

The steps last seconds and the gates need a few dozen samples. Where a test is not about the p99 gate it sets
``max_p99_ratio`` out of reach: the p99 of a few dozen samples is their slowest one, and one request stalled by
a loaded machine would fail the gate for a reason the test does not look at.
(Named ``test_canary_gateway``: test modules share one namespace, and tests/unit has a ``test_canary``.)
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from services.gateway.canary import assign_arm
from tests.gateway_harness import VIEWER_TOKEN, GatewayProcess, auth, fast_settings, free_port, openai_target
from tests.redis_server import RedisServer
from tests.standins import Fault, Standin
from tests.standins.judge import JudgeStandin

NAME = "rel"
MESSAGES = [{"role": "user", "content": "hello there"}]
WAIT_S = 40  # generous: a loaded two-core machine; the releases move in tenths of seconds
OUT_OF_REACH = 1000.0  # max_p99_ratio for the tests that are not about latency (see the module docstring)
SESSION = "x-switchboard-session"


# ---- the configuration and the admin API --------------------------------------------------------------------


def release_config(stable: Standin, canary: Standin, *, judge_url: str | None = None,
                   prices: tuple[float, float] = (0.0, 0.0), state: dict[str, Any] | None = None,
                   **extra: Any) -> dict[str, Any]:
    """Pool ``chat`` of target ``old`` (the stable arm, all the traffic) and ``new`` (the canary, weight 0)."""
    def price(per_1k: float) -> dict[str, float]:
        return {"input_per_1k": per_1k, "output_per_1k": per_1k}

    targets = {"old": openai_target(stable.url, "model-old", price=price(prices[0])),
               "new": openai_target(canary.url, "model-new", price=price(prices[1]))}
    if judge_url is not None:
        targets["judge"] = openai_target(judge_url, "judge-model")
    config = {
        **fast_settings(canary={"tick_s": 0.1, "publish_s": 0.2, "lease_ttl_s": 1.5}),
        "targets": targets,
        "pools": {"chat": {"targets": {"old": 100, "new": 0}}},
        "routes": {"r": {"pool": "chat"}},
        **extra,
    }
    if state is not None:
        config["state"] = state
    return config


def weight(w: int) -> dict[str, Any]:
    return {"setWeight": w}


def pause(seconds: float | None = None) -> dict[str, Any]:
    return {"pause": {} if seconds is None else {"duration_s": seconds}}


ANALYSIS = {"analysis": {}}


def release_spec(steps: list[dict[str, Any]], thresholds: dict[str, Any] | None = None,
                 judge: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    spec = {"name": NAME, "pool": "chat", "stable": "old", "canary": "new", "steps": steps,
            "thresholds": {"min_requests": 20, "max_p99_ratio": OUT_OF_REACH, **(thresholds or {})},
            "analysis_interval_s": 0.3, **fields}
    if judge is not None:
        spec["judge"] = {"target": "judge", "sample_rate": 1.0, **judge}
    return spec


def create(url: str, spec: dict[str, Any], operator: str = "alice@host", reason: str = "ship model-new",
           ) -> httpx.Response:
    return httpx.post(url + "/admin/releases", json={**spec, "reason": reason}, headers=auth(operator=operator),
                      timeout=10)


def created(url: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = create(url, spec)
    assert response.status_code == 201, response.text
    return response.json()


def release(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/releases/{NAME}", headers=auth(VIEWER_TOKEN), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def version(url: str) -> int:
    return httpx.get(url + "/admin/releases", headers=auth(VIEWER_TOKEN), timeout=10).json()["version"]


def act(url: str, action: str, base: int | None = None, reason: str = "on-call decision",
        operator: str = "bob@host") -> httpx.Response:
    body = {"base_version": version(url) if base is None else base, "reason": reason}
    return httpx.post(f"{url}/admin/releases/{NAME}/{action}", json=body, headers=auth(operator=operator), timeout=10)


def audit(url: str) -> list[dict[str, Any]]:
    """The release's audit entries, oldest first."""
    response = httpx.get(url + "/admin/audit", headers=auth(VIEWER_TOKEN), params={"limit": 1000}, timeout=10)
    return sorted((e for e in response.json()["entries"] if e["target"] == NAME), key=lambda e: e["version"])


def wait_for(url: str, what: str, done: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = release(url)
        if done(state):
            return state
        assert time.monotonic() < deadline, (
            f"release not {what} within {timeout} s: {state['phase']} at step {state['step_index']}, weight "
            f"{state['actual_weight']}, '{state['message']}', arms {state['arms']}")
        time.sleep(0.05)


def at_step(index: int, phase: str) -> Callable[[dict[str, Any]], bool]:
    def done(state: dict[str, Any]) -> bool:
        assert state["phase"] != "Degraded" or phase == "Degraded", f"rolled back: {state['message']}"
        stuck = state["phase"] == "Paused" and state["step_index"] != index and "inconclusive" in state["message"]
        assert not stuck, f"paused at step {state['step_index']}: {state['message']}"
        return state["step_index"] == index and state["phase"] == phase

    return done


def settled(state: dict[str, Any]) -> bool:
    """No longer Progressing: paused (inconclusive or waiting for promote), rolled back or promoted."""
    return state["phase"] != "Progressing"


def reasons(state: dict[str, Any]) -> list[str]:
    """The release's transitions, oldest first."""
    return [t["reason"] for t in reversed(state["history"])]


def gates(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["gate"]: g for g in state["analysis"]}


# ---- traffic --------------------------------------------------------------------------------------------------


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)


def send(client: openai.OpenAI, session: str, stream: bool = False) -> str:
    """One chat request in ``session`` (a stream read to its end); the target that answered."""
    raw = client.chat.completions.with_raw_response.create(model="r", messages=MESSAGES, stream=stream,
                                                           extra_headers={SESSION: session})
    if stream:
        for _ in raw.parse():
            pass
    return raw.headers["x-switchboard-target"]


class Traffic:
    """Clients in threads sending chat requests through the gateway, each in a new session (so both arms get
    traffic at any weight), until the ``with`` block ends."""

    def __init__(self, url: str, threads: int = 6, stream: bool = False) -> None:
        self.client = client_for(url)
        self.stream = stream
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.targets: Counter[str] = Counter()
        self.failures: list[str] = []
        self.numbers = itertools.count()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                target = send(self.client, f"traffic-{next(self.numbers)}", self.stream)
            except openai.APIError as exc:
                with self.lock:
                    self.failures.append(repr(exc))
            else:
                with self.lock:
                    self.targets[target] += 1

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


def sessions(arm: str, at_weight: int, n: int, prefix: str) -> list[str]:
    """``n`` session names that the release's sticky assignment puts on ``arm`` at ``at_weight``."""
    names = (f"{prefix}-{i}" for i in itertools.count())
    return list(itertools.islice((s for s in names if assign_arm(NAME, s, at_weight, 0.0) == arm), n))


def assert_no_canary_traffic(url: str, canary: Standin, n: int = 60) -> None:
    """Fresh sessions after a rollback: every one answered by the stable arm, none reaching the canary."""
    before = len(canary.requests)
    client = client_for(url)
    answered = Counter(send(client, f"after-{i}") for i in range(n))
    assert answered == {"old": n}
    assert len(canary.requests) == before, "requests reached the canary after it was rolled back"


@pytest.fixture
def arms(standin) -> tuple[Standin, Standin]:
    """The stable and canary stand-ins; only the canary's answer has the word 'canary' (the judge tests look
    for it), and both answers have the same number of words (the same tokens, the same cost at one price)."""
    return standin(name="old", reply="Hello from the stable model"), standin(name="new",
                                                                              reply="Hello from the canary model")


# ---- the controller on one gateway ----------------------------------------------------------------------------


def test_a_healthy_canary_walks_every_step_to_healthy(arms, gateway) -> None:
    stable, canary = arms
    for upstream in arms:  # a steady 100 ms, so that the default p99 gate (3x) sees latency, not machine noise
        upstream.set_default(Fault.delay(0.1))
    gw = gateway(release_config(stable, canary))
    steps = [weight(30), pause(4), ANALYSIS, weight(70), pause(4), ANALYSIS, weight(100)]
    start = created(gw.url, release_spec(steps, {"max_p99_ratio": 3.0}))
    assert (start["phase"], start["step_index"], start["steps_total"], start["actual_weight"]) == ("Progressing", 0,
                                                                                                     7, 0)

    with Traffic(gw.url, threads=8) as traffic:
        done = wait_for(gw.url, "promoted", settled)
    assert done["phase"] == "Healthy", f"{done['phase']}: {done['message']}"
    assert not traffic.failures
    assert (done["step_index"], done["desired_weight"], done["actual_weight"], done["aborted"]) == (7, 100, 100, False)
    assert reasons(done) == ["created", "canary weight 30%", "pause of 4s done", "analysis passed", "canary weight 70%",
                             "pause of 4s done", "analysis passed", "canary weight 100%", "fully promoted"]

    entries = audit(gw.url)
    assert [(e["action"], e["actor"]) for e in entries] == [("release_create", "test-operator")] + [
        ("release_step", "controller")] * 8
    assert (entries[0]["operator"], entries[0]["reason"]) == ("alice@host", "ship model-new")
    assert [e["reason"] for e in entries[1:]] == reasons(done)[1:]
    assert entries[-1]["after"] == {"phase": "Healthy", "step": 7, "weight": 100}

    metrics = gw.metrics()
    assert re.search(r'switchboard_release_requests_total\{arm="canary",outcome="success",release="rel"\} [1-9]',
                     metrics)
    assert 'switchboard_release_canary_weight{release="rel"} 100.0' in metrics

    before = len(stable.requests)
    client = client_for(gw.url)
    assert Counter(send(client, f"done-{i}") for i in range(20)) == {"new": 20}
    assert len(stable.requests) == before


def test_errors_on_the_canary_roll_it_back_and_then_it_gets_no_requests(arms, gateway) -> None:
    stable, canary = arms
    draw = random.Random(5)
    canary.set_default(lambda: Fault.status(500) if draw.random() < 0.05 else Fault.ok())
    gw = gateway(release_config(stable, canary))
    created(gw.url, release_spec([weight(50), pause(600), weight(100)], {"max_error_rate": 0.01}))

    with Traffic(gw.url) as traffic:
        rolled = wait_for(gw.url, "rolled back", settled)
    assert not traffic.failures, "the gateway retried and fell back: clients saw no error"
    assert (rolled["phase"], rolled["actual_weight"], rolled["aborted"], rolled["step_index"]) == ("Degraded", 0,
                                                                                                   True, 1)
    found = re.fullmatch(r"rolled back: gate error_rate failed: ([0-9.e-]+) > 0\.01 \(canary (\d+)/(\d+) failed\)",
                         rolled["message"])
    assert found, rolled["message"]
    errors, requests = int(found[2]), int(found[3])
    assert requests >= 20 and errors / requests > 0.01
    assert float(found[1]) == pytest.approx(errors / requests, rel=1e-2)
    rollback = audit(gw.url)[-1]
    assert (rollback["action"], rollback["actor"], rollback["reason"]) == ("release_rollback", "controller",
                                                                           rolled["message"])
    assert rollback["after"] == {"phase": "Degraded", "step": 1, "weight": 0}

    assert_no_canary_traffic(gw.url, canary)


def test_a_p99_regression_rolls_back_naming_the_latency_gate(arms, gateway) -> None:
    stable, canary = arms
    canary.set_default(Fault.delay(0.8))
    gw = gateway(release_config(stable, canary))
    created(gw.url, release_spec([weight(50), pause(600), weight(100)], {"max_p99_ratio": 3.0}))

    with Traffic(gw.url, threads=8):
        rolled = wait_for(gw.url, "rolled back", settled)
    assert rolled["phase"] == "Degraded", rolled["message"]
    found = re.fullmatch(r"rolled back: gate p99_latency failed: ([0-9.]+) > 3 "
                         r"\(p99 canary (\d+)ms vs stable (\d+)ms\)", rolled["message"])
    assert found, rolled["message"]
    assert int(found[2]) >= 800 and float(found[1]) == pytest.approx(int(found[2]) / int(found[3]), rel=1e-2)
    assert audit(gw.url)[-1]["action"] == "release_rollback"


def test_a_cost_regression_rolls_back_naming_the_cost_gate(arms, gateway) -> None:
    stable, canary = arms
    gw = gateway(release_config(stable, canary, prices=(0.1, 0.5)))
    created(gw.url, release_spec([weight(50), pause(600), weight(100)]))

    with Traffic(gw.url):
        rolled = wait_for(gw.url, "rolled back", settled)
    assert rolled["phase"] == "Degraded", rolled["message"]
    found = re.fullmatch(r"rolled back: gate cost failed: 5 > 2 "
                         r"\(per request canary \$([0-9.]+) vs stable \$([0-9.]+)\)", rolled["message"])
    assert found, rolled["message"]
    assert float(found[1]) == pytest.approx(5 * float(found[2]), rel=1e-3)
    assert_no_canary_traffic(gw.url, canary)


def test_too_few_samples_pause_the_analysis_and_it_never_advances(arms, gateway) -> None:
    stable, canary = arms
    gw = gateway(release_config(stable, canary))
    created(gw.url, release_spec([weight(50), pause(0.5), ANALYSIS, weight(100)], {"min_requests": 100_000}))

    with Traffic(gw.url):
        paused = wait_for(gw.url, "paused", settled)
        assert (paused["phase"], paused["step_index"], paused["actual_weight"]) == ("Paused", 2, 50)
        assert paused["message"].startswith("analysis inconclusive, too few samples: error_rate (stable ")
        assert "needs 100000" in paused["message"]
        # More traffic and more analysis intervals change nothing: it waits for an operator, never for luck.
        seen, since = paused["arms"]["canary"]["requests"], time.monotonic()
        later = wait_for(gw.url, "given more traffic", lambda s: s["arms"]["canary"]["requests"] >= seen + 30
                         and time.monotonic() - since > 5 * 0.3)
    assert (later["phase"], later["step_index"], later["history"]) == ("Paused", 2, paused["history"])
    assert {g["verdict"] for g in later["analysis"]} == {"inconclusive"}
    assert later["arms"]["stable"]["requests"] > 0 and later["arms"]["canary"]["requests"] > seen


def test_a_session_keeps_its_arm_when_the_weight_rises(arms, gateway) -> None:
    stable, canary = arms
    gw = gateway(release_config(stable, canary))
    created(gw.url, release_spec([weight(20), pause(), weight(50), pause(), weight(100)]))
    wait_for(gw.url, "paused at 20%", at_step(1, "Paused"))
    client = client_for(gw.url)
    names = [f"conversation-{i}" for i in range(150)]

    at_20 = {s: send(client, s) for s in names}
    assert {s: send(client, s) for s in names} == at_20, "a session changed arms at the same weight"
    share = sum(t == "new" for t in at_20.values()) / len(names)
    assert 0.08 < share < 0.35, f"{share:.0%} of sessions on the canary at weight 20"

    assert act(gw.url, "promote").status_code == 200
    wait_for(gw.url, "paused at 50%", at_step(3, "Paused"))
    at_50 = {s: send(client, s) for s in names}
    back = [s for s in names if at_20[s] == "new" and at_50[s] == "old"]
    assert back == [], "sessions on the canary went back to stable when its weight rose"
    over = sum(at_20[s] == "old" and at_50[s] == "new" for s in names)
    assert 0.15 < over / len(names) < 0.45, f"{over} of {len(names)} sessions moved to the canary from 20% to 50%"


# ---- operators ----------------------------------------------------------------------------------------------------


def test_operator_actions_with_argos_preconditions_versions_and_audit(arms, gateway) -> None:
    stable, canary = arms
    gw = gateway(release_config(stable, canary))
    created(gw.url, release_spec([weight(20), pause(), weight(50), pause(), weight(100)]))
    paused = wait_for(gw.url, "paused at 20%", at_step(1, "Paused"))
    assert paused["message"] == "paused: waiting for promote" and paused["pause_left_s"] is None

    current = version(gw.url)
    stale = act(gw.url, "promote", base=current - 1)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"
    for action, why in (("retry", "cannot retry a release that is Paused: retry works once it is Degraded"),
                        ("pause", "cannot pause a release that is Paused: pause works while Progressing")):
        refused = act(gw.url, action, base=current)
        assert refused.status_code == 409, refused.text
        assert (refused.json()["error"]["code"], refused.json()["error"]["message"]) == ("refused", why)
    assert version(gw.url) == current and release(gw.url)["history"] == paused["history"], "a refusal changed things"

    promoted = act(gw.url, "promote", base=current, reason="20% looks fine", operator="alice@host")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["step_index"] >= 2
    wait_for(gw.url, "paused at 50%", at_step(3, "Paused"))

    aborted = act(gw.url, "abort", reason="customers complain", operator="carol@host")
    assert aborted.status_code == 200, aborted.text
    body = aborted.json()
    assert (body["phase"], body["actual_weight"], body["aborted"]) == ("Degraded", 0, True)
    assert body["message"] == "abort by carol@host: customers complain"
    assert_no_canary_traffic(gw.url, canary)
    for action in ("promote", "abort", "resume", "pause"):
        refused = act(gw.url, action)
        assert refused.status_code == 409 and "Degraded" in refused.json()["error"]["message"], refused.text

    retried = act(gw.url, "retry", reason="fixed the prompt", operator="carol@host")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["step_index"], retried.json()["aborted"]) == (0, False)
    again = wait_for(gw.url, "paused at 20% again", at_step(1, "Paused"))
    assert again["actual_weight"] == 20

    full = act(gw.url, "promote-full", reason="ship it", operator="alice@host")
    assert full.status_code == 200 and (full.json()["phase"], full.json()["actual_weight"]) == ("Healthy", 100)
    assert act(gw.url, "promote-full").status_code == 409

    operators = [(e["action"], e["operator"], e["reason"]) for e in audit(gw.url) if e["actor"] != "controller"]
    assert operators == [("release_create", "alice@host", "ship model-new"),
                         ("release_promote", "alice@host", "20% looks fine"),
                         ("release_abort", "carol@host", "customers complain"),
                         ("release_retry", "carol@host", "fixed the prompt"),
                         ("release_promote-full", "alice@host", "ship it")]


def test_a_release_that_cannot_run_is_refused_and_changes_nothing(arms, gateway) -> None:
    stable, canary = arms
    gw = gateway(release_config(stable, canary))
    assert create(gw.url, release_spec([weight(10)], pool="nope")).status_code == 404
    assert create(gw.url, release_spec([weight(10)], canary="ghost")).status_code == 404
    assert create(gw.url, release_spec([weight(10)], canary="old")).status_code == 409
    assert create(gw.url, release_spec([])).status_code == 422
    assert create(gw.url, release_spec([{"setWeight": 10, "analysis": {}}])).status_code == 422
    assert version(gw.url) == 0 and audit(gw.url) == []
    created(gw.url, release_spec([weight(10), pause()]))
    other = create(gw.url, {**release_spec([weight(10)]), "name": "other"})
    assert other.status_code == 409 and "already in release 'rel'" in other.json()["error"]["message"]
    assert create(gw.url, release_spec([weight(10)])).status_code == 409
    assert httpx.post(f"{gw.url}/admin/releases/{NAME}/promote", headers=auth(VIEWER_TOKEN),
                      json={"base_version": 1, "reason": "viewer"}).status_code == 403
    assert httpx.post(f"{gw.url}/admin/releases/ghost/promote", headers=auth(),
                      json={"base_version": 1, "reason": "no such"}).status_code == 404
    assert httpx.get(f"{gw.url}/admin/releases/ghost", headers=auth(VIEWER_TOKEN)).status_code == 404
    assert httpx.post(f"{gw.url}/admin/releases/{NAME}/rollback", headers=auth(),
                      json={"base_version": 1, "reason": "not an action"}).status_code == 422


def put_weights(url: str, weights: dict[str, int]) -> httpx.Response:
    return httpx.put(f"{url}/admin/pools/chat/weights", headers=auth(operator="dave@host"), timeout=10,
                     json={"weights": weights, "base_version": version(url), "reason": "split by hand"})


def test_weights_an_operator_sets_after_a_release_ended_are_routed_by(arms, gateway) -> None:
    stable, canary = arms
    gw = gateway(release_config(stable, canary))
    created(gw.url, release_spec([weight(50), pause()]))
    wait_for(gw.url, "paused at 50%", at_step(1, "Paused"))
    during = put_weights(gw.url, {"old": 50, "new": 50})
    assert during.status_code == 409 and "is in release 'rel'" in during.json()["error"]["message"]
    assert act(gw.url, "abort").status_code == 200

    after = put_weights(gw.url, {"old": 50, "new": 50})
    assert after.status_code == 200, after.text
    chat = next(p for p in after.json()["pools"] if p["name"] == "chat")
    assert chat["weights"] == {"old": 50, "new": 50}, "acknowledged and audited, but the ended release's weights win"
    client = client_for(gw.url)
    assert set(send(client, f"manual-{i}") for i in range(60)) == {"old", "new"}


# ---- quality by the judge ------------------------------------------------------------------------------------------


@pytest.fixture
def judge() -> Iterator[JudgeStandin]:
    with JudgeStandin(name="judge", score=4) as server:
        yield server


def test_a_judge_quality_drop_rolls_back_naming_the_quality_gate(arms, gateway, judge) -> None:
    stable, canary = arms
    judge.grade_with(lambda prompt: 2 if "canary" in prompt else 5)
    gw = gateway(release_config(stable, canary, judge_url=judge.url))
    created(gw.url, release_spec([weight(50), pause(600), weight(100)], {"min_judged": 10}, judge={}))

    with Traffic(gw.url, stream=True) as traffic:  # the gateway assembles a sampled stream's text for the judge
        rolled = wait_for(gw.url, "rolled back", settled)
    assert not traffic.failures
    assert rolled["phase"] == "Degraded", rolled["message"]
    assert rolled["message"].startswith("rolled back: gate quality failed: 0.75 > 0.1 (judge score canary 0.25 vs "
                                        "stable 1.00 (0 judge errors"), rolled["message"]
    assert judge.requests, "the judge was asked"
    assert_no_canary_traffic(gw.url, canary)


def judge_cannot_grade(arms, gateway, judge_url: str) -> dict[str, Any]:
    """A release whose judge gives no grade: wait for enough traffic and judge errors, promote into the analysis,
    and return where the release settles."""
    stable, canary = arms
    gw = gateway(release_config(stable, canary, judge_url=judge_url))
    created(gw.url, release_spec([weight(50), pause(), ANALYSIS, weight(100)], {"min_judged": 5}, judge={}))
    wait_for(gw.url, "paused at 50%", at_step(1, "Paused"))
    with Traffic(gw.url):
        counted = wait_for(gw.url, "counting judge errors", lambda s: all(
            a["requests"] >= 20 and a["judge_errors"] >= 5 for a in s["arms"].values()))
    assert all(a["judged"] == 0 for a in counted["arms"].values()), counted["arms"]
    quality = gates(counted)["quality"]
    assert (quality["verdict"], quality["value"]) == ("inconclusive", None)
    assert act(gw.url, "promote").status_code == 200
    return wait_for(gw.url, "analysed", settled)


def test_unparseable_judge_replies_are_judge_errors_and_the_quality_gate_is_inconclusive(arms, gateway,
                                                                                           judge) -> None:
    judge.grade_with("I think it is quite good")
    analysed = judge_cannot_grade(arms, gateway, judge.url)
    assert (analysed["phase"], analysed["step_index"]) == ("Paused", 2), analysed["message"]
    assert analysed["message"] == "analysis inconclusive, too few samples: quality (stable 0, canary 0; needs 5)"
    assert {g["gate"]: g["verdict"] for g in analysed["analysis"]} == {
        "error_rate": "pass", "p99_latency": "pass", "cost": "pass", "quality": "inconclusive"}
    assert re.search(r"\(\d+ judge errors, 0 dropped\)", gates(analysed)["quality"]["detail"])
    assert judge.requests


def test_a_judge_that_is_down_makes_the_quality_gate_inconclusive_not_failed_or_passed(arms, gateway) -> None:
    analysed = judge_cannot_grade(arms, gateway, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert (analysed["phase"], analysed["step_index"], analysed["aborted"]) == ("Paused", 2, False)
    assert analysed["message"] == "analysis inconclusive, too few samples: quality (stable 0, canary 0; needs 5)"
    assert gates(analysed)["quality"]["verdict"] == "inconclusive"


# ---- real processes: a restart on SQLite, two replicas on Redis ----------------------------------------------------


def test_a_restart_mid_release_resumes_the_step_with_its_elapsed_time(arms, tmp_path: Path) -> None:
    stable, canary = arms
    spec = release_spec([weight(10), pause(3600), weight(100)])
    proc = GatewayProcess(release_config(stable, canary, releases=[spec]), str(tmp_path))
    try:
        proc.start()
        before = wait_for(proc.url, "in its pause", at_step(1, "Progressing"))
        assert before["actual_weight"] == 10 and before["pause_left_s"] > 3500
        assert proc.stop() == 0
        proc.start()
        asked = time.time()
        after = release(proc.url)
        answered = time.time()
        entries = audit(proc.url)
    finally:
        proc.stop()
    assert (after["phase"], after["step_index"], after["actual_weight"]) == ("Progressing", 1, 10)
    started = before["step_started_at"]
    assert after["step_started_at"] == started
    assert asked - started - 0.01 <= after["time_in_step_s"] <= answered - started + 0.01
    assert after["pause_left_s"] == pytest.approx(3600 - after["time_in_step_s"], abs=0.5)
    assert reasons(after) == ["created", "canary weight 10%"]
    assert [(e["action"], e["actor"]) for e in entries] == [("release_create", "config"),
                                                            ("release_step", "controller")], "created from config once"


@pytest.fixture
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def test_two_replicas_share_a_release_and_the_survivor_takes_over_when_the_leader_is_killed(
        arms, redis_url: str, tmp_path: Path) -> None:
    stable, canary = arms
    state = {"backend": "redis", "redis_url": redis_url, "redis_prefix": "sb-canary"}
    config = release_config(stable, canary, state=state)
    one, two = (GatewayProcess(config, str(tmp_path), f"replica{i}") for i in (1, 2))
    try:
        one.start()
        two.start()
        steps = [weight(50), pause(), ANALYSIS, weight(60), pause(), weight(70), pause(), weight(100)]
        created(one.url, release_spec(steps, {"min_requests": 30}))
        for proc in (one, two):
            wait_for(proc.url, "paused at 50% on both replicas", at_step(1, "Paused"))

        # 20 requests on each arm through each replica: neither replica alone has the 30 the analysis needs.
        for replica, proc in enumerate((one, two)):
            client = client_for(proc.url)
            for arm, target in (("canary", "new"), ("stable", "old")):
                picks = sessions(arm, 50, 20, f"replica{replica}-{arm}")
                assert [send(client, s) for s in picks] == [target] * 20, "the replicas route by the shared state"
        assert (len(stable.requests), len(canary.requests)) == (40, 40)
        for proc in (one, two):
            merged = wait_for(proc.url, "counting both replicas' traffic",
                              lambda s: s["arms"]["canary"]["requests"] >= 40 and s["arms"]["stable"]["requests"] >= 40)
            assert (merged["arms"]["stable"]["requests"], merged["arms"]["canary"]["requests"]) == (40, 40)

        assert act(two.url, "promote").status_code == 200
        analysed = wait_for(two.url, "past the analysis", at_step(4, "Paused"))
        assert "analysis passed" in reasons(analysed), reasons(analysed)

        one.kill()
        assert act(two.url, "promote").status_code == 200
        assert wait_for(two.url, "moved on with one replica killed", at_step(6, "Paused"))["actual_weight"] == 70

        one.start()
        wait_for(one.url, "seen by the restarted replica", at_step(6, "Paused"))
        two.kill()  # the only replica that was left holds the lease: the restarted one must take it over
        assert act(one.url, "promote").status_code == 200
        done = wait_for(one.url, "promoted by the replica that took over", settled)
        assert (done["phase"], done["actual_weight"]) == ("Healthy", 100), done["message"]
        assert Counter(send(client_for(one.url), f"last-{i}") for i in range(10)) == {"new": 10}
        by_controller = [e["after"]["step"] for e in audit(one.url) if e["actor"] == "controller"]
        assert by_controller == [1, 1, 3, 4, 4, 6, 6, 8, 8]
    finally:
        for proc in (one, two):
            proc.stop()
