"""The policy file's shape (``POLICY_PATH``): ordered rules, first match wins.

Every model forbids unknown keys, so a misspelt condition is an error at
start-up, never a rule that silently matches everything.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ..models import AcceptedRisk
from .compare import Compare, Comparison, FoundCompare
from .grace import RevocationPolicy
from .owners import ApproverEntry

Action = Literal["approve", "reject", "review"]
SEVERITY_KEYS = ("critical", "high", "medium", "low", "unknown", "total")
# trivy's licence categories (pkg/licensing), in its order.
LICENSE_CATEGORIES = ("forbidden", "restricted", "reciprocal", "notice", "permissive", "unencumbered", "unknown")


def _entry(raw: object) -> object:
    """A CVE list entry: ``"CVE-..."`` or ``{id, until, justification}``."""
    return {"id": raw} if isinstance(raw, str) else raw


class PolicyCve(AcceptedRisk):
    """An allow- or deny-list entry of the policy file: an ``AcceptedRisk`` with no unknown keys."""

    model_config = ConfigDict(extra="forbid")


CveEntry = Annotated[PolicyCve, BeforeValidator(_entry)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SeverityCounts(_Strict):
    """Counts by severity (after suppressions and accepted CVEs), each a comparison."""

    critical: Compare | None = None
    high: Compare | None = None
    medium: Compare | None = None
    low: Compare | None = None
    unknown: Compare | None = None
    total: Compare | None = None


class LicenseCounts(_Strict):
    """Licence findings by trivy's category, each a comparison."""

    forbidden: Compare | None = None
    restricted: Compare | None = None
    reciprocal: Compare | None = None
    notice: Compare | None = None
    permissive: Compare | None = None
    unencumbered: Compare | None = None
    unknown: Compare | None = None


class Rule(_Strict):
    """One rule: it matches when every condition it names holds (none: always)."""

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    action: Action
    description: str | None = None
    severity: SeverityCounts | None = None
    fixable_only: bool = Field(False, alias="fixable-only")
    cves: list[CveEntry] = Field(default_factory=list)
    packages: list[str] = Field(default_factory=list)
    package_types: list[str] = Field(default_factory=list, alias="package-types")
    licenses: LicenseCounts | None = None
    secrets: FoundCompare | None = None
    eosl: bool | None = None
    image_age_days: Compare | None = Field(None, alias="image-age-days")
    repository: list[str] = Field(default_factory=list)
    registry: list[str] = Field(default_factory=list)
    platform: list[str] = Field(default_factory=list)
    kev: bool | None = None
    kev_ransomware: bool | None = Field(None, alias="kev-ransomware")
    epss: Compare | None = None
    # Reviewers whose approvals a request this rule decided needs (issue 25: four eyes for KEV).
    approvals: int = Field(1, ge=1, le=5)

    @field_validator("repository", "registry", "platform", "packages", "package_types", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class PolicyFile(_Strict):
    """The whole file: ``rules`` in order, the ``default`` action, the global allow-list."""

    default: Action = "review"
    allow: list[CveEntry] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    revocation: RevocationPolicy = Field(default_factory=RevocationPolicy)  # grace periods (grace.py)
    approvers: list[ApproverEntry] = Field(default_factory=list)  # who may decide which repositories (owners.py)

    @field_validator("rules", mode="after")
    @classmethod
    def _unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice: each rule needs its own id")
            seen.add(rule.id)
        return rules
