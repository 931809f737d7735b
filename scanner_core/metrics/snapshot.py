"""What the metrics say, read from what the scanner has stored.

Every number comes from Blob Storage and the queue service, never from the
process's memory, so every instance of a scaled-out app answers the same and
a fleet needs no aggregation:

* the audit index (``storage/index.py``), walked once, newest request first:
  per image the latest audit (its status) and the latest succeeded one (its
  findings, after suppressions, and its DB's date); per scanner the audits by
  result and failure reason, in all and over the last ``RECENT_WINDOW_SECONDS``,
  and trivy's run times;
* the heartbeat blob: the DB and Java DB dates, staleness, the last beat;
* the queue service: the approximate depth of the scan queue and its ``-poison``
  queue (``queue/client.py``'s factory).

An image is a repository and the tag asked for (or the digest, for a request
by digest); ``max_images`` keeps the most recently requested ones, which
bounds the series a scrape returns. Cost: the walk of the index, about 0.45 ms
per indexed audit against Azurite (see ``storage/index.py``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..models import AuditResult, HeartbeatMeta
from ..queue import queue_client
from ..storage import QueueConnection
from ..storage import AuditIndex, AuditRow, StorageErrors, heartbeat_blob
from .approval import ApprovalStates, approval_deadline, approval_state, approval_states

RECENT_WINDOW_SECONDS = 3600
DURATION_BUCKETS_SECONDS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass(frozen=True)
class ImageMetrics:
    """One image: its labels, its latest audit's status, its latest succeeded audit's findings."""

    registry: str
    repository: str
    tag: str
    digest: str
    status: str  # passed, warning, failed, or audit-failed (the latest audit's)
    audit_id: str
    requested_at: int
    scanned_at: int | None = None
    vulnerabilities: dict[str, int] | None = None  # None: no audit of the image has succeeded yet
    secrets: int | None = None
    db_updated_at: float | None = None  # unix seconds; the DB the findings were found with
    approval: str | None = None  # approval.py: the state of the request for this digest; None: no request
    approval_deadline: float | None = None  # an at-risk approval's deadline, unix seconds (issue 25)

    @property
    def labels(self) -> dict[str, str]:
        return {
            "image_registry": self.registry,
            "image_repository": self.repository,
            "image_tag": self.tag,
            "image_digest": self.digest,
        }


@dataclass(frozen=True)
class DurationHistogram:
    """trivy's run times (``scan-duration-ms`` of succeeded audits), in seconds."""

    buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count), +Inf last
    count: int
    total_seconds: float


@dataclass(frozen=True)
class MetricsSnapshot:
    taken_at: float
    images: list[ImageMetrics]
    images_indexed: int  # images in the index, before ``max_images``
    audits: dict[tuple[str, str], int]  # (audit-result, failure-reason or "") -> audits in the index
    recent_audits: dict[tuple[str, str], int]  # the same, requested in the last RECENT_WINDOW_SECONDS
    durations: DurationHistogram
    queue_messages: dict[str, int | None] = field(default_factory=dict)  # "scan", "poison" -> approximate
    queue_names: dict[str, str] = field(default_factory=dict)
    heartbeat: HeartbeatMeta | None = None

    def db_updated(self, db: str) -> float | None:
        """Unix seconds of the heartbeat's ``trivy`` or ``java`` DB date."""
        if self.heartbeat is None:
            return None
        text = self.heartbeat.trivy_db_updated_at if db == "trivy" else self.heartbeat.trivy_java_db_updated_at
        return unix_seconds(text)


