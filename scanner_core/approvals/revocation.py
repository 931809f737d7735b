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
"""

from __future__ import annotations

from datetime import date

from ..models import AuditMeta
from .models import ApprovalRequest


def revocation_reason(request: ApprovalRequest, meta: AuditMeta, today: date) -> str | None:
    """Why ``meta`` revokes ``request`` (a sentence), or ``None`` when it does not."""
    if not request.allowed:
        return None
    reasons: list[str] = []
    if meta.policy is not None and meta.policy.action == "reject":
        reasons.append(f"rule {meta.policy.rule} rejects it: {meta.policy.reason}")
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
    unlisted = (meta.vulnerabilities or {}).get("critical", 0) - len(critical)
    if unaccepted:
        reasons.append(f"critical finding{'s' if len(unaccepted) > 1 else ''} not accepted: "
                       + ", ".join(sorted(set(unaccepted))))
    if unlisted > 0:
        reasons.append(f"{unlisted} more critical finding{'s' if unlisted > 1 else ''} beyond the listed details")
    if expired:
        reasons.append("acceptance expired: " + ", ".join(sorted(set(expired))))
    if meta.scan_status == "failed" and request.decided_status != "failed" and not reasons:
        reasons.append(f"scan status is now failed ({meta.summary or 'no summary'})")
    if not reasons:
        return None
    return f"audit {meta.audit_id}: " + "; ".join(reasons)
