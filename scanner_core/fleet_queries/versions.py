"""Version ranges for the package query: ``<2.17.0``, ``>=1.0,<2``, ``==1.2.13-r3``.

The syntax: clauses separated by commas, each an operator (``<``, ``<=``, ``>``, ``>=``,
``==``, ``!=``) and a version; a version matches when every clause holds. Versions are
compared with ``packaging.version.Version`` (PEP 440, which also reads Maven-style
``2.14.1``, semver without build metadata and Alpine's ``1.2.13-r3`` as a post release)
when both sides parse; otherwise in natural order: runs of digits as numbers, the rest as
text, so ``2.36-9+deb12u4`` < ``2.36-10``. Epochs (``1:2.3``) compare as numbers first.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

MAX_RANGE_CHARS = 200
_CLAUSE = re.compile(r"\s*(<=|>=|==|!=|<|>)\s*([0-9A-Za-z][0-9A-Za-z.+~:_-]{0,99})\s*")
_OPERATORS: dict[str, Callable[[object, object], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
RANGE_SYNTAX = "comma-separated clauses of <, <=, >, >=, == or != and a version, e.g. '<2.17.0' or '>=1.0,<2'"


@dataclass(frozen=True)
class VersionRange:
    clauses: tuple[tuple[str, str], ...]

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, str) or not version:
            return False
        return all(_compare(version, wanted, _OPERATORS[op]) for op, wanted in self.clauses)

    def __str__(self) -> str:
        return ",".join(f"{op}{version}" for op, version in self.clauses)


def parse_version_range(text: str) -> VersionRange:
    """The range ``text`` names; ``ValueError`` saying the syntax when it is not one."""
    if not text or len(text) > MAX_RANGE_CHARS:
        raise ValueError(f"must be 1 to {MAX_RANGE_CHARS} characters: {RANGE_SYNTAX}")
    clauses = []
    for part in text.split(","):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a clause: {RANGE_SYNTAX}")
        clauses.append((match.group(1), match.group(2)))
    return VersionRange(tuple(clauses))


def _compare(installed: str, wanted: str, test: Callable[[object, object], bool]) -> bool:
    try:
        return test(Version(installed), Version(wanted))
    except InvalidVersion:
        return test(natural_key(installed), natural_key(wanted))


def natural_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Digits as numbers, other runs as text; a number sorts after text at the same place."""
    return tuple((1, int(part), "") if part.isdigit() else (0, 0, part)
                 for part in re.findall(r"\d+|[A-Za-z]+", version))
