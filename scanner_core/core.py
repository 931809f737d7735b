"""The core: one scan request in, one audit folder out.

It glues the parts together (configuration, registry credentials, trivy,
Blob Storage) and decides what the audit's ``meta`` says. It never touches a
queue: it reports what happened (``AuditOutcome``) and whether trying again
may help, and the caller (the queue trigger, the one-time runner) acts on it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
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
from .log_records import install as install_log_redaction
from .models import AuditMeta, AuditResult
from .follow_up import AuditFollowUp
from .monitor import AuditReuse, MonitorStore
from .redact import Redactor
from .stages import (
    Ahead,
    DbSnapshot,
    Plan,
    Planner,
    RescanServer,
    RunStage,
    Shipper,
    ask_server_ahead,
    database_for,
    lookup_ahead,
    rescan_server_for,
    server_connection,
    snapshot_for,
)
from .storage import (
    META_BLOB,
    REPORT_BLOB,
    AuditIndex,
    AzureBlobStore,
    BlobStore,
    FleetState,
    audit_folder,
    fleet_state_of,
    validate_audit_id,
)
from .trivy import (
    JAVA_DB,
    VULNERABILITY_DB,
    ScanTarget,
    ServerConnection,
    Trivy,
    VulnerabilityDatabase,
    locate_trivy,
)
from .telemetry import traced_scan

JSON_CONTENT_TYPE = "application/json"


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
        install_log_redaction(config.secrets)  # the exact secrets too, in every library's records
        self.logger = logger or ScanLogger(config.settings.log_format, self.redactor)
        sas_url = config.settings.blob_container_url  # with a SAS, or plain for the app's identity
        self.blob_store = blob_store or AzureBlobStore(sas_url, self.redactor)
        # The HTTP API's index beside the metas; a caller that brings its own store brings its own index.
        self.audit_index = audit_index or (
            AuditIndex(sas_url, config.settings.scanner_short_id) if blob_store is None else None
        )
        self._trivy = trivy
        self._app_root = app_root
        self.rescan_server: RescanServer | None = None  # a batch's loopback trivy server (serving_rescans)

    @property
    def trivy(self) -> Trivy:
        """Located on first use, so a misplaced binary fails a scan (transient), not start-up."""
        if self._trivy is None:
            self._trivy = Trivy(locate_trivy(self.config.settings.trivy_path, self._app_root), self.redactor)
        return self._trivy

    # The collaborators: each built once per scanner, on first use, and handed to the stages
    # through ``stages.ScannerParts``. A scanner serves one invocation (the function app), one
    # run (the one-time runner) or one worker thread's messages (the listener), so none holds
    # anything that expires (a DB mirror's credentials are resolved when a download needs them)
    # or that belongs to one audit (the follow-up keys what it keeps by audit id). The
    # per-process caches (clients, the config, trivy's version, ACR tokens) are the layers' own.

    @cached_property
    def database(self) -> VulnerabilityDatabase:
        settings = self.config.settings
        return database_for(self.config, self.trivy, VULNERABILITY_DB, settings.trivy_db_repository,
                            not settings.trivy_skip_db_update, self.db_snapshot)  # fmt: skip

    @cached_property
    def java_database(self) -> VulnerabilityDatabase:
        """The Java DB, needed by images with Java archives; managed like the vulnerability DB."""
        settings = self.config.settings
        return database_for(self.config, self.trivy, JAVA_DB, settings.trivy_java_db_repository,
                            settings.java_db_updates_allowed, self.db_snapshot)  # fmt: skip

    @cached_property
    def db_snapshot(self) -> DbSnapshot | None:
        """``DB_SNAPSHOT=blob``: the fleet's DB snapshot beside the audits (db_snapshot.py)."""
        return snapshot_for(self.config, self.redactor, self.logger)

    @cached_property
    def follow_up(self) -> AuditFollowUp:
        """previous-audit-id, changes and decision before the meta; the notification after.
        One per scanner, so that the digest's approval request read for the policy is the one
        the approvals' book uses after the meta (one read per audit, dedup answers included)."""
        return AuditFollowUp(self.config, self.blob_store, self.audit_index, self.redactor)

    @cached_property
    def server(self) -> ServerConnection | None:
        """``TRIVY_SERVER``: scans ask that trivy server (client/server mode)."""
        return server_connection(self.config)

    @contextmanager
    def serving_rescans(self, rescans: int) -> Iterator[RescanServer | None]:
        """A batch of ``rescans`` inventory rescans: their ``trivy sbom`` runs ask one loopback
        trivy server that keeps the DB open, started here and stopped afterwards (or none:
        ``stages/rescan_server.py`` says when)."""
        with rescan_server_for(self, rescans, self.logger) as server:
            self.rescan_server = server
            try:
                yield server
            finally:
                self.rescan_server = None

    def succeeded_audit(self, request: ScanRequest) -> AuditMeta | None:
        """The meta of ``request``'s audit when it is recorded as succeeded (a redelivered batch
        does not hand it on again); ``None`` when it is not, or cannot be told."""
        folder = audit_folder(self.short_id, request.requested_at, validate_audit_id(request.audit_id))
        return self._succeeded_meta(folder)

    @property
    def short_id(self) -> str:
        return self.config.settings.scanner_short_id

    @traced_scan
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
        plan = Plan(self._base_meta(audit_id, request))  # the stages (stages/): plan, run, ship
        try:
            self.planner.plan(plan, request, log)
            assert plan.target is not None
            if (reused := self._reuse(request, plan.target, plan.base, folder, log)) is not None:
                return reused
            # The index pointer, the previous audit, the server's DB age and the approval are asked while trivy runs.
            ahead = Ahead(lookup_ahead(self.audit_index, audit_id), ask_server_ahead(self.server),
                          self.follow_up.look_back(plan.base), self.follow_up.read_approval_ahead(plan.base))  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="scan-", dir=plan.scratch) as workdir:
                run = self.run_stage.run(plan, Path(workdir) / REPORT_BLOB, log)
                target = plan.target
                return self.shipper.ship(plan, run, folder, log, ahead,
                                         lambda outcome: self._remember(request, target, outcome, log))
        except (RequestError, ScanFailed) as failure:
            return self._failed(plan.base, folder, failure, final_attempt, log)
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
            return self._failed(plan.base, folder, unexpected, final_attempt, log)

    def record_failure(self, request: ScanRequest, failure: ScanFailed) -> AuditOutcome:
        """Records ``failure`` in the audit's ``meta`` without scanning (e.g. a request
        whose deliveries never finished). Raises like ``scan``."""
        audit_id = validate_audit_id(request.audit_id)
        folder = audit_folder(self.short_id, request.requested_at, audit_id)
        log = self.logger.bind(audit_id=audit_id, image=request.image)
        return self._failed(self._base_meta(audit_id, request), folder, failure, True, log)

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

    @cached_property
    def planner(self) -> Planner:
        return Planner(self.config, lambda: self.reuse.store if self.reuse is not None else None)

    @cached_property
    def run_stage(self) -> RunStage:
        return RunStage(self, self.planner, self.blob_store)

    @cached_property
    def shipper(self) -> Shipper:
        return Shipper(self, self.blob_store, self.audit_index, self.fleet_state if self.audit_index is not None else None)

    def fleet_state(self) -> FleetState:
        """The image states (issue 24; storage/fleet_state.py), beside this scanner's own index."""
        return fleet_state_of(self.config.settings)

    @cached_property
    def reuse(self) -> AuditReuse | None:
        """Dedup and the images' latest audits (monitor/); off for a caller's own blob store."""
        if not isinstance(self.blob_store, AzureBlobStore):
            return None
        return AuditReuse(self.config, MonitorStore(self.config.settings.blob_container_url, self.short_id), self.blob_store)

    def _reuse(
        self, request: ScanRequest, target: ScanTarget, base: AuditMeta, folder: str, log: ScanLogger
    ) -> AuditOutcome | None:
        """Dedup (monitor/reuse.py): answered from an earlier audit, trivy not run."""
        if self.reuse is None or self.refresh_db_before_scan:
            return None
        answer = self.reuse.answer(request, target.image, base, folder, self.database, lambda: self.trivy.version(), log)
        if answer is None:
            return None
        meta, scanned_at, earlier = answer
        meta = self.follow_up.annotate_reused(meta, earlier, log)
        self._write_meta(folder, meta, log)
        self.follow_up.notify(meta, folder, log)
        outcome = AuditOutcome(meta=meta, folder=folder, meta_written=True)
        self._remember(request, target, outcome, log, scanned_at)
        return outcome

    def _remember(self, request: ScanRequest, target: ScanTarget, outcome: AuditOutcome, log: ScanLogger,
                  scanned_at: int | None = None) -> None:  # fmt: skip
        if self.reuse is None or target.image is None or not outcome.succeeded:
            return
        try:
            self.reuse.remember(outcome.meta, outcome.folder, request, target.image, scanned_at)
        except Exception as error:  # noqa: BLE001 - bookkeeping never fails a recorded audit
            log.warning("image record not updated", fields={"error": self.redactor(str(error))})

    def _base_meta(self, audit_id: str, request: ScanRequest) -> AuditMeta:
        return AuditMeta(
            audit_id=audit_id,
            scanner_id=str(self.config.settings.scanner_identifier),
            scanner_version=__version__,
            timestamp=int(time.time()),
            requested_at=int(request.requested_at.timestamp()),
            trigger=request.trigger,  # type: ignore[arg-type]
            requested_by=request.requested_by,
            audit_result=AuditResult.AUDIT_FAILED,
            image=request.image,
            image_tag=request.image,
        )

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
        self.shipper.write_meta(folder, meta, log)

    def _index(self, meta: AuditMeta, folder: str, log: ScanLogger) -> None:
        self.shipper.index(meta, folder, log)
