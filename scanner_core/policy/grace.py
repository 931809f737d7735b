"""The policy file's ``revocation:`` section (issue 25): how long an approved image may keep
running after a later audit would revoke it.

Each thing that would revoke an approval (a ``Threat``: an unaccepted critical finding, an
expired acceptance, the policy's ``reject``, a newly failed status) is matched against the
``conditions`` in order; the first that matches gives its grace period (``grace: 7d``, ``12h``,
``0`` for at once, or ``kev-due-date``: the finding's CISA KEV ``dueDate``, end of that day UTC),
anything unmatched gets the section's ``grace``. The approval's deadline is the earliest of
them. Without the section the grace is ``0``: revoked at once, as before issue 25.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .compare import Compare

KEV_DUE_DATE = "kev-due-date"
DEFAULT_CONDITION = "default"
_DURATION = re.compile(r"^\s*(\d{1,5})\s*([dhm]?)\s*$")
_UNIT = {"d": 86_400, "h": 3_600, "m": 60, "": 86_400}
DURATION_HELP = "a duration such as 7d, 12h or 30m (a bare number means days), or 0 for at once"
SEVERITIES = ("critical", "high", "medium", "low", "unknown")


@dataclass(frozen=True)
class GracePeriod:
    """``seconds`` after the audit that started it, or until the finding's KEV due date."""

    seconds: int = 0
    kev_due_date: bool = False

    def __str__(self) -> str:
        if self.kev_due_date:
            return KEV_DUE_DATE
        for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
            if self.seconds and self.seconds % size == 0:
                return f"{self.seconds // size}{unit}"
        return "0"


def _duration(raw: object, *, due_date: bool) -> object:
    if isinstance(raw, GracePeriod):
        return raw
    if due_date and raw == KEV_DUE_DATE:
        return GracePeriod(kev_due_date=True)
    text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if isinstance(text, str) and (match := _DURATION.match(text)):
        return GracePeriod(seconds=int(match.group(1)) * _UNIT[match.group(2)])
    allowed = f"{DURATION_HELP}, or {KEV_DUE_DATE}" if due_date else DURATION_HELP
    raise ValueError(f"{raw!r} is not {allowed}")


Grace = Annotated[GracePeriod, BeforeValidator(lambda raw: _duration(raw, due_date=True))]
Duration = Annotated[GracePeriod, BeforeValidator(lambda raw: _duration(raw, due_date=False))]


@dataclass(frozen=True)
class Threat:
    """One thing a later audit found that would revoke an approval (``approvals/revocation.py``)."""

    finding: str | None = None  # the CVE; None for the policy's reject or a failed status
    severity: str | None = None  # lower case
    fixable: bool = False
    kev_due: date | None = None  # CISA KEV dueDate (the finding is in the catalogue when set)
    kev: bool = False
    epss: float | None = None
    rule: str | None = None  # the policy rule whose reject this is


class GraceCondition(BaseModel):
    """One condition: it matches a threat when every field it names holds."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    severity: list[str] = Field(default_factory=list)
    fixable: bool | None = None
    kev: bool | None = None
    epss: Compare | None = None
    rule: list[str] = Field(default_factory=list)
    grace: Grace

    @field_validator("severity", "rule", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("severity", mode="after")
    @classmethod
    def _severities(cls, value: list[str]) -> list[str]:
        wrong = [s for s in value if s.lower() not in SEVERITIES]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} is not a severity: one of {', '.join(SEVERITIES)}")
        return [s.lower() for s in value]

    def matches(self, threat: Threat) -> bool:
        if self.grace.kev_due_date and threat.kev_due is None:
            return False  # no due date to count to: the next condition decides
        checks = (
            not self.severity or threat.severity in self.severity,
            self.fixable is None or threat.fixable == self.fixable,
            self.kev is None or threat.kev == self.kev,
            self.epss is None or (threat.epss is not None and self.epss.holds(threat.epss)),
            not self.rule or threat.rule in self.rule,
        )
        return all(checks)


@dataclass(frozen=True)
class Deadline:
    """When an at-risk approval is revoked (Unix seconds), by which condition, for which threats."""

    at: int
    condition: str
    findings: tuple[str, ...]


class RevocationPolicy(BaseModel):
    """``revocation:``: ``grace`` for anything no condition matches, ``notice`` before a deadline
    (the ``approval-deadline-soon`` event), ``conditions`` in order, first match wins."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    grace: Grace = GracePeriod()
    notice: Duration = GracePeriod(seconds=2 * 86_400)
    conditions: list[GraceCondition] = Field(default_factory=list)

    @field_validator("conditions", mode="after")
    @classmethod
    def _unique_ids(cls, conditions: list[GraceCondition]) -> list[GraceCondition]:
        ids = [c.id for c in conditions]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"condition id {twice[0]!r} is used twice: each condition needs its own id")
        return conditions

    def deadline(self, threats: Sequence[Threat], started: int) -> Deadline:
        """The earliest deadline the threats get, counted from ``started`` (Unix seconds)."""
        best: tuple[int, str] | None = None
        for threat in threats:
            condition = next((c for c in self.conditions if c.matches(threat)), None)
            grace = condition.grace if condition is not None else self.grace
            at = _due(threat.kev_due) if grace.kev_due_date and threat.kev_due else started + grace.seconds
            if best is None or at < best[0]:
                best = (at, condition.id if condition is not None else DEFAULT_CONDITION)
        at, condition_id = best if best is not None else (started + self.grace.seconds, DEFAULT_CONDITION)
        findings = tuple(sorted({t.finding for t in threats if t.finding}))
        return Deadline(at, condition_id, findings)


def _due(day: date) -> int:
    """The end of a KEV due date (UTC): the next day's first second."""
    return int(datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc).timestamp())
