"""Argo Rollouts' successCondition / failureCondition expressions (the ``expr`` language, evaluated over ``result``),
checked without ever calling ``eval``: the text is translated to Python syntax (``&&`` ``||`` ``!`` ``true``
``false``), parsed with ``ast``, and walked by a small interpreter that knows only comparisons, boolean operators,
indexing, numbers, unary minus, ``result`` and the functions ``len``, ``isNaN``, ``isInf``, ``asInt`` and
``asFloat``. Anything else (attributes, calls to other names, ``__import__``, lambdas, strings) is refused.

As in ``utils/evaluate/evaluate.go``, an expression whose value is not a boolean is an error, and so is an index
out of range (the caller turns either into an Error measurement)."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

MAX_EXPRESSION = 1000


class ConditionError(ValueError):
    """The expression cannot be evaluated: a syntax it does not allow, or a runtime error (index, types)."""


def _as_int(value: Any) -> int:
    if isinstance(value, str):
        return int(value, 10)
    return int(value)


FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "len": len,
    "isNaN": lambda value: math.isnan(float(value)),
    "isInf": lambda value: math.isinf(float(value)),
    "asInt": _as_int,
    "asFloat": float,
}
COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_TOKENS = re.compile(r"&&|\|\||!(?!=)")
_WORDS = re.compile(r"\b(true|false)\b")


def _translate(expression: str) -> str:
    """expr's operators and literals in Python's spelling."""
    text = _TOKENS.sub(lambda match: {"&&": " and ", "||": " or ", "!": " not "}[match.group()], expression)
    return _WORDS.sub(lambda match: "True" if match.group() == "true" else "False", text)


def parse(expression: str) -> ast.Expression:
    """The checked syntax tree of ``expression``; ConditionError when it uses anything not allowed."""
    if not isinstance(expression, str) or not expression.strip():
        raise ConditionError("the condition is empty")
    if len(expression) > MAX_EXPRESSION:
        raise ConditionError(f"the condition is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(_translate(expression).strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"syntax error in {expression!r}: {exc.msg}") from exc
    for node in ast.walk(tree):
        _check(node)
    return tree


def _check(node: ast.AST) -> None:
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
               ast.Subscript, ast.Load, ast.Constant, ast.Name, ast.Call, *COMPARISONS)
    if not isinstance(node, allowed):
        raise ConditionError(f"{type(node).__name__} is not allowed in a condition")
    if isinstance(node, ast.Constant) and (isinstance(node.value, str | bytes) or node.value is None
                                           or node.value is Ellipsis):
        raise ConditionError("only numbers and booleans are allowed as constants")
    if isinstance(node, ast.Name) and node.id != "result" and node.id not in FUNCTIONS:
        raise ConditionError(f"unknown name {node.id!r}")
    if isinstance(node, ast.Call):
        only = "only len, isNaN, isInf, asInt and asFloat may be called"
        if not isinstance(node.func, ast.Name):
            raise ConditionError(only)
        if node.func.id not in FUNCTIONS:
            raise ConditionError(f"unknown function {node.func.id!r}: {only}")
        if node.keywords or len(node.args) != 1:
            raise ConditionError(f"{node.func.id} takes exactly one argument")


def evaluate(expression: str, result: Any) -> bool:
    """The boolean value of ``expression`` with ``result`` bound; ConditionError when it cannot be had."""
    tree = parse(expression)
    try:
        value = _value(tree.body, result)
    except ConditionError:
        raise
    except (IndexError, KeyError) as exc:
        raise ConditionError(f"index out of range in {expression!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ConditionError(f"cannot evaluate {expression!r}: {exc}") from exc
    if not isinstance(value, bool):
        raise ConditionError(f"expected bool, but got {type(value).__name__}")
    return value


def _value(node: ast.expr, result: Any) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id != "result":
            raise ConditionError(f"{node.id} is a function")
        return result
    if isinstance(node, ast.BoolOp):
        values = (_boolean(_value(operand, result)) for operand in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        operand = _value(node.operand, result)
        if isinstance(node.op, ast.Not):
            return not _boolean(operand)
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise ConditionError("unary minus needs a number")
        return -operand
    if isinstance(node, ast.Compare):
        left = _value(node.left, result)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _value(right_node, result)
            if not COMPARISONS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        container, index = _value(node.value, result), _value(node.slice, result)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConditionError("an index must be a whole number")
        if not isinstance(container, list | tuple):
            raise ConditionError(f"cannot index a {type(container).__name__}")
        return container[index]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return FUNCTIONS[node.func.id](_value(node.args[0], result))
    raise ConditionError(f"{type(node).__name__} is not allowed in a condition")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConditionError(f"expected bool, but got {type(value).__name__}")
    return value
