"""The approval gate's webhook events (issue 25): one signed event per transition, exactly once.

Only the writer whose ``If-Match`` change won sends, and the claim blob is named by the
request's change number, so a redelivered audit or a timer run twice sends nothing more.
Events: ``approval-at-risk``, ``approval-deadline-soon``, ``approval-revoked``,
``approval-at-risk-cleared`` (the findings went away); the body's fields: docs/policy.md.
"""

from __future__ import annotations

from typing import Any

from .models import ApprovalRequest
from .sender import EventSender

AT_RISK_EVENT = "approval-at-risk"
DEADLINE_SOON_EVENT = "approval-deadline-soon"
REVOKED_EVENT = "approval-revoked"
CLEARED_EVENT = "approval-at-risk-cleared"
_TEXT = {
    AT_RISK_EVENT: "is at risk: it will be revoked at {deadline} unless re-approved or the findings go away.",
    DEADLINE_SOON_EVENT: "will be revoked at {deadline} unless re-approved or the findings go away.",
    REVOKED_EVENT: "was revoked.",
    CLEARED_EVENT: "is no longer at risk: the findings went away.",
}


def send_transition(notifier: EventSender | None, prefix: str, kind: str, request: ApprovalRequest,
                    audit_id: str | None, **extra: Any) -> object:
    """Sends ``kind`` for ``request`` as it is after the change, claimed once per change."""
    if notifier is None or not notifier.urls:
        return None
    risk = request.at_risk
    deadline = risk.deadline if risk is not None else extra.get("deadline")
    event = {
        "type": f"trivy-scanner.{kind}", "event": kind, "reasons": [kind],
        "approval-id": request.id, "audit-id": audit_id, "image": request.image,
        "repository": request.repository, "tag": request.tag, "digest": request.digest,
        "state": request.state, "reason": request.reason, "status": request.security_scan.get("status"),
        "vulnerabilities": request.security_scan.get("vulnerabilities"),
        "deadline": deadline, "findings": risk.findings if risk is not None else extra.get("findings"),
        "rule": risk.rule if risk is not None else extra.get("rule"), "at": request.updated_at,
        "text": f"Trivy: the approval of {request.image or request.repository} "
                + _TEXT[kind].format(deadline=deadline) + (f" {request.reason}" if request.reason else ""),
    } | {key.replace("_", "-"): value for key, value in extra.items() if key not in ("deadline", "findings", "rule")}
    return notifier.send_once(f"{prefix}notifications/{kind}-{request.id}-{request.changes}", event)
