"""The fleet query tables after each audit's ``meta`` (issue 24, item 3; ``fleet_queries/``).

The findings are the ones the ship stage's summariser already parsed (``collector``: every
finding trivy reported, suppressed ones are not among them), else streamed from the stored
report (a dedup answer, a redelivery, a report the upload did not see whole); the packages
come from the audit's stored inventory. Off when no storage connection is configured (a
one-time runner without ``AzureWebJobsStorage``); a failure is logged and never fails the
audit (``reindex`` rebuilds the tables).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property

from ..config import Settings
from ..fleet_queries import FoundPackage, QueryTables, RecordOutcome, fleet_tables_connection, rebuild_queries, stored_packages
from ..log import ScanLogger
from ..models import AuditMeta, AuditResult
from ..storage import AuditIndex


class QueryFollowUp:
    """One scanner's writer of the fleet query tables."""

    def __init__(self, settings: Settings, audit_index: AuditIndex | None, describe: Callable[[Exception], str]) -> None:
        self.settings = settings
        self.audit_index = audit_index
        self.describe = describe
        self._lock = threading.Lock()
        self._collected: tuple[str, list[FoundPackage]] | None = None  # (audit id, its findings), the last audit's

    @cached_property
    def tables(self) -> QueryTables | None:
        connection = fleet_tables_connection(self.settings.fleet_tables_connection)
        return QueryTables(connection, self.settings) if connection is not None and self.audit_index is not None else None

    def collector(self, audit_id: str | None) -> Callable[[FoundPackage], None] | None:
        """A callback keeping every finding of ``audit_id``'s report as the summariser reads it."""
        if audit_id is None:
            return None
        found: list[FoundPackage] = []
        with self._lock:
            self._collected = (audit_id, found)
        return found.append

    def incomplete(self, audit_id: str) -> None:
        """The summariser did not see the whole report: its findings are read from the blob."""
        with self._lock:
            if self._collected is not None and self._collected[0] == audit_id:
                self._collected = None

    def record(self, meta: AuditMeta, log: ScanLogger) -> RecordOutcome | None:
        if meta.audit_result is not AuditResult.SUCCEEDED or self.audit_index is None:
            return None
        with self._lock:
            collected, self._collected = self._collected, None
        try:
            tables = self.tables
            if tables is None:
                return None
            if collected is not None and collected[0] == meta.audit_id and meta.reused_from is None:
                index = self.audit_index
                outcome = tables.record(meta, lambda: collected[1],
                                        lambda: stored_packages(index.read_chunks, meta.inventory_path))
            else:
                outcome = rebuild_queries(tables, meta, self.audit_index.read_chunks)
        except Exception as error:  # noqa: BLE001 - the query tables never fail an audit
            log.warning("fleet query tables not updated", fields={"error": self.describe(error)})
            return None
        log.info("fleet query tables", fields={"result": outcome.result, "written": outcome.written,
                                               "deleted": outcome.deleted})
        return outcome
