"""Grace instead of instant revocation (issue 25): the moves of an at-risk request.

An allowed request (``approved``, ``auto-approved``) whose later audit would revoke it
(``revocation.py``) becomes ``at-risk`` with the deadline the policy's ``revocation:`` section
gives (``policy.RevocationPolicy``); it stays allowed until then. It leaves ``at-risk``

* back to the state it came from, when a later audit no longer finds the causes (the image
  was rebuilt, a suppression or VEX applies, the policy changed): ``clear``;
* to ``approved``, when a reviewer re-approves it, accepting the findings (``decide.py``);
* to ``revoked`` at its deadline (the deadline timer, ``deadlines.py``), when a later audit
  brings a cause whose grace is already over, or when a reviewer revokes it at once.

A reviewer may move the deadline (``extend``, with a reason); ``warn`` records the
``approval-deadline-soon`` notice. Each move is one history entry (and one event, ``events.py``).
Every function here returns the fields to change and the entry: the caller writes both with
``ApprovalStore.replace`` (``If-Match``), the one save path of every change of state.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..policy import Deadline
from ..storage import iso8601
from .models import ApprovalRequest, AtRisk, HistoryEntry
from .revocation import Causes

SCANNER = "scanner"
Move = tuple[dict[str, Any], HistoryEntry]


def unix(iso: str | None) -> int:
    try:
        return int(datetime.strptime(iso or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return 0


def _state_change(request: ApprovalRequest, now: str, **fields: Any) -> dict[str, Any]:
    return {"changes": request.changes + 1, "updated_at": now, "approvals": []} | fields


def enter_at_risk(request: ApprovalRequest, causes: Causes, deadline: Deadline, now: str, audit_id: str) -> Move:
    """``approved``/``auto-approved`` -> ``at-risk`` until ``deadline``."""
    due = iso8601(deadline.at) or ""
    risk = AtRisk(since=now, deadline=due, rule=deadline.condition, findings=list(deadline.findings),
                  reason=causes.reason, audit_id=audit_id, from_state=request.state)
    reason = f"at risk until {due} (revocation condition {deadline.condition}): {causes.reason}"
    entry = HistoryEntry(at=now, by=SCANNER, from_state=request.state, to_state="at-risk", reason=reason,
                         audit_id=audit_id, deadline=due)
    return _state_change(request, now, state="at-risk", at_risk=risk, decided_at=now), entry


def still_at_risk(request: ApprovalRequest, causes: Causes, deadline: Deadline, audit_id: str) -> dict[str, Any]:
    """A later audit that still finds causes: the findings and reason refreshed, the deadline
    never later than it was (no history entry: the state does not change)."""
    risk = request.at_risk
    assert risk is not None
    earlier = deadline.at < unix(risk.deadline)
    return {"at_risk": risk.model_copy(update={
        "findings": list(deadline.findings), "reason": causes.reason, "audit_id": audit_id,
        **({"deadline": iso8601(deadline.at), "rule": deadline.condition, "notice_for": None} if earlier else {}),
    })}


def clear(request: ApprovalRequest, now: str, audit_id: str) -> Move:
    """``at-risk`` -> the allowing state it came from: the causes went away."""
    risk = request.at_risk
    back = risk.from_state if risk is not None else "approved"
    reason = f"audit {audit_id}: the findings that put it at risk are gone"
    entry = HistoryEntry(at=now, by=SCANNER, from_state="at-risk", to_state=back, reason=reason, audit_id=audit_id)
    return _state_change(request, now, state=back, at_risk=None, decided_at=now), entry


def revoke(request: ApprovalRequest, reason: str, now: str, audit_id: str | None, by: str = SCANNER,
           authenticated: bool | None = None) -> Move:
    """Any allowing state -> ``revoked``."""
    entry = HistoryEntry(at=now, by=by, authenticated=authenticated, from_state=request.state, to_state="revoked",
                         reason=reason, audit_id=audit_id)
    return _state_change(request, now, state="revoked", decided_by=by, reason=reason, authenticated=authenticated,
                         decided_at=now, at_risk=None), entry


def deadline_passed(request: ApprovalRequest, now: str) -> Move:
    """``at-risk`` -> ``revoked``: the deadline came, nobody re-approved, the findings stayed."""
    risk = request.at_risk
    assert risk is not None
    reason = f"the deadline {risk.deadline} passed (revocation condition {risk.rule}): {risk.reason}"
    return revoke(request, reason, now, risk.audit_id)


def warn(request: ApprovalRequest, now: str) -> Move:
    """``at-risk`` -> ``at-risk``: the ``approval-deadline-soon`` notice, once per deadline."""
    risk = request.at_risk
    assert risk is not None
    entry = HistoryEntry(at=now, by=SCANNER, from_state="at-risk", to_state="at-risk", audit_id=risk.audit_id,
                         reason=f"deadline soon: revoked at {risk.deadline} unless re-approved", deadline=risk.deadline)
    update = {"changes": request.changes + 1, "updated_at": now,
              "at_risk": risk.model_copy(update={"notice_for": risk.deadline})}
    return update, entry


def extend(request: ApprovalRequest, deadline: str, by: str, authenticated: bool, reason: str, now: str) -> Move:
    """``at-risk`` -> ``at-risk`` with a reviewer's new deadline (the notice is sent again for it)."""
    risk = request.at_risk
    assert risk is not None
    entry = HistoryEntry(at=now, by=by, authenticated=authenticated, from_state="at-risk", to_state="at-risk",
                         audit_id=risk.audit_id, deadline=deadline,
                         reason=f"deadline moved from {risk.deadline} to {deadline}: {reason}")
    update = {"changes": request.changes + 1, "updated_at": now,
              "at_risk": risk.model_copy(update={"deadline": deadline, "notice_for": None})}
    return update, entry
