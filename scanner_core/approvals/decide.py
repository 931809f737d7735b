"""A reviewer's decision on one request: the version they saw, the move, the
reason (required to approve anything whose scan status is not ``passed``, and to revoke
or extend a deadline).

Who may decide (issue 25): the policy's ``approvers:`` entry that owns the repository
(``policy/owners.py``) names the role or group claims that may decide on it; with
``APPROVAL_FOUR_EYES`` whoever asked for a scan of the image may not approve it (nor extend
its deadline); a request whose rule says ``approvals: N`` needs N different reviewers: each
approval before the last is recorded (history and ``approvals``) and leaves the state as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import RequestError
from ..models import AcceptedRisk
from ..policy import Policy, owner_refusal
from . import grace
from .models import ApprovalRequest, HistoryEntry, PartialApproval
from .principal import Reviewer, ReviewerRefused
from .store import ApprovalStore, StaleVersion
from .transitions import Action, check_transition

FOUR_EYES = "APPROVAL_FOUR_EYES"
MAX_EXTENSION_DAYS = 365


@dataclass(frozen=True)
class Decision:
    action: Action
    reviewer: Reviewer
    reason: str | None
    accept: list[AcceptedRisk] = field(default_factory=list)
    deadline: str | None = None  # "extend": the new deadline, ISO 8601 UTC


@dataclass(frozen=True)
class DecisionRules:
    """What the settings and the policy say about who may decide (issue 25)."""

    four_eyes: bool = False
    policy: Policy | None = None


class ApprovalNotFound(RequestError):
    def __init__(self, approval_id: str) -> None:
        super().__init__("id", f"no approval request {approval_id!r}")


def decide_request(
    store: ApprovalStore, approval_id: str, decision: Decision, if_match: str, now: str,
    rules: DecisionRules = DecisionRules(),
) -> tuple[ApprovalRequest, str, HistoryEntry]:
    """Applies ``decision`` if the request is still at version ``if_match``: the
    request, its new version and the history entry. ``StaleVersion``,
    ``InvalidTransition``, ``RequestError`` (field ``reason`` or ``deadline``), ``ApprovalNotFound``,
    ``ReviewerRefused`` (403: the owners, four eyes, or a second approval by the same reviewer)."""
    found = store.get(approval_id)
    if found is None:
        raise ApprovalNotFound(approval_id)
    request, etag = found
    if etag != if_match:
        raise StaleVersion(f"approval {approval_id} is at version {etag}, not {if_match}")
    target = check_transition(decision.action, request.state)
    reviewer = decision.reviewer
    _check_reviewer(request, decision, rules)
    status = request.security_scan.get("status")
    if decision.action == "approve" and status != "passed" and not (decision.reason or "").strip():
        raise RequestError(
            "reason", f"is required to approve an image whose scan status is {status or 'unknown'} (not passed)"
        )
    if decision.action in ("revoke", "extend") and not (decision.reason or "").strip():
        raise RequestError("reason", f"is required to {decision.action}: why, 1-4000 characters")
    if decision.action == "extend":
        update, entry = grace.extend(request, _new_deadline(request, decision.deadline, now), reviewer.name,
                                     reviewer.authenticated, decision.reason or "", now)
    elif decision.action == "approve" and (partial := _partial(request, decision, rules, now)) is not None:
        update, entry = partial
    else:
        count = len(request.approvals) + 1
        entry = HistoryEntry(
            at=now, by=reviewer.name, authenticated=reviewer.authenticated,
            from_state=request.state, to_state=target, reason=decision.reason, audit_id=request.latest_audit_id,
            accept=decision.accept or None, approval=f"{count} of {count}" if count > 1 else None,
        )
        update = {
            "state": target, "decided_by": reviewer.name, "reason": decision.reason,
            "authenticated": reviewer.authenticated, "decided_status": status, "at_risk": None, "approvals": [],
            "accepted": decision.accept if decision.action == "approve" else request.accepted,
            "updated_at": now, "decided_at": now, "changes": request.changes + 1,
        }
    updated = request.model_copy(update=update)
    new_etag = store.replace(updated, etag, entry, request.state)
    return updated, new_etag, entry


def _check_reviewer(request: ApprovalRequest, decision: Decision, rules: DecisionRules) -> None:
    reviewer = decision.reviewer
    if rules.policy is not None:
        refusal = owner_refusal(rules.policy.approvers, request.repository, reviewer.name, reviewer.roles,
                                reviewer.authenticated)
        if refusal is not None:
            raise ReviewerRefused(403, "reviewer", refusal)
    if rules.four_eyes and decision.action in ("approve", "extend") and not reviewer.authenticated:
        raise ReviewerRefused(403, "reviewer", f"{FOUR_EYES}=true: an authenticated reviewer (App Service "
                              "authentication) is required to " + decision.action + ", so that the requester "
                              "cannot approve under another name")
    if rules.four_eyes and decision.action in ("approve", "extend") and reviewer.name.casefold() in {
            name.casefold() for name in request.requesters}:
        raise ReviewerRefused(403, "reviewer", f"{reviewer.name} asked for a scan of this image and may not "
                              f"{decision.action} it: {FOUR_EYES}=true requires another reviewer (four eyes)")


def _partial(request: ApprovalRequest, decision: Decision, rules: DecisionRules, now: str
             ) -> tuple[dict[str, object], HistoryEntry] | None:
    """A first approval of a request whose rule needs more: recorded, the state unchanged."""
    needed = rules.policy.approvals_needed(request.policy_rule) if rules.policy is not None else 1
    if needed <= 1:
        return None
    reviewer = decision.reviewer
    if reviewer.name.casefold() in {a.by.casefold() for a in request.approvals}:
        raise ReviewerRefused(403, "reviewer", f"{reviewer.name} approved this request already: rule "
                              f"{request.policy_rule} requires {needed} different reviewers")
    count = len(request.approvals) + 1
    if count >= needed:
        return None
    entry = HistoryEntry(at=now, by=reviewer.name, authenticated=reviewer.authenticated, from_state=request.state,
                         to_state=request.state, audit_id=request.latest_audit_id, accept=decision.accept or None,
                         reason=decision.reason, approval=f"{count} of {needed}")
    approvals = [*request.approvals, PartialApproval(by=reviewer.name, at=now, reason=decision.reason)]
    return {"approvals": approvals, "updated_at": now, "changes": request.changes + 1}, entry


def _new_deadline(request: ApprovalRequest, wanted: str | None, now: str) -> str:
    current = grace.unix(request.at_risk.deadline) if request.at_risk is not None else 0
    moment = grace.unix(wanted) if wanted else 0
    limit = grace.unix(now) + MAX_EXTENSION_DAYS * 86_400
    if not moment or moment <= current or moment > limit:
        shown = request.at_risk.deadline if request.at_risk is not None else "?"
        raise RequestError("deadline", f"{wanted!r} is not allowed: an ISO 8601 UTC time (YYYY-MM-DDTHH:MM:SSZ) "
                           f"after the current deadline {shown} and at most {MAX_EXTENSION_DAYS} days from now")
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
