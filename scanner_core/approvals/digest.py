"""The daily digest (``DIGEST_SCHEDULE``): one summary to the webhooks, the
seed's "daily security digest". Pending requests, the decisions and revocations
of the last 24 hours, the at-risk requests by deadline (issue 25), and the worst images (most critical, then high findings)
among the requests, from one listing of the approvals index. Sent at most once
per UTC day (a claim blob, as the audit notifications have).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..storage import iso8601
from .sender import EventSender
from .store import ApprovalStore

DIGEST_EVENT = "approval-digest"
WORST = 5
_DAY = 86_400


@dataclass(frozen=True)
class DigestResult:
    sent: bool
    event: dict[str, Any] = field(default_factory=dict)
    deliveries: list[Any] | None = None


def _unix(iso: str | None) -> int:
    try:
        return int(datetime.strptime(iso or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return 0


def _item(row: dict[str, str]) -> dict[str, Any]:
    counts = json.loads(row.get("counts") or "{}")
    label = row.get("repository", "?") + (f":{row['tag']}" if row.get("tag") else f"@{row.get('digest', '?')}")
    return {"id": row.get("id"), "image": label, "state": row.get("state"), "decided-by": row.get("decidedby"),
            "scan-status": row.get("scanstatus"), "vulnerabilities": counts, "decided-at": row.get("decided"),
            "deadline": row.get("deadline")}


def build_digest(store: ApprovalStore, now: float) -> dict[str, Any]:
    rows = list(store.rows())
    since = now - _DAY
    items = [_item(row) for row in rows]
    pending = [item for item in items if item["state"] == "pending"]
    recent = [item for item in items if _unix(item["decided-at"]) >= since and item["state"] != "pending"]
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


def send_digest(store: ApprovalStore, notifier: EventSender, now: float | None = None) -> DigestResult:
    """Posts today's digest to the webhooks unless it was posted already today."""
    now = time.time() if now is None else now
    event = build_digest(store, now)
    if not notifier.urls:
        return DigestResult(False, event)
    deliveries = notifier.send_once(f"{store.prefix}notifications/{event['audit-id']}", event)
    return DigestResult(deliveries is not None, event, deliveries)
