"""Rescans as the DB learns: one run of the rescan timer.

The choice reads the fleet state (issue 24: ``storage.rescan_candidates``, one
filtered query of its digest entities, never the monitor's records); a scanned
manifest is rescanned when all of these hold:

* it was *seen* in the last ``RESCAN_WINDOW_DAYS`` (default 30): its latest
  request that was not itself a rescan (a push, a watch run, a person's
  request) is that recent, so images nobody uses any more age out;
* its latest scan is older than ``RESCAN_MAX_AGE_HOURS`` (default 24);
* that scan's DB (``UpdatedAt``) is older than the DB in place now.

The rescan enqueues ``registry/repository@digest`` (the same manifest, not
what its tag points to today: the watch timer follows tags), labelled with
its tag, trigger ``rescan``. Should the scanning instance still have the
DB the image was scanned with, the request is answered from the earlier
audit (``reuse.py``) instead of running trivy again.

Which images are due (``Rescanner.due``) and how they are put on the queue
(``Rescanner.enqueue_due``) are two seams: the digests due go in batches of
``RESCAN_BATCH_SIZE`` per message (issue 26; ``queue/batches.py`` delivers
them one by one, each its own audit), a batch of one as a single request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..config import ScannerConfig
from ..errors import ScanFailed
from ..log import ScanLogger
from ..storage import FleetState, ImageState, rescan_candidates
from ..trivy import VulnerabilityDatabase
from .records import ImageRecord, MonitorStore
from .watch import Enqueue, audit_id_for


def parse_time(text: str | None) -> datetime | None:
    """trivy's RFC 3339 times (``2026-11-20T06:00:00Z``, maybe with fractions)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def due_for_rescan(
    records: Iterable[ImageRecord], *, now: float, current_db: datetime, max_age_hours: float, window_days: float
) -> list[ImageRecord]:
    """The records to rescan (see the module docstring), oldest scan first."""
    due = []
    for record in records:
        scanned_with = parse_time(record.db_updated_at)
        if (
            record.seen_at >= now - window_days * 86_400
            and record.scanned_at <= now - max_age_hours * 3_600
            and (scanned_with is None or scanned_with < current_db)
        ):
            due.append(record)
    return sorted(due, key=lambda record: record.scanned_at)


def record_of(image: ImageState) -> ImageRecord:
    """A digest entity of the fleet state as the record ``due`` returns: the scanned manifest
    (the platform's, for an image index), its last succeeded audit, its last wanting request."""
    return ImageRecord(
        repository=image.repository, digest=image.platform_digest or image.digest or "",
        audit_id=image.last_succeeded_audit_id or image.audit_id,
        folder=image.last_succeeded_folder or image.folder, requested_at=image.requested_at,
        scanned_at=image.scanned_at or 0, seen_at=image.wanted_at or 0, tag=image.tag,
        db_updated_at=image.db_updated_at, inventory=image.inventory_path, platform_digest=image.platform_digest,
    )


class EnqueueBatch(Protocol):
    """Puts rescans ``(image by digest, audit id, tag)`` on the trigger queue as batch messages
    (as many as their size needs); returns how many messages it sent."""

    def __call__(self, rescans: list[tuple[str, str, str | None]], *, created_at: float) -> int: ...


@dataclass
class RescanResult:
    images: int = 0
    enqueued: list[tuple[str, str]] = field(default_factory=list)  # (image, audit id)
    current_db: str | None = None
    error: str | None = None
    messages: int = 0

    def document(self) -> dict[str, object]:
        return {"images": self.images, "enqueued": len(self.enqueued), "messages": self.messages,
                "current-db": self.current_db, "error": self.error}


class Rescanner:
    """One run of the rescan timer."""

    def __init__(
        self,
        config: ScannerConfig,
        store: MonitorStore,
        enqueue: Enqueue,
        database: VulnerabilityDatabase,
        log: ScanLogger,
        *,
        enqueue_batch: EnqueueBatch | None = None,
        clock: Callable[[], float] = time.time,
        state: FleetState | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.enqueue = enqueue
        self.enqueue_batch = enqueue_batch
        self.database = database
        self.log = log
        self.clock = clock
        self.state = state

    def run(self) -> RescanResult:
        """Enqueues the due rescans. Without a usable DB nothing is due (logged).
        ``StorageError`` when Blob Storage or the queue fails."""
        result = RescanResult()
        try:
            self.database.ensure()
        except ScanFailed as error:
            self.log.warning("vulnerability DB not downloaded", fields={"error": str(error)})
        current = parse_time(self.database.info().updated_at)
        if current is None:
            result.error = "no usable vulnerability DB on this instance: nothing can be judged out of date"
            self.log.error("rescan skipped", fields=result.document())
            return result
        result.current_db = self.database.info().updated_at
        now = self.clock()
        self.enqueue_due(self.due(result, now, current), now, result)
        self.log.info("rescan", fields=result.document())
        return result

    def due(self, result: RescanResult, now: float, current: datetime) -> list[ImageRecord]:
        """Which images are due: the one place that chooses (``result.images``: how many were looked at).
        From the fleet state when there is one (the candidates the service's filter returns), else
        (no state: a deployment without one) from the monitor's records."""
        settings = self.config.settings
        if self.state is not None:
            candidates = rescan_candidates(self.state, int(now - settings.rescan_max_age_hours * 3_600),
                                           int(now - settings.rescan_window_days * 86_400))
            records = [record_of(image) for image in candidates]
        else:
            records = [record for record in self.store.images() if not record.is_index]  # platforms rescan apart
        result.images = len(records)
        return due_for_rescan(records, now=now, current_db=current,
                              max_age_hours=settings.rescan_max_age_hours, window_days=settings.rescan_window_days)

    def enqueue_due(self, due: list[ImageRecord], now: float, result: RescanResult) -> None:
        """Puts ``due`` on the queue, ``RESCAN_BATCH_SIZE`` digests per message (one alone: a single request)."""
        size = self.config.settings.rescan_batch_size
        for start in range(0, len(due), size):
            rescans = [(f"{record.repository}@{record.digest}", audit_id_for("rescan", record.digest, now), record.tag)
                       for record in due[start:start + size]]  # fmt: skip
            if len(rescans) > 1 and self.enqueue_batch is not None:
                result.messages += self.enqueue_batch(rescans, created_at=now)
            else:
                for image, audit_id, tag in rescans:
                    self.enqueue(image, audit_id, tag=tag, trigger="rescan", created_at=now)
                    result.messages += 1
            result.enqueued += [(image, audit_id) for image, audit_id, _ in rescans]