def unix_seconds(text: str | None) -> float | None:
    """trivy's RFC 3339 times (``2026-11-20T06:00:00Z``, maybe with fractions)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_snapshot(
    container_url: str,
    scanner_short_id: str,
    queue_connection: str | QueueConnection | None,
    queue_name: str | None,
    *,
    max_images: int,
    now: float | None = None,
) -> MetricsSnapshot:
    """Reads the index, the heartbeat and the queues. ``StorageError`` when the service fails."""
    taken_at = time.time() if now is None else now
    with AuditIndex(container_url, scanner_short_id) as index:
        rows = index.rows()
        states = approval_states(container_url, scanner_short_id)
        summary = _summarize(rows, max_images=max_images, now=taken_at, states=states)
        raw = index.read(heartbeat_blob(scanner_short_id))
    heartbeat = HeartbeatMeta.model_validate_json(raw) if raw else None
    queues: dict[str, int | None] = {}
    names: dict[str, str] = {}
    if queue_connection is not None and queue_name:
        names = {"scan": queue_name, "poison": f"{queue_name}-poison"}
        queues = {kind: _approximate_depth(queue_connection, name) for kind, name in names.items()}
    return MetricsSnapshot(taken_at=taken_at, heartbeat=heartbeat, queue_messages=queues, queue_names=names, **summary)


def _summarize(
    rows: Any, *, max_images: int, now: float, states: ApprovalStates | None = None
) -> dict[str, Any]:
    latest: dict[tuple[str, str], AuditRow] = {}  # insertion order: newest request first
    succeeded: dict[tuple[str, str], AuditRow] = {}
    audits: Counter[tuple[str, str]] = Counter()
    recent: Counter[tuple[str, str]] = Counter()
    durations: list[float] = []
    for row in rows:
        outcome = (row.audit_result, row.failure_reason or "")
        audits[outcome] += 1
        if (row.scanned_at or row.requested_at) >= now - RECENT_WINDOW_SECONDS:
            recent[outcome] += 1
        if row.scan_duration_ms is not None and row.audit_result == AuditResult.SUCCEEDED.value:
            durations.append(row.scan_duration_ms / 1000)
        if not row.repository or not (row.tag or row.digest):
            continue  # a tarball scanned without a reference: no image to label
        key = (row.repository, row.tag or row.digest or "")
        latest.setdefault(key, row)
        if row.vulnerabilities is not None and row.audit_result == AuditResult.SUCCEEDED.value:
            succeeded.setdefault(key, row)
    images = [_image(row, succeeded.get(key), states or {}) for key, row in list(latest.items())[:max_images]]
    return {
        "images": images,
        "images_indexed": len(latest),
        "audits": dict(audits),
        "recent_audits": dict(recent),
        "durations": _histogram(durations),
    }


def _image(latest: AuditRow, found: AuditRow | None, states: ApprovalStates) -> ImageMetrics:
    registry, _, repository = (latest.repository or "").partition("/")
    digest = (found.digest if found else None) or latest.digest or ""
    status = latest.scan_status if latest.audit_result == AuditResult.SUCCEEDED.value else None
    return ImageMetrics(
        registry=registry,
        repository=repository,
        tag=latest.tag or "",
        digest=digest,
        status=status or "audit-failed",
        audit_id=latest.audit_id,
        requested_at=latest.requested_at,
        scanned_at=latest.scanned_at,
        vulnerabilities=found.vulnerabilities if found else None,
        secrets=found.secrets if found else None,
        db_updated_at=unix_seconds(found.db_updated_at) if found else None,
        approval=approval_state(states, latest.repository, digest),
        approval_deadline=approval_deadline(states, latest.repository, digest),
    )


def _histogram(durations: list[float]) -> DurationHistogram:
    buckets = tuple((bound, sum(1 for d in durations if d <= bound)) for bound in DURATION_BUCKETS_SECONDS)
    return DurationHistogram(buckets + ((float("inf"), len(durations)),), len(durations), sum(durations))


def _approximate_depth(connection: str | QueueConnection, name: str) -> int | None:
    """The queue's approximate message count; 0 for a queue not created yet."""
    with StorageErrors(f"reading the depth of queue {name}", ""), queue_client(connection, name) as client:
        try:
            return int(client.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0
