"""What the metrics say, read from what the scanner has stored.

Every number comes from Blob Storage and the queue service, never from the
process's memory, so every instance of a scaled-out app answers the same and
a fleet needs no aggregation:

* the fleet state (``storage/fleet_views.py``, issue 24): per image its latest audit
  (its status) and its latest succeeded audit's findings, DB date and approval, for the
  ``max_images`` most recently requested images (one bounded query: the images requested
  since the fleet snapshot's cutoff); the number of images from the fleet snapshot;
* the audit tally (``storage/audit_tally.py``): audits by result and failure reason, in
  all and over the last ``RECENT_WINDOW_SECONDS``, and trivy's run times, one point read
  (the heartbeat timer adds the audits since its last tally);
* the heartbeat blob: the DB and Java DB dates, staleness, the last beat;
* the queue service: the approximate depth of the scan queue and its ``-poison``
  queue (``queue/client.py``'s factory).

An image is a repository and the tag asked for (or the digest, for a request
by digest); ``max_images`` keeps the most recently requested ones, which
bounds the series a scrape returns. Cost: the same at 100 or 100,000 images
(docs/metrics.md); a scrape never walks the audit history.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError

from ..models import HeartbeatMeta
from ..queue import queue_client
from ..storage import (
    DURATION_BUCKETS_SECONDS,
    RECENT_WINDOW_SECONDS,
    AuditCounts,
    AuditIndex,
    FleetState,
    ImageState,
    QueueConnection,
    StorageErrors,
    current_snapshot,
    heartbeat_blob,
    newest_images,
    read_audit_tally,
    tally_audits,
)




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
    approval: str | None = None  # the state of the request for this digest (the fleet state); None: no request
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
    fleet: FleetState,
    max_images: int,
    now: float | None = None,
) -> MetricsSnapshot:
    """Reads the fleet snapshot and the audit tally (a point read each), the newest images' state
    (one bounded query), the heartbeat and the queues. ``StorageError`` when the service fails."""
    taken_at = time.time() if now is None else now
    snapshot = current_snapshot(fleet, newest=max_images)
    tally = read_audit_tally(fleet)
    with AuditIndex(container_url, scanner_short_id) as index:
        if tally is None:  # before the heartbeat timer's first tally: the index, once
            tally = tally_audits(fleet, index.rows(), now=taken_at)
        raw = index.read(heartbeat_blob(scanner_short_id))
    images = [_image(image) for image in newest_images(fleet, max_images, snapshot.newest_since, now=taken_at)]
    heartbeat = HeartbeatMeta.model_validate_json(raw) if raw else None
    queues: dict[str, int | None] = {}
    names: dict[str, str] = {}
    if queue_connection is not None and queue_name:
        names = {"scan": queue_name, "poison": f"{queue_name}-poison"}
        queues = {kind: _approximate_depth(queue_connection, name) for kind, name in names.items()}
    return MetricsSnapshot(taken_at=taken_at, heartbeat=heartbeat, queue_messages=queues, queue_names=names,
                           images=images, images_indexed=max(snapshot.images, len(images)),
                           audits=tally.outcomes(), recent_audits=tally.outcomes(recent=True),
                           durations=_histogram(tally.total))


def _image(state: ImageState) -> ImageMetrics:
    registry, _, repository = state.repository.partition("/")
    return ImageMetrics(
        registry=registry,
        repository=repository,
        tag=state.tag or "",
        digest=state.digest or "",
        status=state.category,
        audit_id=state.audit_id,
        requested_at=state.requested_at,
        scanned_at=state.scanned_at,
        vulnerabilities=state.vulnerabilities if state.last_succeeded_audit_id else None,
        secrets=state.secrets if state.last_succeeded_audit_id else None,
        db_updated_at=unix_seconds(state.db_updated_at),
        approval=state.approval_state,
        approval_deadline=unix_seconds(state.approval_deadline) if state.approval_state == "at-risk" else None,
    )


def _histogram(counts: AuditCounts) -> DurationHistogram:
    cumulative = list(itertools.accumulate(counts.buckets))
    buckets = tuple(zip(DURATION_BUCKETS_SECONDS, cumulative, strict=True))
    return DurationHistogram(buckets + ((float("inf"), counts.durations),), counts.durations, counts.duration_seconds)


def _approximate_depth(connection: str | QueueConnection, name: str) -> int | None:
    """The queue's approximate message count; 0 for a queue not created yet."""
    with StorageErrors(f"reading the depth of queue {name}", ""), queue_client(connection, name) as client:
        try:
            return int(client.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0
