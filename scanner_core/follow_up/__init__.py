"""The audit's follow-up: what each succeeded audit adds, around the writing of its ``meta``.

Before the meta (``AuditFollowUp.annotate``): the previous audit and what changed
(``changes.py``), the policy's decision (``gate.py``) and ``decision`` (``decision.py``).
After it (``AuditFollowUp.notify``): the image's approval request (``approvals/``) and the
signed webhook notification (``notify.py``, ``signing.py``). A new webhook event goes in
``notify.py``; a new approval state in ``approvals/``.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "AuditFollowUp": ".audit",
    "LookBack": ".audit",
    "Notifier": ".notify",
    "decide": ".decision",
    "decision_of": ".gate",
    "policy_fields": ".gate",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
