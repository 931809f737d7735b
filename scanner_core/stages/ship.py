"""The ship stage: ``scan-result.json``, the inventory, ``meta`` last, the index; then the follow-up.

* The report is uploaded in parallel blocks and summarised from the very bytes the upload
  reads (``AzureBlobStore.upload_file_observed``): one read of the file serves both, and the
  parsing overlaps the block uploads (issue 11). A store without that method (a test double)
  uploads first, then the file is read.
* The inventory (issue 18): a CycloneDX SBOM of the report (``trivy convert``, no second
  scan) stored as ``sbom.cdx.json`` beside it; converted and uploaded on the I/O pool while
  the report uploads. An inventory rescan stores none: its meta names the one it matched.
* The follow-up (``follow_up/``): ``annotate`` (previous audit, changes, decision)
  before the meta is written, ``notify`` after it.
* The audit index's pointer is looked up (one HEAD) while trivy runs, on the process's I/O
  pool, instead of after the meta.

A reader who sees a meta can trust its folder: everything else is written first, then
``meta``, then the index entries (the rows and the pointer, written side by side), beside the
approval follow-up and the image record (issue 26.3: each needs only the meta). The approval
request the policy's decision reads is read while trivy runs when the request names a digest.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..approvals import SeenRequest
from ..audit import AuditOutcome
from ..errors import AuditNotRecorded, FailureKind, ScannerError, StorageError
from ..exploits import enrich_fields
from ..follow_up import AuditFollowUp, LookBack
from ..io_pool import io_pool
from ..log import ScanLogger
from ..models import AuditMeta, AuditResult
from ..report import write_packages_only
from ..storage import META_BLOB, REPORT_BLOB, SBOM_BLOB, AuditIndex, BlobStore, FleetState
from ..telemetry import count_state_failure, traced
from ..trivy import ReportSummariser, ReportSummary, ServerInfo, TrivyRun, summarise_report
from ..verdict import verdict_fields
from .parts import ScannerParts
from .plan import Plan
from .server_mode import database_fields
from .suppressions import os_info, suppression_fields

JSON_CONTENT_TYPE = "application/json"
CYCLONEDX_CONTENT_TYPE = "application/vnd.cyclonedx+json"
PointerLookup = Optional["Future[dict[str, str] | None]"]


BACKGROUND_PARSE_BYTES = 4 * 1024 * 1024  # above this, the summary is parsed on a thread of its own
_QUEUED_CHUNKS = 1  # a chunk read but not parsed yet: at most 4 MiB


@traced("upload")
def upload_report(store: BlobStore, name: str, path: Path, content_type: str, summariser: ReportSummariser) -> None:
    """Uploads the report, feeding ``summariser`` with its bytes when the store can.

    For a big report the parsing runs on a thread of its own, so that the thread
    that reads the file hands each block to the uploaders at once instead of after
    parsing it; a small one (a single PUT) is parsed in line."""
    observed = getattr(store, "upload_file_observed", None)
    if observed is None:
        store.upload_file(name, path, content_type)
        return
    if path.stat().st_size <= BACKGROUND_PARSE_BYTES:
        observed(name, path, content_type, summariser.feed)
        return
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)

    def parse() -> None:
        while (chunk := chunks.get()) is not None:
            summariser.feed(chunk)

    parser = threading.Thread(target=parse, name="report-summary", daemon=True)
    parser.start()
    try:
        observed(name, path, content_type, chunks.put)
    finally:
        chunks.put(None)
        parser.join()


def finish_summary(summariser: ReportSummariser, path: Path) -> tuple[ReportSummary, bool]:
    """The summary, and whether the summariser saw the whole report; it is read from
    the file only when the upload did not see all of it (it failed half-way, or the
    store could not show its bytes)."""
    if summariser.error is None and summariser.bytes_fed == path.stat().st_size:
        return summariser.close(), True
    if summariser.error is not None:
        summariser.close()  # raises the parse error: the report is not JSON
    return summarise_report(path), False


@dataclass(frozen=True)
class Ahead:
    """What a scan asks while trivy runs: the index pointer, the trivy server's DB age
    (client/server mode), the previous audit of the image (the monitor's changes) and, for a
    request by digest, its approval request (the accepted findings the policy's decision needs)."""

    pointer: Future[dict[str, str] | None] | None
    server: Future[ServerInfo] | None
    looked_back: Future[LookBack] | None
    approval: Future[SeenRequest | None] | None = None  # the digest's approval request (issue 26.3)


def upload_failed_fields(failure: Exception) -> dict[str, object]:
    """What a meta says when the scan succeeded but its report could not be stored."""
    return {
        "audit_result": AuditResult.UPLOAD_FAILED,
        "failure_description": f"the scan succeeded but its report could not be stored: {failure}",
        "failure_reason": "upload-failed",
        "failure_kind": FailureKind.TRANSIENT.value,
        "trivy_audit_path": None,
    }


def lookup_ahead(index: AuditIndex | None, audit_id: str) -> Future[dict[str, str] | None] | None:
    return io_pool().submit(index.lookup, audit_id) if index is not None else None


@traced("index")
def record_in_index(
    index: AuditIndex, meta: AuditMeta, folder: str, pointer: Future[dict[str, str] | None] | None
) -> None:
    """Records the audit, with the pointer looked up ahead when that lookup worked."""
    if pointer is not None:
        try:
            looked_up = pointer.result()
        except Exception:  # noqa: BLE001 - the lookup failed: record() asks again
            pointer = None
        else:
            index.record(meta, folder, known_pointer=looked_up)
            return
    index.record(meta, folder)


class Shipper:
    """The ship stage of one scanner."""

    def __init__(self, scanner: ScannerParts, blob_store: BlobStore, audit_index: AuditIndex | None,
                 fleet_state: Callable[[], FleetState] | None = None) -> None:
        self.scanner = scanner
        self.blob_store = blob_store
        self.audit_index = audit_index
        self.fleet_state = fleet_state  # issue 24: the image's current state, written beside the index

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
        collect_keys, current_keys = follow_up.key_collector(plan.base.audit_id)
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
        verdict = verdict_fields(summary, settings)  # then KEV and EPSS (exploits/) for its details
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
                **verdict,
                **enrich_fields(verdict["details"], summary.vulnerability_ids, settings),  # type: ignore[arg-type]
                **self._inventory_fields(plan, inventory_path),
            }
        )
        if plan.inventory is not None and meta.secrets is not None:
            # An inventory has no files to search: the secrets are those its image scan found.
            meta = meta.model_copy(update={"secrets": plan.inventory.secrets, "secrets_from": plan.inventory.audit_id})
        if failure is not None:
            meta = meta.model_copy(update=upload_failed_fields(failure))
        meta = follow_up.annotate(
            meta, report_path, log, looked_back=ahead.looked_back, current_keys=current_keys if read_once else None,
            report=summariser.decoded if read_once else None,  # decoded once: the policy's facts read it too
            approval=ahead.approval,
        )
        meta = meta.model_copy(update={"timestamp": int(time.time())})
        outcome = AuditOutcome(meta=meta, folder=folder, meta_written=True, failure=failure, summary=summary)
        remembered = io_pool().submit(remember, outcome) if remember is not None and outcome.succeeded else None
        self.put_meta(folder, meta, log)
        # After the meta, side by side (issue 26.3): the index, the approval request and the webhook
        # (follow_up.notify), the image record. Each needs only the meta; none fails the audit.
        # In this context (contextvars: the scan's trace), so the index's span stays the scan's.
        indexed = threading.Thread(target=contextvars.copy_context().run, name="audit-index",
                                   args=(self.index, meta, folder, log, ahead.pointer))  # fmt: skip
        indexed.start()
        try:
            follow_up.notify(meta, folder, log)
        finally:
            indexed.join()
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
        source = report_path
        if self.scanner.config.settings.scan_sbom != "cyclonedx":
            # Only the inventory (rescans match packages): converted without the findings, a
            # fraction of the CPU (issue 26). SCAN_SBOM=cyclonedx keeps trivy's whole SBOM.
            source = report_path.with_name("inventory-input.json")
            write_packages_only(report_path, source)
        self.scanner.trivy.convert_to_cyclonedx(source, sbom_path, self.scanner.config.settings.trivy_timeout_ms,
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
        """The meta, then the index."""
        self.put_meta(folder, meta, log)
        self.index(meta, folder, log, pointer)

    def put_meta(self, folder: str, meta: AuditMeta, log: ScanLogger) -> None:
        try:
            self.blob_store.upload_bytes(f"{folder}/{META_BLOB}", meta.to_json_bytes(), JSON_CONTENT_TYPE)
        except StorageError as error:
            log.error("meta could not be written", fields={"error": str(error)})
            raise AuditNotRecorded(f"the audit's meta could not be written to {folder}/{META_BLOB}: {error}") from None

    def index(self, meta: AuditMeta, folder: str, log: ScanLogger, pointer: PointerLookup = None) -> None:
        """The meta is the contract; the index only serves the HTTP API, so a failure
        here is logged (the audit is indexed again on redelivery or by ``reindex``).
        The fleet state is written beside the index entries, on the I/O pool."""
        state_written = io_pool().submit(self.record_state, meta, folder, log) if self.fleet_state else None
        try:
            if self.audit_index is not None:
                record_in_index(self.audit_index, meta, folder, pointer)
        except Exception as error:  # noqa: BLE001 - the index must never fail an audit that is recorded
            log.warning("audit index not updated", fields={"error": self.scanner.redactor(str(error))})
        finally:
            if state_written is not None:
                state_written.result()

    def record_state(self, meta: AuditMeta, folder: str, log: ScanLogger) -> None:
        """The one write of the image's current state (issue 24; storage/fleet_state.py), then its
        rows in the sorted pages. Never raises: a failure is logged (the state's counted), and
        ``reindex`` rebuilds both."""
        if self.fleet_state is None:
            return
        try:
            state = self.fleet_state()
            changed = state.record(meta, folder)
        except Exception as error:  # noqa: BLE001 - the state must never fail an audit that is recorded
            count_state_failure()
            log.warning("fleet state not updated; `python -m scanner_core reindex` rebuilds it",
                        fields={"error": self.scanner.redactor(str(error))[:500]})
            return
        if not changed:
            return
        try:  # after the state is visible: the sorted pages' rows (storage/fleet_order.py) follow it
            state.sync_order_of(meta)
        except Exception as error:  # noqa: BLE001 - the next audit of the image or reindex repairs them
            log.warning("fleet order not updated; `python -m scanner_core reindex` rebuilds it",
                        fields={"error": self.scanner.redactor(str(error))[:500]})
