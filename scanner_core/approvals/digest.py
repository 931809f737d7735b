"""The daily digest (``DIGEST_SCHEDULE``): one summary to the webhooks, the
seed's "daily security digest". Pending requests, the decisions and revocations
of the last 24 hours, the at-risk requests by deadline (issue 25), and the worst
images (most critical, then high findings) among the requests.

It reads the fleet's current state (issue 24), not the approvals index: one walk
of the state table (``FleetState.approvals``: O(images) entities, once a day),
each request once by its ``approval_id``, images gone by ``FLEET_IMAGE_TTL_DAYS``
left out. The index grows with every request ever made (one per
repository@digest); the digest never reads it. Sent at most once per UTC day
(a claim blob, as the audit notifications have).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..storage import iso8601
from .sender import EventSender
from .store import ApprovalStore

if TYPE_CHECKING:
    from ..storage import FleetState, ImageState

DIGEST_EVENT = "approval-digest"
WORST = 5
_DAY = 86_400


@dataclass(frozen=True)
class DigestResult:
    sent: bool
    event: dict[str, Any] = field(default_factory=dict)
    deliveries: list[Any] | None = None


def _item(state: ImageState) -> dict[str, Any]:
    label = state.repository + (f":{state.tag}" if state.tag else f"@{state.digest or '?'}")
    return {"id": state.approval_id, "image": label, "state": state.approval_state, "decided-by": state.approval_by,
            "scan-status": state.last_status or state.scan_status, "vulnerabilities": state.vulnerabilities or {},
            "decided-at": iso8601(state.approval_changed_at), "deadline": state.approval_deadline}


def build_digest(states: Iterable[ImageState], now: float) -> dict[str, Any]:
    """The event from the requests' states (``FleetState.approvals``: each request once). A state
    without ``approval_changed_at`` (written before it was kept) is not recent."""
    since = now - _DAY
    chosen = list(states)
    items = [_item(state) for state in chosen]
    pending = [item for item in items if item["state"] == "pending"]
    recent = [item for state, item in zip(chosen, items, strict=True)
              if (state.approval_changed_at or 0) >= since and item["state"] != "pending"]
    decisions = [item for item in recent if item["state"] not in ("revoked", "at-risk")]
    revocations = [item for item in recent if item["state"] == "revoked"]
    at_risk = sorted((item for item in items if item["state"] == "at-risk"), key=lambda item: item["deadline"] or "")
    worst = sorted(
        (item for item in items if item["vulnerabilities"].get("critical", 0) + item["vulnerabilities"].get("high", 0)),
        key=lambda item: (-item["vulnerabilities"].get("critical", 0), -item["vulnerabilities"].get("high", 0)),
    )[:WORST]
    lines = [f"Trivy approvals, {iso8601(int(now))}: {len(pending)} pending, {len(decisions)} decided and "
             f"{len(revocations)} revoked in the last 24 h; {len(at_risk)} at risk."]
    if at_risk:
        lines.append("At risk (revoked at the deadline unless re-approved): " + ", ".join(
            f"{item['image']} (deadline {item['deadline']})" for item in at_risk[:10]))
    for title, group in (("Pending", pending), ("Revoked", revocations), ("Worst", worst)):
        if group:
            lines.append(f"{title}: " + ", ".join(
                f"{item['image']} ({item['vulnerabilities'].get('critical', 0)} critical)" for item in group[:10]))
    return {
        "type": f"trivy-scanner.{DIGEST_EVENT}", "event": DIGEST_EVENT, "reasons": [DIGEST_EVENT],
        "audit-id": f"digest-{datetime.fromtimestamp(now, timezone.utc):%Y%m%d}", "generated-at": iso8601(int(now)),
        "pending": pending, "decisions": decisions, "revocations": revocations, "at-risk": at_risk, "worst": worst,
        "text": "\n".join(lines),
    }


def send_digest(store: ApprovalStore, state: FleetState, notifier: EventSender,
                now: float | None = None) -> DigestResult:
    """Posts today's digest to the webhooks unless it was posted already today: one walk of the
    fleet state (``state``); ``store`` only names the claim blob."""
    now = time.time() if now is None else now
    event = build_digest(state.approvals(now), now)
    if not notifier.urls:
        return DigestResult(False, event)
    deliveries = notifier.send_once(f"{store.prefix}notifications/{event['audit-id']}", event)
    return DigestResult(deliveries is not None, event, deliveries)
