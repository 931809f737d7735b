"""What the scan's follow-up does for approvals after each succeeded audit.

The first audit of an image (repository and digest) asked for by the watch
timer, an Event Grid push or the HTTP API (``trigger`` ``watch``, ``event``,
``request``) creates its request, in the state ``initial_state`` gives. Every
later succeeded audit of a digest that has a request (rescans included)
refreshes the request's ``security_scan`` and, if it breaks what an approval
relied on (``revocation_causes``), revokes it at once or, with a grace period in the
policy's ``revocation:`` section, puts it ``at-risk`` until a deadline (``grace.py``); a
later audit without the causes clears it. Each change of state notifies the webhooks once
(``events.py``). The caller logs and swallows any error: approval bookkeeping never fails
an audit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Literal

from ..models import AcceptedRisk, AuditMeta, AuditResult
from ..storage import image_identity, iso8601
from .initial import initial_state
from .models import ApprovalRequest, HistoryEntry, approval_id, security_scan_of
from ..policy import Deadline, RevocationPolicy
from . import grace
from .events import AT_RISK_EVENT, CLEARED_EVENT, REVOKED_EVENT, send_transition
from .revocation import revocation_causes
from .sender import EventSender
from .store import ApprovalStore, StaleVersion

CREATING_TRIGGERS = frozenset({"watch", "event", "request", "admission"})
_ATTEMPTS = 3

Outcome = Literal["created", "updated", "revoked", "at-risk", "cleared"]
_EVENTS: dict[str, str] = {"revoked": REVOKED_EVENT, "cleared": CLEARED_EVENT, "at-risk": AT_RISK_EVENT}
MAX_REQUESTERS = 20


class ApprovalBook:
    """The approvals side of one scanner. ``notifier``: the follow-up's ``Notifier`` (or ``None``: no webhooks)."""

    def __init__(self, store: ApprovalStore, notifier: EventSender | None, clock: Callable[[], float] = time.time,
                 revocation: RevocationPolicy | None = None) -> None:
        """``revocation``: the policy's grace periods (``None``: revoke at once, as before issue 25)."""
        self.store, self.notifier, self.clock, self.revocation = store, notifier, clock, revocation

    def after_audit(self, meta: AuditMeta, seen: SeenRequest | None = None) -> Outcome | None:
        """``seen``: the request as read earlier for this audit; a version changed since then
        is caught by ``If-None-Match``/``If-Match`` and read again, as any concurrent change."""
        if meta.audit_result is not AuditResult.SUCCEEDED:
            return None
        repository, tag, digest = approval_subject(meta)
        if not repository or not digest:
            return None  # a tarball, or an image without a digest: nothing to approve by
        identifier = approval_id(repository, digest)
        if seen is not None and (seen.audit_id, seen.identifier) == (meta.audit_id, identifier):
            found = seen.found
        else:
            found = self.store.get(identifier)
        if found is None:
            if meta.trigger not in CREATING_TRIGGERS:
                return None
            if self._create(identifier, repository, tag, digest, meta):
                return "created"
            found = self.store.get(identifier)  # a concurrent first audit created it
            if found is None:
                return None
        return self._follow(identifier, found, meta)

    def _create(self, identifier: str, repository: str, tag: str | None, digest: str, meta: AuditMeta) -> bool:
        state, by, reason = initial_state(meta)
        now = self._now()
        request = ApprovalRequest(
            id=identifier, repository=repository, digest=digest, tag=tag, image=meta.image, state=state,
            platform=(meta.index_manifests or {}).get(digest) or None,
            index_digest=meta.image_digest if meta.image_digest != digest else None,
            decided_by=by, reason=reason, audit_id=meta.audit_id, latest_audit_id=meta.audit_id,
            decided_status=meta.scan_status, created_at=now, updated_at=now, decided_at=now,
            security_scan=security_scan_of(meta), requesters=_requesters([], meta.requested_by),
            policy_rule=meta.policy.rule if meta.policy is not None else None,
        )
        entry = HistoryEntry(at=now, by=by, from_state=None, to_state=state, reason=reason, audit_id=meta.audit_id)
        return self.store.create(request, entry) is not None

    def _follow(self, identifier: str, found: tuple[ApprovalRequest, str], meta: AuditMeta) -> Outcome | None:
        for _ in range(_ATTEMPTS):
            request, etag = found
            if meta.audit_id in (request.latest_audit_id, request.audit_id):
                return None  # this audit was followed already (a redelivery)
            if meta.timestamp < _unix(request.security_scan.get("scanned_at")):
                return None  # an older audit finishing late: the request already shows a newer one
            now = self._now()
            update: dict[str, Any] = {
                "latest_audit_id": meta.audit_id, "security_scan": security_scan_of(meta), "updated_at": now,
                "requesters": _requesters(request.requesters, meta.requested_by),
            }
            if meta.policy is not None:
                update["policy_rule"] = meta.policy.rule
            outcome, change, entry = self._judge(request, meta, now)
            updated = request.model_copy(update=update | change)
            try:
                self.store.replace(updated, etag, entry, request.state)
            except StaleVersion:
                again = self.store.get(identifier)
                if again is None:
                    return None
                found = again
                continue
            if entry is not None and outcome in _EVENTS:
                send_transition(self.notifier, self.store.prefix, _EVENTS[outcome], updated, meta.audit_id,
                                **({"revoked_at": now} if outcome == "revoked" else {}))
            return outcome
        return None

    def _judge(self, request: ApprovalRequest, meta: AuditMeta, now: str
               ) -> tuple[Outcome, dict[str, Any], HistoryEntry | None]:
        """What ``meta`` does to ``request``: revoke it (no grace, or the grace is over), put it
        at risk (``grace.py``), keep it at risk, clear it, or only refresh its scan."""
        causes = revocation_causes(request, meta, self._today())
        if causes is None:
            if request.state == "at-risk":
                change, entry = grace.clear(request, now, meta.audit_id)
                return "cleared", change, entry
            return "updated", {}, None
        clock = int(self.clock())
        deadline = (self.revocation or RevocationPolicy()).deadline(causes.threats, clock)
        if request.at_risk is not None:
            deadline = Deadline(min(deadline.at, grace.unix(request.at_risk.deadline)), deadline.condition,
                                deadline.findings)
        if deadline.at <= clock:
            change, entry = grace.revoke(request, causes.reason, now, meta.audit_id)
            return "revoked", change, entry
        if request.state == "at-risk":
            return "at-risk", grace.still_at_risk(request, causes, deadline, meta.audit_id), None
        change, entry = grace.enter_at_risk(request, causes, deadline, now, meta.audit_id)
        return "at-risk", change, entry

    def _now(self) -> str:
        return iso8601(int(self.clock())) or ""

    def _today(self) -> date:
        return datetime.fromtimestamp(self.clock(), timezone.utc).date()


