"""When a later audit breaks what an approval relied on.

One function, so that the policy's own evaluation (with the approval's accepted
list) can be added in one place: an approved or auto-approved request is revoked
when a later succeeded audit of its digest

* has a CRITICAL finding the approval did not accept, or accepted with an
  ``until`` now past (findings beyond the 100 listed in ``details`` count as
  not accepted);
* has status ``failed`` while the audit the decision was made on had not (a
  reviewer who approved a ``failed`` audit, with a reason, accepted that status);
* or its policy decision (``meta.policy``) is ``reject``.

Whether that revokes at once or starts a grace period is the policy's ``revocation:``
section (``grace.py``); this module only says what was found.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import date

from ..models import AuditMeta, Finding
from ..policy import Threat
from .models import ApprovalRequest


@dataclass(frozen=True)
class Causes:
    """What in a later audit would revoke an approval: the sentence and each threat (``policy.Threat``),
    which the policy's ``revocation:`` section turns into a deadline (issue 25)."""

    reason: str
    threats: list[Threat]


def revocation_reason(request: ApprovalRequest, meta: AuditMeta, today: date) -> str | None:
    """Why ``meta`` revokes ``request`` (a sentence), or ``None`` when it does not."""
    causes = revocation_causes(request, meta, today)
    return causes.reason if causes is not None else None


def revocation_causes(request: ApprovalRequest, meta: AuditMeta, today: date) -> Causes | None:
    """What in ``meta`` would revoke ``request``, or ``None`` when nothing would."""
    if not request.allowed:
        return None
    reasons: list[str] = []
    threats: list[Threat] = []
    if meta.policy is not None and meta.policy.action == "reject":
        reasons.append(f"rule {meta.policy.rule} rejects it: {meta.policy.reason}")
        threats.append(Threat(rule=meta.policy.rule))
    accepted = {risk.id: risk for risk in request.accepted}
    critical = [f for f in meta.details or [] if f.severity.upper() == "CRITICAL"]
    unaccepted: list[str] = []
    expired: list[str] = []
    for finding in critical:
        risk = accepted.get(finding.vulnerability_id)
        if risk is None:
            unaccepted.append(finding.vulnerability_id)
        elif risk.until is not None and risk.until < today:
            expired.append(f"{finding.vulnerability_id} (accepted until {risk.until.isoformat()})")
        else:
            continue
        threats.append(_threat(finding))
    unlisted = (meta.vulnerabilities or {}).get("critical", 0) - len(critical)
    if unaccepted:
        reasons.append(f"critical finding{'s' if len(unaccepted) > 1 else ''} not accepted: "
                       + ", ".join(sorted(set(unaccepted))))
    if unlisted > 0:
        reasons.append(f"{unlisted} more critical finding{'s' if unlisted > 1 else ''} beyond the listed details")
        threats.append(Threat(severity="critical"))
    if expired:
        reasons.append("acceptance expired: " + ", ".join(sorted(set(expired))))
    if meta.scan_status == "failed" and request.decided_status != "failed" and not reasons:
        reasons.append(f"scan status is now failed ({meta.summary or 'no summary'})")
        threats.append(Threat())
    if not reasons:
        return None
    return Causes(f"audit {meta.audit_id}: " + "; ".join(reasons), threats)


def _threat(finding: Finding) -> Threat:
    due = None
    if finding.kev is not None and finding.kev.due_date:
        with contextlib.suppress(ValueError):
            due = date.fromisoformat(finding.kev.due_date[:10])
    return Threat(finding=finding.vulnerability_id, severity=finding.severity.lower(),
                  fixable=bool(finding.fixed_version), kev_due=due, kev=finding.kev is not None, epss=finding.epss)
