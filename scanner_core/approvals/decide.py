"""A reviewer's decision on one request: the version they saw, the move, the
reason (required to approve anything whose scan status is not ``passed``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import RequestError
from ..models import AcceptedRisk
from .models import ApprovalRequest, HistoryEntry
from .principal import Reviewer
from .store import ApprovalStore, StaleVersion
from .transitions import Action, check_transition


@dataclass(frozen=True)
class Decision:
    action: Action
    reviewer: Reviewer
    reason: str | None
    accept: list[AcceptedRisk] = field(default_factory=list)


class ApprovalNotFound(RequestError):
    def __init__(self, approval_id: str) -> None:
        super().__init__("id", f"no approval request {approval_id!r}")


def decide_request(
    store: ApprovalStore, approval_id: str, decision: Decision, if_match: str, now: str
) -> tuple[ApprovalRequest, str, HistoryEntry]:
    """Applies ``decision`` if the request is still at version ``if_match``: the
    request, its new version and the history entry. ``StaleVersion``,
    ``InvalidTransition``, ``RequestError`` (field ``reason``), ``ApprovalNotFound``."""
    found = store.get(approval_id)
    if found is None:
        raise ApprovalNotFound(approval_id)
    request, etag = found
    if etag != if_match:
        raise StaleVersion(f"approval {approval_id} is at version {etag}, not {if_match}")
    target = check_transition(decision.action, request.state)
    status = request.security_scan.get("status")
    if decision.action == "approve" and status != "passed" and not (decision.reason or "").strip():
        raise RequestError(
            "reason", f"is required to approve an image whose scan status is {status or 'unknown'} (not passed)"
        )
    entry = HistoryEntry(
        at=now, by=decision.reviewer.name, authenticated=decision.reviewer.authenticated,
        from_state=request.state, to_state=target, reason=decision.reason, audit_id=request.latest_audit_id,
        accept=decision.accept or None,
    )
    updated = request.model_copy(update={
        "state": target, "decided_by": decision.reviewer.name, "reason": decision.reason,
        "authenticated": decision.reviewer.authenticated, "decided_status": status,
        "accepted": decision.accept, "updated_at": now, "decided_at": now, "changes": request.changes + 1,
    })
    new_etag = store.replace(updated, etag, entry, request.state)
    return updated, new_etag, entry