@dataclass(frozen=True)
class SeenRequest:
    """The request of an audit's digest as the follow-up read it before the meta (``None``
    in ``found``: there was none), so that ``after_audit`` need not read it again."""

    audit_id: str
    identifier: str
    found: tuple[ApprovalRequest, str] | None

    @property
    def accepted(self) -> list[AcceptedRisk]:
        """What the approval accepts: the policy evaluates later audits of the digest with it,
        so an accepted CVE keeps counting as accepted until its ``until`` date."""
        return list(self.found[0].accepted) if self.found is not None else []


def read_request(store: ApprovalStore, meta: AuditMeta) -> SeenRequest | None:
    """The request of ``meta``'s digest, read once; ``None`` for an image without a digest."""
    repository, _, digest = approval_subject(meta)
    if not repository or not digest:
        return None
    identifier = approval_id(repository, digest)
    return SeenRequest(meta.audit_id, identifier, store.get(identifier))


def approval_subject(meta: AuditMeta) -> tuple[str | None, str | None, str | None]:
    """``(repository, tag, digest)`` an audit's approval request is for: the manifest that was
    scanned. For an image index that is its platform's manifest (``platform-digest``), never the
    index: a platform's approval cannot stand for the others, and the index is allowed only when
    each of its platforms is (issue 23; ``/verdict``)."""
    repository, tag, digest = image_identity(meta.image, meta.image_digest)
    return repository, tag, meta.platform_digest or digest


def _requesters(known: list[str], requester: str | None) -> list[str]:
    """Who asked for scans of the image (four eyes): each name once, the latest ``MAX_REQUESTERS``."""
    if not requester or requester in known:
        return known
    return [*known, requester][-MAX_REQUESTERS:]


def _unix(iso: object) -> int:
    if not isinstance(iso, str):
        return 0
    try:
        return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return 0
