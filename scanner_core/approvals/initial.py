"""The state a new approval request starts in: the one place it is decided.

With the policy's decision in ``meta.policy`` (``policy/``): approve ->
``auto-approved``, reject -> ``auto-rejected``, review -> ``pending``, decided by
``rule <id>`` with the rule's reason. Without it, the seed's auto-rejection
(``meta.decision``): ``rejected`` -> ``auto-rejected`` by
``TRIVY_AUTO_REJECT_CRITICAL``; anything else waits for a reviewer.
"""

from __future__ import annotations

from ..models import AuditMeta
from .models import State

_POLICY_STATES: dict[str, State] = {"approve": "auto-approved", "reject": "auto-rejected", "review": "pending"}


def initial_state(meta: AuditMeta) -> tuple[State, str, str]:
    """``(state, decided_by, reason)`` for the request an audit creates."""
    if meta.policy is not None:
        return _POLICY_STATES[meta.policy.action], f"rule {meta.policy.rule}", meta.policy.reason
    if meta.decision == "rejected":
        critical = (meta.vulnerabilities or {}).get("critical", 0)
        threshold = meta.critical_threshold if meta.critical_threshold is not None else 0
        return (
            "auto-rejected",
            "TRIVY_AUTO_REJECT_CRITICAL",
            f"TRIVY_AUTO_REJECT_CRITICAL: status failed with {critical} critical "
            f"finding{'s' if critical != 1 else ''} (more than TRIVY_CRITICAL_THRESHOLD={threshold})",
        )
    return "pending", "scanner", f"awaiting review: scan status {meta.scan_status or 'unknown'}"
