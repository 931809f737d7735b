"""The ship stage: ``scan-result.json``, the inventory, ``meta`` last, the index; then the follow-up.

* The report is uploaded and summarised from the same bytes (``shipping.py``).
* The inventory (issue 18): a CycloneDX SBOM of the report (``trivy convert``, no second
  scan) stored as ``sbom.cdx.json`` beside it; converted and uploaded on the I/O pool while
  the report uploads. An inventory rescan stores none: its meta names the one it matched.
* The follow-up (``monitor/follow_up.py``): ``annotate`` (previous audit, changes, decision)
  before the meta is written, ``notify`` after it.

A reader who sees a meta can trust its folder: everything else is written first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from ..audit import AuditOutcome
from ..errors import AuditNotRecorded, ScannerError, StorageError
from ..log import ScanLogger
from ..models import AuditMeta, AuditResult
from ..monitor import AuditFollowUp
from ..server_mode import database_fields
from ..shipping import Ahead, PointerLookup, finish_summary, record_in_index, upload_failed_fields, upload_report
from ..storage import META_BLOB, REPORT_BLOB, SBOM_BLOB, AuditIndex, BlobStore, io_pool
from ..suppressions import os_info, suppression_fields
from ..trivy import ReportSummariser, TrivyRun
from ..verdict import verdict_fields
from .parts import ScannerParts
from .plan import Plan

JSON_CONTENT_TYPE = "application/json"
CYCLONEDX_CONTENT_TYPE = "application/vnd.cyclonedx+json"


class Shipper:
    """The ship stage of one scanner."""

    def __init__(self, scanner: ScannerParts, blob_store: BlobStore, audit_index: AuditIndex | None) -> None:
        self.scanner = scanner
        self.blob_store = blob_store
        self.audit_index = audit_index

    @property
    def follow_up(self) -> AuditFollowUp:
        return self.scanner.follow_up

    def ship(
        self, plan: Plan, run: TrivyRun, folder: str, log: ScanLogger, ahead: Ahead,
        remember: Callable[[AuditOutcome], None] | None = None,
    ) -> AuditOutcome:
        """The audit's folder, from trivy's report; returns its outcome. ``remember`` (the image's
        record, ``monitor/reuse.py``) runs on the I/O pool beside the meta and index writes: a
        record that names a folder whose meta is not there (yet) is never used (dedup reads that
        meta; an inventory rescan reads only the inventory, written before)."""
        report_path = run.report_path
        base = plan.base.model_copy(update={"scan_duration_ms": int(run.duration_seconds * 1000)})
        settings = self.scanner.config.settings
        follow_up = self.follow_up
        collect_keys, current_keys = follow_up.key_collector()
        summariser = ReportSummariser(on_finding=collect_keys)
        failure: ScannerError | None = None
        inventory = self._start_inventory(plan, folder, report_path)
        try:
            upload_report(self.blob_store, f"{folder}/{REPORT_BLOB}", report_path, JSON_CONTENT_TYPE, summariser)
        except StorageError as error:
            failure = error
        inventory_path = self._finish_inventory(inventory, log)
        if settings.scan_sbom == "cyclonedx" and inventory is not None and inventory_path is None and failure is None:
            try:
                inventory.result()  # SCAN_SBOM promised the SBOM: its failure is the audit's
            except StorageError as error:
                failure = error
        summary, read_once = finish_summary(summariser, report_path)
        meta = base.model_copy(
            update={
                "audit_result": AuditResult.SUCCEEDED,
                "image_digest": summary.image_digest or base.image_digest,
                "image_id": summary.image_id,
                "trivy_version": self.scanner.trivy.version(),
                "trivy_audit_path": f"{folder}/{REPORT_BLOB}",
                **database_fields(settings, self.scanner.server, ahead.server, log),  # the DBs' ages (server_mode.py)
                "os": os_info(summary),
                **suppression_fields(settings, summary),
                **verdict_fields(summary, settings),
                **self._inventory_fields(plan, inventory_path),
            }
        )
        if plan.inventory is not None and meta.secrets is not None:
            # An inventory has no files to search: the secrets are those its image scan found.
            meta = meta.model_copy(update={"secrets": plan.inventory.secrets, "secrets_from": plan.inventory.audit_id})
        if failure is not None:
            meta = meta.model_copy(update=upload_failed_fields(failure))
        meta = follow_up.annotate(
            meta, report_path, log, looked_back=ahead.looked_back, current_keys=current_keys if read_once else None
        )
        meta = meta.model_copy(update={"timestamp": int(time.time())})
        outcome = AuditOutcome(meta=meta, folder=folder, meta_written=True, failure=failure, summary=summary)
        remembered = io_pool().submit(remember, outcome) if remember is not None and outcome.succeeded else None
        self.write_meta(folder, meta, log, ahead.pointer)
        follow_up.notify(meta, folder, log)
        if remembered is not None:
            remembered.result()  # never raises: the bookkeeping logs its own failures
        log.info(
            "audit recorded",
            fields={"audit-result": meta.audit_result.value, "meta": f"{folder}/{META_BLOB}",
                    **{s.lower(): n for s, n in summary.counts.items()}},
        )
        return outcome

    def _start_inventory(self, plan: Plan, folder: str, report_path: Path) -> Future[str] | None:
        """The inventory's conversion and upload, started beside the report's upload."""
        settings = self.scanner.config.settings
        registry_image = plan.target is not None and plan.target.image is not None and plan.target.input_tar is None
        wanted = settings.scan_sbom == "cyclonedx" or (settings.rescan_from == "inventory" and registry_image)
        if plan.inventory is not None:  # the folder keeps its own copy: a lifecycle rule may delete the source's
            return io_pool().submit(self._copy_inventory, plan.inventory.path, folder)
        if not wanted:
            return None
        return io_pool().submit(self._store_inventory, folder, report_path, plan.scratch)

    def _copy_inventory(self, source: str, folder: str) -> str:
        """An inventory rescan's inventory, copied server-side into its own folder (issue 17:
        every audit folder is self-contained), so the next rescan reads the newest folder."""
        self.blob_store.copy_blob(source, f"{folder}/{SBOM_BLOB}")  # type: ignore[attr-defined]
        return f"{folder}/{SBOM_BLOB}"

    def _store_inventory(self, folder: str, report_path: Path, scratch: Path | None) -> str:
        sbom_path = report_path.with_name(SBOM_BLOB)
        self.scanner.trivy.convert_to_cyclonedx(report_path, sbom_path, self.scanner.config.settings.trivy_timeout_ms,
                                                scratch)
        self.blob_store.upload_file(f"{folder}/{SBOM_BLOB}", sbom_path, CYCLONEDX_CONTENT_TYPE)
        return f"{folder}/{SBOM_BLOB}"

    def _finish_inventory(self, inventory: Future[str] | None, log: ScanLogger) -> str | None:
        if inventory is None:
            return None
        try:
            return inventory.result()
        except Exception as error:  # noqa: BLE001 - without an inventory, rescans pull the image
            log.warning("the inventory was not stored", fields={"error": self.scanner.redactor(str(error))[:500]})
            return None

    def _inventory_fields(self, plan: Plan, stored: str | None) -> dict[str, object]:
        sbom = self.scanner.config.settings.scan_sbom == "cyclonedx"
        if plan.inventory is not None:
            path = stored or plan.inventory.path  # the copy in this folder; the source if it could not be made
            return {"inventory_path": path, "sbom_path": path if sbom else None, "rescanned_from": plan.inventory.audit_id}
        return {"inventory_path": stored, "sbom_path": stored if sbom else None}

    def write_meta(self, folder: str, meta: AuditMeta, log: ScanLogger, pointer: PointerLookup = None) -> None:
        try:
            self.blob_store.upload_bytes(f"{folder}/{META_BLOB}", meta.to_json_bytes(), JSON_CONTENT_TYPE)
        except StorageError as error:
            log.error("meta could not be written", fields={"error": str(error)})
            raise AuditNotRecorded(f"the audit's meta could not be written to {folder}/{META_BLOB}: {error}") from None
        self.index(meta, folder, log, pointer)

    def index(self, meta: AuditMeta, folder: str, log: ScanLogger, pointer: PointerLookup = None) -> None:
        """The meta is the contract; the index only serves the HTTP API, so a failure
        here is logged (the audit is indexed again on redelivery or by ``reindex``)."""
        if self.audit_index is None:
            return
        try:
            record_in_index(self.audit_index, meta, folder, pointer)
        except Exception as error:  # noqa: BLE001 - the index must never fail an audit that is recorded
            log.warning("audit index not updated", fields={"error": self.scanner.redactor(str(error))})
