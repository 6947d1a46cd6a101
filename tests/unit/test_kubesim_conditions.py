"""Argo's successCondition / failureCondition expressions, evaluated without eval: what the seed and the docs write,
expr's operators, and everything that is not an allowed expression refused with a clear error."""

from __future__ import annotations

import math

import pytest

from services.kubesim.conditions import ConditionError, evaluate
from services.kubesim.controllers.analysis import duration_seconds, evaluate_result


@pytest.mark.parametrize(("expression", "result", "expected"), [
    ("result[0] < 0.01", [0.005], True),
    ("result[0] < 0.01", [0.2], False),
    ("result[0] > 0.85 && result[0] < 2", [1.0], True),
    ("result[0] > 0.85 && result[0] < 2", [2.5], False),
    ("result[0] > 0.85 and result[0] < 2", [0.9], True),
    ("result[0] < 10 || result[0] > 50", [60], True),
    ("!(result[0] < 10)", [5], False),
    ("not (result[0] < 10)", [15], True),
    ("len(result) > 0", [], False),
    ("len(result) > 0", [3.0], True),
    ("result == 1", 1, True),
    ("result == 1", [1.0], False),
    ("result[0] != 3", [3], False),
    ("result[-1] >= -1.5", [0, -1.5], True),
    ("isNaN(result[0])", [math.nan], True),
    ("isInf(result[0]) || false", [math.inf], True),
    ("asInt(result[0]) == 3", [3.7], True),
    ("true", [], True),
])
def test_conditions_evaluate_as_argo_does(expression: str, result: object, expected: bool) -> None:
    assert evaluate(expression, result) is expected


@pytest.mark.parametrize(("expression", "message"), [
    ("__import__('os').system('true')", "may be called"),
    ("__import__('os')", "unknown function '__import__'"),
    ("__import__ == 1", "unknown name '__import__'"),
    ("result.__class__", "Attribute is not allowed"),
    ("open(result)", "unknown function 'open'"),
    ("(lambda: True)()", "may be called"),
    ("[x for x in result]", "ListComp is not allowed"),
    ("result[0] + 1 > 2", "BinOp is not allowed"),
    ("'a' == 'a'", "only numbers and booleans"),
    ("len(result, result)", "exactly one argument"),
    ("result[0] <", "syntax error"),
    ("", "empty"),
    ("result[0]", "expected bool, but got float"),
    ("result[3] > 1", "index out of range"),
    ("result < 1", "cannot evaluate"),
    ("result[0] && true", "expected bool"),
])
def test_anything_else_is_refused_with_a_clear_error(expression: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        evaluate(expression, [0.5])


@pytest.mark.parametrize(("success", "failure", "value", "phase"), [
    ("result[0] < 10", "", [5], "Successful"),
    ("result[0] < 10", "", [20], "Failed"),
    ("", "result[0] > 50", [20], "Successful"),
    ("", "result[0] > 50", [60], "Failed"),
    ("result[0] < 10", "result[0] > 50", [20], "Inconclusive"),
    ("result[0] < 10", "result[0] > 50", [60], "Failed"),
    ("", "", [1000], "Successful"),  # the code wins over the docs: neither condition set is Successful
    ("result[5] < 10", "", [1], "Error"),
])
def test_a_measurement_is_judged_per_evaluate_result(success: str, failure: str, value: list[float],
                                                     phase: str) -> None:
    metric = {"name": "m", "successCondition": success, "failureCondition": failure}
    assert evaluate_result(metric, value)[0] == phase


@pytest.mark.parametrize(("value", "seconds"), [(10, 10.0), ("10", 10.0), ("10s", 10.0), ("5m", 300.0), ("1h", 3600.0),
                                                ("1m30s", 90.0), ("500ms", 0.5)])
def test_durations_read_as_argo_writes_them(value: object, seconds: float) -> None:
    assert duration_seconds(value) == seconds


@pytest.mark.parametrize("value", ["", "ten", "5 m", "1d", "m5", True])
def test_a_malformed_duration_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds(value)
