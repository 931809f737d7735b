"""The core: one scan request in, one audit folder out.

It glues the parts together (configuration, registry credentials, trivy,
Blob Storage) and decides what the audit's ``meta`` says. It never touches a
queue: it reports what happened (``AuditOutcome``) and whether trying again
may help, and the caller (the queue trigger, the one-time runner) acts on it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from . import __version__
from .audit import AuditOutcome, ScanRequest
from .config import ScannerConfig
from .errors import (
    AuditNotRecorded,
    FailureKind,
    InvalidImageReference,
    RequestError,
    ScanFailed,
    ScannerError,
    StorageError,
)
from .log import ScanLogger
from .models import AuditMeta, AuditResult
from .monitor import AuditFollowUp
from .redact import Redactor
from .registry import (
    ImageReference,
    find_credentials,
    image_name_from_archive,
    parse_image_reference,
    resolve_credentials,
)
from .storage import (
    META_BLOB,
    REPORT_BLOB,
    SBOM_BLOB,
    AuditIndex,
    AzureBlobStore,
    BlobStore,
    audit_folder,
    validate_audit_id,
)
from .trivy import (
    ReportSummary,
    ScanTarget,
    Trivy,
    TrivyOptions,
    VulnerabilityDatabase,
    locate_trivy,
    read_database_info,
    summarise_report,
)
from .verdict import Thresholds, judge

JSON_CONTENT_TYPE = "application/json"
CYCLONEDX_CONTENT_TYPE = "application/vnd.cyclonedx+json"


class Scanner:
    """Scans images and ships the results; stateless between requests."""

    def __init__(
        self,
        config: ScannerConfig,
        *,
        blob_store: BlobStore | None = None,
        trivy: Trivy | None = None,
        logger: ScanLogger | None = None,
        app_root: Path | None = None,
        refresh_db_before_scan: bool = False,
        audit_index: AuditIndex | None = None,
    ) -> None:
        self.config = config
        self.refresh_db_before_scan = refresh_db_before_scan
        self.redactor = Redactor(config.secrets)
        self.logger = logger or ScanLogger(config.settings.log_format, self.redactor)
        sas_url = config.settings.blob_container_url  # with a SAS, or plain for the app's identity
        self.blob_store = blob_store or AzureBlobStore(sas_url, self.redactor)
        # The HTTP API's index beside the metas; a caller that brings its own store brings its own index.
        self.audit_index = audit_index or (
            AuditIndex(sas_url, config.settings.scanner_short_id) if blob_store is None else None
        )
        self._trivy = trivy
        self._app_root = app_root

    @property
    def trivy(self) -> Trivy:
        """Located on first use, so a misplaced binary fails a scan (transient), not start-up."""
        if self._trivy is None:
            self._trivy = Trivy(locate_trivy(self.config.settings.trivy_path, self._app_root), self.redactor)
        return self._trivy

    @property
    def database(self) -> VulnerabilityDatabase:
        settings = self.config.settings
        credentials, insecure = None, False
        if settings.trivy_db_repository:
            # A private DB mirror uses the credentials configured for its registry.
            registry = find_credentials(
                parse_image_reference(settings.trivy_db_repository[0], "TRIVY_DB_REPOSITORY"),
                self.config.file.registries,
            )
            try:
                credentials = resolve_credentials(registry)
            except ScanFailed as failure:
                # A refused or unreachable token exchange must not stop scans with a usable DB;
                # a download without credentials then fails as unauthorized (db-unavailable).
                self.logger.warning("no credentials for the DB mirror", fields={"error": str(failure)})
            insecure = bool(registry and registry.insecure)
        return VulnerabilityDatabase(
            settings.trivy_cache_dir,
            self.trivy,
            repositories=settings.trivy_db_repository,
            updates_allowed=not settings.trivy_skip_db_update,
            timeout_ms=settings.trivy_timeout_ms,
            credentials=credentials,
            insecure=insecure,
        )

    @property
    def follow_up(self) -> AuditFollowUp:
        """previous-audit-id, changes and decision before the meta; the notification after."""
        return AuditFollowUp(self.config, self.blob_store, self.audit_index, self.redactor)

    @property
    def short_id(self) -> str:
        return self.config.settings.scanner_short_id

    def scan(self, request: ScanRequest, *, final_attempt: bool = True, reuse_succeeded: bool = False) -> AuditOutcome:
        """Runs one audit. Returns its outcome; raises ``RequestError`` when the
        audit id is unusable (no folder can be named), and ``AuditNotRecorded``
        when not even ``meta`` could be written.

        ``reuse_succeeded``: a redelivered request whose audit already succeeded
        is answered from its meta instead of being scanned again.
        """
        audit_id = validate_audit_id(request.audit_id)
        folder = audit_folder(self.short_id, request.requested_at, audit_id)
        log = self.logger.bind(audit_id=audit_id, image=request.image or (request.input_tar and str(request.input_tar)))
        if reuse_succeeded and (existing := self._succeeded_meta(folder)) is not None:
            log.info("audit already recorded as succeeded; not scanned again", fields={"folder": folder})
            self._index(existing, folder, log)  # cheap, idempotent repair of a missed index entry
            self.follow_up.notify(existing, folder, log)  # sent at most once: a no-op when it was
            return AuditOutcome(meta=existing, folder=folder, meta_written=True)
        log.info("scan requested", fields={"folder": folder, "final-attempt": final_attempt})
        base = self._base_meta(audit_id, request)

        try:
            target, label = self._target(request)
            base = base.model_copy(update={"image": label})
            with tempfile.TemporaryDirectory(prefix="scan-") as workdir:
                report_path = Path(workdir) / REPORT_BLOB
                self._run_trivy(target, report_path, log)
                summary = summarise_report(report_path)
                return self._ship(base, folder, report_path, summary, log)
        except (RequestError, ScanFailed) as failure:
            return self._failed(base, folder, failure, final_attempt, log)
        except (AuditNotRecorded, StorageError):
            raise
        except Exception as error:  # noqa: BLE001 - an unforeseen fault still ends as a recorded, retried failure
            # Not log.exception: a traceback's text would bypass the redactor.
            log.error("unexpected error during the scan", fields={"error-type": type(error).__name__})
            unexpected = ScanFailed(
                f"unexpected error: {type(error).__name__}: {self.redactor(str(error))[:500]}",
                kind=FailureKind.TRANSIENT,
                reason="internal-error",
            )
            return self._failed(base, folder, unexpected, final_attempt, log)

    def _succeeded_meta(self, folder: str) -> AuditMeta | None:
        try:
            data = self.blob_store.download_bytes(f"{folder}/{META_BLOB}")
        except StorageError:
            return None  # cannot tell: scan again, which is safe
        if data is None:
            return None
        try:
            meta = AuditMeta.model_validate_json(data)
        except ValueError:
            return None
        return meta if meta.audit_result is AuditResult.SUCCEEDED else None

    def _target(self, request: ScanRequest) -> tuple[ScanTarget, str]:
        image: ImageReference | None = None
        if request.image:
            image = parse_image_reference(request.image, request.image_field)
        if request.input_tar is not None:
            if not request.input_tar.is_file():
                raise RequestError("input", f"{request.input_tar} does not exist or is not a file")
            label = request.image or image_name_from_archive(request.input_tar) or request.input_tar.name
            return ScanTarget(image=image, input_tar=request.input_tar), label
        if image is None:
            raise RequestError("image", "an image reference or an image tarball is required")
        return ScanTarget(image=image), request.image or image.canonical

    def _run_trivy(self, target: ScanTarget, report_path: Path, log: ScanLogger) -> None:
        settings = self.config.settings
        database = self.database
        try:
            if self.refresh_db_before_scan:
                database.refresh()
            else:
                database.ensure()
        except ScanFailed as failure:
            if not database.usable():
                raise
            # An unreachable or rate-limited DB host never fails a scan that has a usable DB.
            log.warning("DB refresh failed; scanning with the DB in place", fields={"error": str(failure)})
        registry = find_credentials(target.image, self.config.file.registries) if target.image else None
        options = TrivyOptions(
            cache_dir=settings.trivy_cache_dir,
            timeout_ms=settings.trivy_timeout_ms,
            # Scans only read the DB; VulnerabilityDatabase downloads it (see database.py).
            skip_db_update=True,
            cache_backend="memory",
            offline_scan=settings.trivy_offline_scan,
            db_repositories=tuple(settings.trivy_db_repository),
            insecure_registry=bool(registry and registry.insecure),
            severities=tuple(settings.trivy_severity),
            ignore_unfixed=settings.trivy_ignore_unfixed,
            scanners=tuple(settings.trivy_scanners),
        )
        self.trivy.scan(target, options, report_path, resolve_credentials(registry))

    def _base_meta(self, audit_id: str, request: ScanRequest) -> AuditMeta:
        return AuditMeta(
            audit_id=audit_id,
            scanner_id=str(self.config.settings.scanner_identifier),
            scanner_version=__version__,
            timestamp=int(time.time()),
            requested_at=int(request.requested_at.timestamp()),
            audit_result=AuditResult.AUDIT_FAILED,
            image=request.image,
        )

    def _ship(
        self, base: AuditMeta, folder: str, report_path: Path, summary: ReportSummary, log: ScanLogger
    ) -> AuditOutcome:
        """``scan-result.json`` first, ``meta`` last: a reader who sees a meta can trust its folder."""
        database = read_database_info(self.config.settings.trivy_cache_dir)
        meta = base.model_copy(
            update={
                "audit_result": AuditResult.SUCCEEDED,
                "image_digest": summary.image_digest,
                "image_id": summary.image_id,
                "trivy_version": self.trivy.version(),
                "trivy_db_updated_at": database.updated_at,
                "trivy_db_next_update": database.next_update,
                "trivy_audit_path": f"{folder}/{REPORT_BLOB}",
                **self._verdict_fields(summary),
            }
        )
        failure: ScannerError | None = None
        try:
            self.blob_store.upload_file(f"{folder}/{REPORT_BLOB}", report_path, JSON_CONTENT_TYPE)
            if self.config.settings.scan_sbom == "cyclonedx":
                meta = meta.model_copy(update={"sbom_path": self._ship_sbom(folder, report_path)})
        except StorageError as error:
            failure = error
            meta = meta.model_copy(
                update={
                    "audit_result": AuditResult.UPLOAD_FAILED,
                    "failure_description": f"the scan succeeded but its report could not be stored: {error}",
                    "failure_reason": "upload-failed",
                    "failure_kind": FailureKind.TRANSIENT.value,
                    "trivy_audit_path": None,
                }
            )
        meta = self.follow_up.annotate(meta, report_path, log)
        meta = meta.model_copy(update={"timestamp": int(time.time())})
        self._write_meta(folder, meta, log)
        self.follow_up.notify(meta, folder, log)
        log.info(
            "audit recorded",
            fields={"audit-result": meta.audit_result.value, "meta": f"{folder}/{META_BLOB}", **_counts(summary)},
        )
        return AuditOutcome(meta=meta, folder=folder, meta_written=True, failure=failure, summary=summary)

    def _ship_sbom(self, folder: str, report_path: Path) -> str:
        sbom_path = report_path.with_name(SBOM_BLOB)
        self.trivy.convert_to_cyclonedx(report_path, sbom_path, self.config.settings.trivy_timeout_ms)
        self.blob_store.upload_file(f"{folder}/{SBOM_BLOB}", sbom_path, CYCLONEDX_CONTENT_TYPE)
        return f"{folder}/{SBOM_BLOB}"

    def _verdict_fields(self, summary: ReportSummary) -> dict[str, object]:
        settings = self.config.settings
        thresholds = Thresholds(critical=settings.trivy_critical_threshold, high=settings.trivy_high_threshold)
        verdict = judge(summary, thresholds)
        return {
            "vulnerabilities": verdict.vulnerabilities.model_dump(),
            # trivy's default scanners include "secret": then 0 is a finding too.
            "secrets": summary.secrets if not settings.trivy_scanners or "secret" in settings.trivy_scanners else None,
            "scan_status": verdict.status.value,
            "summary": verdict.summary,
            "critical_threshold": thresholds.critical,
            "high_threshold": thresholds.high,
            "details": verdict.details,
        }

    def _failed(
        self, base: AuditMeta, folder: str, failure: RequestError | ScanFailed, final_attempt: bool, log: ScanLogger
    ) -> AuditOutcome:
        kind = failure.kind
        reason = getattr(failure, "reason", None) or (
            "invalid-image" if isinstance(failure, InvalidImageReference) else f"invalid-{failure.field}"  # type: ignore[union-attr]
        )
        meta = base.model_copy(
            update={
                "timestamp": int(time.time()),
                "failure_description": self.redactor(str(failure)),
                "failure_reason": reason,
                "failure_kind": kind.value,
                "trivy_version": self._trivy_version_or_none(),
            }
        )
        if kind is FailureKind.TRANSIENT and not final_attempt:
            log.warning("scan failed, will be retried", fields={"reason": reason, "error": str(failure)})
            return AuditOutcome(meta=meta, folder=folder, meta_written=False, failure=failure)
        self._write_meta(folder, meta, log)
        log.error("scan failed", fields={"reason": reason, "kind": kind.value, "error": str(failure)})
        return AuditOutcome(meta=meta, folder=folder, meta_written=True, failure=failure)

    def _trivy_version_or_none(self) -> str | None:
        try:
            return self.trivy.version()
        except ScannerError:
            return None

    def _write_meta(self, folder: str, meta: AuditMeta, log: ScanLogger) -> None:
        try:
            self.blob_store.upload_bytes(f"{folder}/{META_BLOB}", meta.to_json_bytes(), JSON_CONTENT_TYPE)
        except StorageError as error:
            log.error("meta could not be written", fields={"error": str(error)})
            raise AuditNotRecorded(f"the audit's meta could not be written to {folder}/{META_BLOB}: {error}") from None
        self._index(meta, folder, log)

    def _index(self, meta: AuditMeta, folder: str, log: ScanLogger) -> None:
        """The meta is the contract; the index only serves the HTTP API, so a failure
        here is logged (the audit is indexed again on redelivery or by ``reindex``)."""
        if self.audit_index is None:
            return
        try:
            self.audit_index.record(meta, folder)
        except Exception as error:  # noqa: BLE001 - the index must never fail an audit that is recorded
            log.warning("audit index not updated", fields={"error": self.redactor(str(error))})


def _counts(summary: ReportSummary) -> dict[str, int]:
    return {severity.lower(): count for severity, count in summary.counts.items()}

