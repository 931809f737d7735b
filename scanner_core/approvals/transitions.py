"""Which state may follow which, and who may make the move.

Reviewers approve or reject, revoke at once, or extend an at-risk request's
deadline; the scanner creates requests in their first state, puts approvals at risk
and revokes them (``revocation.py``, ``grace.py``). A reviewer may overturn any decision
but cannot repeat one (approving an approved request is refused, not a no-op:
the caller learns that someone else decided first).
"""

from __future__ import annotations

from typing import Literal

from ..errors import ScannerError
from .models import State

Action = Literal["approve", "reject", "revoke", "extend"]

TARGET: dict[Action, State] = {"approve": "approved", "reject": "rejected", "revoke": "revoked", "extend": "at-risk"}
ALLOWED_FROM: dict[Action, frozenset[str]] = {
    "approve": frozenset({"pending", "rejected", "auto-rejected", "auto-approved", "at-risk", "revoked"}),
    "reject": frozenset({"pending", "approved", "auto-approved", "auto-rejected", "at-risk", "revoked"}),
    "revoke": frozenset({"approved", "auto-approved", "at-risk"}),
    "extend": frozenset({"at-risk"}),  # a reviewer moves an at-risk request's deadline (issue 25)
}


class InvalidTransition(ScannerError):
    """The request's state does not allow this move."""

    def __init__(self, action: Action, state: str) -> None:
        allowed = ", ".join(sorted(ALLOWED_FROM[action]))
        super().__init__(f"cannot {action} a request that is {state}; {action} is allowed from: {allowed}")
        self.action, self.state = action, state


def check_transition(action: Action, state: str) -> State:
    """The state ``action`` leads to from ``state``; ``InvalidTransition`` when not allowed."""
    if state not in ALLOWED_FROM[action]:
        raise InvalidTransition(action, state)
    return TARGET[action]
