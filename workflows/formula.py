"""Safe evaluation of the formulas of derived values (MOI, fold expansion, dose).

A formula is a Python expression restricted to numbers, ``+ - * / **``, unary minus,
parentheses, names (``viable_cells``, ``activation.cells_seeded``) and a few functions.
``check`` runs once when a definition loads and proves the formula well formed and typed;
``evaluate`` runs for each entry and gives None when an input is missing or a division
by zero or an overflow makes the value undefined, never an exception.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeGuard, cast

NUMBER = "number"
DATETIME = "datetime"


class FormulaError(ValueError):
    """The formula is not allowed; the message names the offending name or construct."""


@dataclass(frozen=True)
class _Function:
    call: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: any number
    argument_kind: str


def _hours_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600


def _days_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 86400


FUNCTIONS: dict[str, _Function] = {
    "ceil": _Function(math.ceil, 1, 1, NUMBER),
    "floor": _Function(math.floor, 1, 1, NUMBER),
    "abs": _Function(abs, 1, 1, NUMBER),
    "round": _Function(round, 1, 2, NUMBER),
    "min": _Function(min, 2, None, NUMBER),
    "max": _Function(max, 2, None, NUMBER),
    "hours_between": _Function(_hours_between, 2, 2, DATETIME),
    "days_between": _Function(_days_between, 2, 2, DATETIME),
}

_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    # Floats only: an integer power such as 10 ** 10 ** 10 would run for ever.
    ast.Pow: lambda a, b: float(a) ** float(b),
}

_ALLOWED = "numbers, names, + - * / **, parentheses and the functions " + ", ".join(FUNCTIONS)


class _Undefined(Exception):
    """An input is missing or the arithmetic has no finite result."""


@lru_cache(maxsize=256)
def _parse(formula: str) -> ast.expr:
    try:
        return ast.parse(formula.strip(), mode="eval").body
    except SyntaxError as exc:
        raise FormulaError(f"formula {formula!r} is not a valid expression ({exc.msg})") from None


def _dotted_name(node: ast.expr) -> str | None:
    """``viable_cells`` or ``activation.cells_seeded``; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def names(formula: str) -> tuple[str, ...]:
    """The names ``formula`` uses, in order of appearance (FormulaError if it does not parse)."""
    found: list[str] = []

    def visit(node: ast.expr) -> None:
        name = _dotted_name(node)
        if name is not None:
            if name not in found:
                found.append(name)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr) and not (isinstance(node, ast.Call) and child is node.func):
                visit(child)

    visit(_parse(formula))
    return tuple(found)


def check(formula: str, kinds: Mapping[str, str]) -> None:
    """Raise FormulaError unless ``formula`` is allowed and gives a number.

    ``kinds`` maps each name the formula may use to NUMBER or DATETIME; any other kind is
    a description of why that name cannot be used (``"a text field"``).
    """
    if _kind(_parse(formula), kinds) != NUMBER:
        raise FormulaError(f"formula {formula!r} gives a date-time, not a number")


def _kind(node: ast.expr, kinds: Mapping[str, str]) -> str:
    name = _dotted_name(node)
    if name is not None:
        if name not in kinds:
            raise FormulaError(f"unknown name {name!r}")
        kind = kinds[name]
        if kind not in (NUMBER, DATETIME):
            raise FormulaError(f"{name!r} is {kind} and cannot be used in a formula")
        return kind
    if isinstance(node, ast.Constant) and _is_number(node.value):
        if not math.isfinite(node.value):
            raise FormulaError("a number in the formula is too large")
        return NUMBER
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        _expect_number(node.left, kinds)
        _expect_number(node.right, kinds)
        return NUMBER
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        _expect_number(node.operand, kinds)
        return NUMBER
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        _check_call(node, node.func.id, kinds)
        return NUMBER
    raise FormulaError(f"{ast.unparse(node)!r} is not allowed in a formula (only {_ALLOWED})")


def _expect_number(node: ast.expr, kinds: Mapping[str, str]) -> None:
    if _kind(node, kinds) != NUMBER:
        raise FormulaError(
            f"{ast.unparse(node)!r} is a date-time: use hours_between() or days_between() to get a number"
        )


def _check_call(node: ast.Call, name: str, kinds: Mapping[str, str]) -> None:
    function = FUNCTIONS[name]
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise FormulaError(f"{name}() takes plain arguments only")
    count = len(node.args)
    if count < function.min_args or (function.max_args is not None and count > function.max_args):
        if function.max_args is None:
            expected = f"{function.min_args} or more arguments"
        elif function.min_args == function.max_args:
            expected = f"{function.min_args} argument{'' if function.min_args == 1 else 's'}"
        else:
            expected = f"{function.min_args} to {function.max_args} arguments"
        raise FormulaError(f"{name}() takes {expected}, not {count}")
    if name == "round" and count == 2:
        digits = node.args[1]
        if not (isinstance(digits, ast.Constant) and type(digits.value) is int):
            raise FormulaError("round(): the number of digits must be a whole number such as 2")
        count = 1
    for arg in node.args[:count]:
        if _kind(arg, kinds) != function.argument_kind:
            wanted = "date-times" if function.argument_kind == DATETIME else "numbers"
            raise FormulaError(f"{name}() takes {wanted}, but {ast.unparse(arg)!r} is not one")


def evaluate(formula: str, values: Mapping[str, Any]) -> float | int | None:
    """The value of a checked formula, or None when it cannot be computed.

    ``values`` maps names to numbers or aware date-times; a name that is absent or None
    makes the result None, as do a division by zero and a result that is not finite.
    """
    try:
        return cast("float | int", _number(_evaluate(_parse(formula), values)))  # check(): a number
    except (_Undefined, ArithmeticError):
        return None


def _number(value: Any) -> Any:
    """``value`` itself when it is a finite real number (or a date-time), else _Undefined.

    A fractional power of a negative number gives a complex number and an overflow in a
    product gives inf: neither is a value a batch record can show.
    """
    if isinstance(value, datetime) or (_is_number(value) and math.isfinite(value)):
        return value
    raise _Undefined(repr(value))


def _evaluate(node: ast.expr, values: Mapping[str, Any]) -> Any:
    name = _dotted_name(node)
    if name is not None:
        value = values.get(name)
        if value is None:
            raise _Undefined(name)
        return _number(value)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, values), _evaluate(node.right, values)
        return _number(_OPERATORS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, values)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # guaranteed by check()
    return _number(FUNCTIONS[node.func.id].call(*(_evaluate(arg, values) for arg in node.args)))
