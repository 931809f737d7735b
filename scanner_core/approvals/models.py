"""The approval request document, its history entries and its states.

One request per repository and digest (a re-pushed tag is a new digest, so a
new request; the tag is a label). Its id is derived from both (``approval_id``),
so every writer that meets the same image names the same request.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import AcceptedRisk, AuditMeta
from ..storage import iso8601

State = Literal["pending", "approved", "rejected", "auto-approved", "auto-rejected", "at-risk", "revoked"]
APPROVAL_STATES: tuple[str, ...] = (
    "pending", "approved", "rejected", "auto-approved", "auto-rejected", "at-risk", "revoked")
# ``at-risk`` (issue 25): a later audit would revoke it; it still allows until its deadline.
ALLOWING_STATES = frozenset({"approved", "auto-approved", "at-risk"})
MAX_DETAILS = 100
SEVERITY_COUNTS = ("critical", "high", "medium", "low", "unknown", "total")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Document(BaseModel):
    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, frozen=True, extra="ignore")

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def approval_id(repository: str, digest: str) -> str:
    """``ap-`` and 24 hex digits of SHA-256 over ``repository@digest``: the same
    image always names the same request (concurrent first audits create one)."""
    return "ap-" + hashlib.sha256(f"{repository}@{digest}".encode("utf-8")).hexdigest()[:24]


def security_scan_of(meta: AuditMeta) -> dict[str, Any]:
    """The seed's ``security_scan`` block (snake_case, as the seed writes it) from an audit's meta."""
    counts = meta.vulnerabilities or {}
    return {
        "scanned_at": iso8601(meta.timestamp),
        "status": meta.scan_status,
        "vulnerabilities": {name: int(counts.get(name, 0)) for name in SEVERITY_COUNTS},
        "summary": meta.summary,
        "details": [
            finding.model_dump(by_alias=True, exclude_none=True, exclude={"target"})
            for finding in (meta.details or [])[:MAX_DETAILS]
        ],
    }


class HistoryEntry(_Document):
    """One change of a request: who, when, from -> to, why, on which audit."""

    at: str  # ISO 8601 UTC
    by: str  # a reviewer's name, or "rule <id>", "TRIVY_AUTO_REJECT_CRITICAL", "scanner"
    authenticated: bool | None = None  # for reviewers: the name came from App Service authentication
    from_state: State | None = Field(None, alias="from")
    to_state: State = Field(alias="to")
    reason: str | None = None
    audit_id: str | None = None
    accept: list[AcceptedRisk] | None = None
    deadline: str | None = None  # an at-risk request's deadline after this change (issue 25)
    approval: str | None = None  # "1 of 2": one reviewer's approval of a request that needs more


class AtRisk(_Document):
    """Why an allowed request is at risk and until when (issue 25; ``approvals/grace.py``)."""

    since: str  # ISO 8601 UTC: the audit's follow-up that found it
    deadline: str  # ISO 8601 UTC: revoked then unless re-approved or the findings go away
    rule: str  # the revocation condition that set the deadline, or "default"
    findings: list[str] = Field(default_factory=list)  # the causing findings (CVE ids)
    reason: str  # the sentence a revocation would have had
    audit_id: str
    from_state: State  # the allowing state it returns to when the findings go away
    notice_for: str | None = None  # the deadline an approval-deadline-soon event was sent for


class PartialApproval(_Document):
    """One reviewer's approval of a request whose rule needs more than one (issue 25)."""

    by: str
    at: str
    reason: str | None = None

class ApprovalRequest(_Document):
    """``trivy-{id8}/approvals/requests/{id}.json``; its ETag is its version."""

    id: str
    repository: str
    digest: str
    tag: str | None = None
    image: str | None = None
    # A platform of an image index: ``digest`` is that platform's manifest, ``index_digest`` the
    # index it was scanned through (issue 23: an approval is per platform manifest).
    platform: str | None = None
    index_digest: str | None = None
    state: State
    decided_by: str
    reason: str | None = None
    authenticated: bool | None = None
    audit_id: str  # the first audit, which created the request
    latest_audit_id: str
    # The scan status of the audit a decision was made on (a reviewer who approved a
    # ``failed`` audit with a reason accepted that status; revocation.py).
    decided_status: str | None = None
    accepted: list[AcceptedRisk] = Field(default_factory=list)
    created_at: str
    updated_at: str  # any change, a refreshed security_scan included
    decided_at: str | None = None  # the last change of state
    changes: int = 1  # entries in the history
    security_scan: dict[str, Any]
    at_risk: AtRisk | None = None  # state at-risk only
    # Issue 25: who asked for scans of it (POST /api/scans with App Service authentication), the
    # policy rule of its latest audit (it says how many approvals it needs), approvals so far.
    requesters: list[str] = Field(default_factory=list)
    policy_rule: str | None = None
    approvals: list[PartialApproval] = Field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.state in ALLOWING_STATES
