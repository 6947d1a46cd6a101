"""How the worker reads the gateway's answers: results, back-pressure waited out, failed attempts retried."""

from __future__ import annotations

import json

import pytest

from services.worker.outcome import from_answer, no_answer, poisoned


def answer(status: int, body: object, **headers: str):  # type: ignore[no-untyped-def]
    return from_answer("req-1", status, headers, json.dumps(body).encode())


def error(code: str | None) -> dict:
    return {"error": {"message": "m", "type": "t", "param": None, "code": code}}


def test_a_2xx_is_a_result_in_openais_output_shape() -> None:
    outcome = answer(200, {"id": "chatcmpl-1", "choices": []}, **{"x-request-id": "up-1"})
    assert (outcome.kind, outcome.ok) == ("done", True)
    line = outcome.line
    assert line is not None and line["custom_id"] == "req-1" and line["error"] is None
    assert line["id"].startswith("batch_req_")
    assert line["response"] == {"status_code": 200, "request_id": "up-1", "body": {"id": "chatcmpl-1", "choices": []}}


@pytest.mark.parametrize(("status", "code", "retry_after", "reason", "wait_s"), [
    (503, "yielding_to_interactive", "2", "yielding", 2.0),
    (503, "overloaded", "1", "yielding", 1.0),
    (429, "rate_limit_exceeded", "7", "rate_limited", 7.0),
    (429, "rate_limit_exceeded", "999", "rate_limited", 60.0),  # capped
    (429, None, "soon", "rate_limited", 5.0),  # unreadable: the default
])
def test_back_pressure_is_waited_out_not_counted(status: int, code: str | None, retry_after: str, reason: str,
                                                 wait_s: float) -> None:
    outcome = answer(status, error(code), **{"retry-after": retry_after})
    assert (outcome.kind, outcome.reason, outcome.wait_s) == ("wait", reason, wait_s)


@pytest.mark.parametrize(("status", "code", "reason"), [
    (500, None, "server_error"), (502, "upstream_error", "server_error"),
    (503, "no_available_target", "server_error"), (504, None, "server_error"), (408, None, "timeout")])
def test_server_errors_and_timeouts_are_failed_attempts(status: int, code: str | None, reason: str) -> None:
    outcome = answer(status, error(code))
    assert (outcome.kind, outcome.reason) == ("retry", reason)
    assert outcome.line is not None and outcome.line["response"]["status_code"] == status


@pytest.mark.parametrize(("status", "code"), [(400, None), (401, "key_disabled"), (403, "route_not_allowed"),
                                              (404, None), (429, "insufficient_quota")])
def test_other_4xx_and_a_spent_budget_are_final_errors(status: int, code: str | None) -> None:
    outcome = answer(status, error(code))
    assert (outcome.kind, outcome.ok, outcome.reason) == ("done", False, "failed")
    assert outcome.line is not None
    assert outcome.line["response"] == {"status_code": status, "request_id": outcome.line["response"]["request_id"],
                                        "body": error(code)}


def test_a_request_without_an_answer_gets_an_error_object() -> None:
    outcome = no_answer("req-1", "timeout", "no answer in time")
    assert outcome.kind == "retry"
    assert outcome.line is not None and outcome.line["response"] is None
    assert outcome.line["error"] == {"code": "request_timeout", "message": "no answer in time"}


def test_a_poisoned_request_keeps_its_last_answer_or_says_why_there_was_none() -> None:
    last = answer(502, error("upstream_error"))
    assert poisoned("req-1", 3, last) == last.line
    line = poisoned("req-1", 3, None)
    assert line["response"] is None and line["error"]["code"] == "max_attempts_exceeded"
    assert "3 attempts" in line["error"]["message"]


def test_a_body_that_is_not_json_is_kept_as_text() -> None:
    outcome = from_answer("req-1", 502, {}, b"<html>bad gateway</html>")
    assert outcome.line is not None and outcome.line["response"]["body"] == "<html>bad gateway</html>"
