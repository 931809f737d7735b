"""The deadline timer's work (issue 25, ``APPROVAL_DEADLINE_SCHEDULE``): every ``at-risk``
request whose deadline has come is revoked; one whose deadline is within the policy's
``revocation.notice`` gets the ``approval-deadline-soon`` event, once per deadline.

It reads the ``state/at-risk`` index rows (one listing of the at-risk requests, never the
history) and each one's document; every change is written with ``If-Match`` through the
store's one save path, so of two runs (a timer fired twice, two instances) one makes the
change and sends its event, the other finds it made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from ..storage import iso8601
from . import grace
from .events import DEADLINE_SOON_EVENT, REVOKED_EVENT, send_transition
from .sender import EventSender
from .store import ApprovalStore, StaleVersion


@dataclass
class DeadlineRun:
    """What one run did: the ids revoked, the ids warned, the ids another writer changed first."""

    revoked: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    raced: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # a document that is not a request: left for people


def apply_deadlines(store: ApprovalStore, notifier: EventSender | None, notice_seconds: int,
                    now: float | None = None) -> DeadlineRun:
    moment = int(time.time() if now is None else now)
    stamp = iso8601(moment) or ""
    run = DeadlineRun()
    for row in store.rows("at-risk"):
        try:
            found = store.get(row.get("id", ""))
        except ValidationError:  # written outside the app: the others still get their deadlines
            run.unreadable.append(row.get("id", ""))
            continue
        if found is None:
            continue
        request, etag = found
        risk = request.at_risk
        if request.state != "at-risk" or risk is None:
            continue  # the row lags behind the document (store.py): nothing to do
        deadline = grace.unix(risk.deadline)
        if deadline <= moment:
            change, entry = grace.deadline_passed(request, stamp)
            kind, done = REVOKED_EVENT, run.revoked
        elif deadline - notice_seconds <= moment and risk.notice_for != risk.deadline:
            change, entry = grace.warn(request, stamp)
            kind, done = DEADLINE_SOON_EVENT, run.warned
        else:
            continue
        updated = request.model_copy(update=change)
        try:
            store.replace(updated, etag, entry, request.state)
        except StaleVersion:
            run.raced.append(request.id)
            continue
        done.append(request.id)
        extra = {"deadline": risk.deadline, "findings": risk.findings, "rule": risk.rule}
        send_transition(notifier, store.prefix, kind, updated, risk.audit_id,
                        **extra | ({"revoked_at": stamp} if kind == REVOKED_EVENT else {}))
    return run
