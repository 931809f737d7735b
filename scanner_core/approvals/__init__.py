"""The approval gate (issue 15): one approval request per repository and digest,
reviewers' decisions, grace periods and revocation on rescan (issue 25), the daily digest.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "ALLOWING_STATES": ".models",
    "unix": ".grace",
    "ApprovalBook": ".book",
    "SeenRequest": ".book",
    "read_request": ".book",
    "approval_subject": ".book",
    "ApprovalNotFound": ".decide",
    "Decision": ".decide",
    "DecisionRules": ".decide",
    "DeadlineRun": ".deadlines",
    "apply_deadlines": ".deadlines",
    "AT_RISK_EVENT": ".events",
    "DEADLINE_SOON_EVENT": ".events",
    "REVOKED_EVENT": ".events",
    "send_transition": ".events",
    "AtRisk": ".models",
    "decide_request": ".decide",
    "build_digest": ".digest",
    "send_digest": ".digest",
    "DigestResult": ".digest",
    "initial_state": ".initial",
    "APPROVAL_STATES": ".models",
    "ApprovalRequest": ".models",
    "HistoryEntry": ".models",
    "security_scan_of": ".models",
    "approval_id": ".models",
    "Reviewer": ".principal",
    "ReviewerRefused": ".principal",
    "reviewer_from": ".principal",
    "requester_from": ".principal",
    "revocation_causes": ".revocation",
    "revocation_reason": ".revocation",
    "EventSender": ".sender",
    "ApprovalStore": ".store",
    "DamagedHistory": ".store",
    "StaleVersion": ".store",
    "InvalidTransition": ".transitions",
    "check_transition": ".transitions",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
