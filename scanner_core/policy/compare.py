"""Comparisons in the policy file: ``"> 0"``, ``">= 0.5"``, a bare number meaning ``>=``."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(\d+(?:\.\d+)?)\s*$")
COMPARISON_HELP = "a comparison such as \"> 0\", \">= 0.5\", \"== 0\" (operators > >= < <= == !=), or a number meaning >="


class Comparison(BaseModel):
    """``"> 0"``: an operator and a number; a bare number means ``>=``."""

    model_config = ConfigDict(frozen=True)

    op: str
    value: float

    def holds(self, number: float) -> bool:
        return _OPERATORS[self.op](number, self.value)

    def __str__(self) -> str:
        shown = int(self.value) if self.value == int(self.value) else self.value
        return f"{self.op} {shown}"


def _comparison(raw: object) -> object:
    if isinstance(raw, Comparison):
        return raw
    if isinstance(raw, bool):
        raise ValueError(COMPARISON_HELP)
    if isinstance(raw, int | float):
        return Comparison(op=">=", value=float(raw))
    if isinstance(raw, str) and (match := _COMPARISON.match(raw)):
        return Comparison(op=match.group(1) or ">=", value=float(match.group(2)))
    raise ValueError(f"{raw!r} is not {COMPARISON_HELP}")


Compare = Annotated[Comparison, BeforeValidator(_comparison)]


def _found(raw: object) -> object:
    """``secrets: true`` means ``> 0``, ``false`` means ``== 0``; else a comparison."""
    if isinstance(raw, bool):
        return Comparison(op=">" if raw else "==", value=0.0)
    return _comparison(raw)


FoundCompare = Annotated[Comparison, BeforeValidator(_found)]
