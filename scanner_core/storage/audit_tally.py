"""The audits in numbers (issue 24): what the metrics' aggregate series say about the audit
history (audits by result and failure reason, those of the last hour, trivy's run times),
kept as one entity beside the fleet snapshot so a scrape reads it with one point read.

``tally_audits`` (the heartbeat timer, ``reindex``, or the first read before either) walks
only the index rows requested since ``settled_before`` (newest first: a prefix of
``by-time``), never the whole history after the first time: rows requested before
``now - LATE_SECONDS`` are *settled* (added to ``settled`` once and for all); the rows after
are counted afresh at each call, so an audit recorded up to ``LATE_SECONDS`` after its
request (a long scan, a queue retry) is still counted once. One recorded later than that
is left out of the counters (its state and the fleet views have it all the same).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

from azure.core.exceptions import ResourceNotFoundError
from pydantic import BaseModel, Field

from ..models import AuditResult
from .container import StorageErrors
from .fleet_state import FleetState
from .index_rows import AuditRow

TALLY_PARTITION = "~fleet"  # the fleet snapshot's partition: table_key never makes a key starting "~f"
TALLY_ROW = "audits"
LATE_SECONDS = 6 * 3600
RECENT_WINDOW_SECONDS = 3600
DURATION_BUCKETS_SECONDS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
OUTCOME_SEPARATOR = "|"  # a result and a failure reason (neither holds it) as one JSON key


class AuditCounts(BaseModel):
    """Audits by ``result|reason``, and trivy's run times of the succeeded ones."""

    audits: dict[str, int] = Field(default_factory=dict)
    buckets: list[int] = Field(default_factory=lambda: [0] * len(DURATION_BUCKETS_SECONDS))  # not cumulative
    durations: int = 0
    duration_seconds: float = 0.0

    def add(self, row: AuditRow) -> None:
        key = f"{row.audit_result}{OUTCOME_SEPARATOR}{row.failure_reason or ''}"
        self.audits[key] = self.audits.get(key, 0) + 1
        if row.scan_duration_ms is not None and row.audit_result == AuditResult.SUCCEEDED.value:
            seconds = row.scan_duration_ms / 1000
            self.durations += 1
            self.duration_seconds += seconds
            for n, bound in enumerate(DURATION_BUCKETS_SECONDS):
                if seconds <= bound:
                    self.buckets[n] += 1
                    break

    def plus(self, other: AuditCounts) -> AuditCounts:
        return AuditCounts(audits=dict(Counter(self.audits) + Counter(other.audits)),
                      buckets=[a + b for a, b in zip(self.buckets, other.buckets, strict=True)],
                      durations=self.durations + other.durations,
                      duration_seconds=self.duration_seconds + other.duration_seconds)


class AuditTally(BaseModel):
    """``total`` (every audit indexed, up to ``LATE_SECONDS`` late) and ``recent`` (requested in
    the ``RECENT_WINDOW_SECONDS`` before ``taken_at``), as of ``taken_at``."""

    taken_at: int
    settled_before: int = 0
    settled: AuditCounts = Field(default_factory=AuditCounts)
    total: AuditCounts = Field(default_factory=AuditCounts)
    recent: dict[str, int] = Field(default_factory=dict)
    rows_read: int = 0  # what the last tally walked (the bench and the docs' cost)

    def outcomes(self, recent: bool = False) -> dict[tuple[str, str], int]:
        """``{(audit-result, failure-reason or ""): audits}``."""
        counts = self.recent if recent else self.total.audits
        return {tuple(key.split(OUTCOME_SEPARATOR, 1)): n for key, n in counts.items()}  # type: ignore[misc]


def tally_audits(state: FleetState, rows: Iterable[AuditRow], now: float | None = None) -> AuditTally:
    """Adds the rows since the last tally's ``settled_before`` (``rows``: the index newest first;
    only its prefix is read) and stores the tally. One point read, the prefix, one write."""
    taken_at = int(time.time() if now is None else now)
    previous = read_audit_tally(state) or AuditTally(taken_at=taken_at)
    settle_before = max(previous.settled_before, taken_at - LATE_SECONDS)
    settling, unsettled = AuditCounts(), AuditCounts()
    recent: Counter[str] = Counter()
    read = 0
    for row in rows:
        if row.requested_at < previous.settled_before:
            break  # already settled
        read += 1
        (settling if row.requested_at < settle_before else unsettled).add(row)
        if (row.scanned_at or row.requested_at) >= taken_at - RECENT_WINDOW_SECONDS:
            recent[f"{row.audit_result}{OUTCOME_SEPARATOR}{row.failure_reason or ''}"] += 1
    settled = previous.settled.plus(settling)
    tally = AuditTally(taken_at=taken_at, settled_before=settle_before, settled=settled,
                       total=settled.plus(unsettled), recent=dict(recent), rows_read=read)
    with StorageErrors("writing the audit tally"):
        state.table.upsert_entity({"PartitionKey": TALLY_PARTITION, "RowKey": TALLY_ROW,
                                   "document": tally.model_dump_json()})
    return tally


def read_audit_tally(state: FleetState) -> AuditTally | None:
    """The last tally stored (one point read); ``None`` before the first."""
    with StorageErrors("reading the audit tally"):
        try:
            entity = state.table.get_entity(TALLY_PARTITION, TALLY_ROW)
        except ResourceNotFoundError:
            return None
    return AuditTally.model_validate_json(entity["document"])
