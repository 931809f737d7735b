"""What the monitor adds to each succeeded audit, in two steps around the
writing of its ``meta``: before, ``previous-audit-id``, ``changes``, the
policy's decision and ``decision`` (``annotate``, ``gate.py``); after, the image's
approval request (created, refreshed or revoked: ``approvals/``) and the webhook
notification (``notify``).

Neither step ever fails or blocks an audit for long: errors are logged and
the audit goes on without the annotation or the notification.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..approvals import ApprovalBook, ApprovalStore, SeenRequest, approval_id, approval_subject, read_request
from ..config import ScannerConfig
from ..log import ScanLogger
from ..models import AcceptedRisk, AuditMeta, AuditResult
from ..policy import ExploitLookup
from ..redact import Redactor
from ..io_pool import io_pool
from ..storage import AuditIndex, BlobStore, fleet_state_of, image_identity
from ..trivy import severity_rank
from .changes import Key, compare, current_findings, find_previous, findings_of, previous_findings
from ..telemetry import traced
from .decision import decide
from .gate import policy_fields, policy_of
from .notify import Delivery, Notifier, build_event, should_notify
from .queries import QueryFollowUp

if TYPE_CHECKING:
    from ..report import DecodedReport, Vulnerability


@dataclass(frozen=True)
class LookBack:
    """The previous audit of an image, as ``annotate`` compares with it."""

    identity: tuple[str | None, str | None, str | None]  # (repository, tag, digest) it was looked up for
    previous: AuditMeta | None
    previous_keys: set[Key]
    previous_id: str | None


def _same_previous(
    asked: tuple[str | None, str | None, str | None], final: tuple[str | None, str | None, str | None]
) -> bool:
    """Whether a look-up made before the digest was known stands: ``find_previous``
    matches by tag when there is one, by digest only without a tag."""
    if asked[0] != final[0] or asked[1] != final[1]:
        return False
    return asked[1] is not None or asked[2] == final[2]


class AuditFollowUp:
    """One scanner's follow-up of its audits (see the module's docstring)."""

    def __init__(
        self,
        config: ScannerConfig,
        blob_store: BlobStore,
        audit_index: AuditIndex | None,
        redactor: Redactor,
        *,
        notifier: Notifier | None = None,
        exploits: ExploitLookup | None = None,
    ) -> None:
        settings = config.settings
        self.config = config
        self.settings = settings
        self.blob_store = blob_store
        self.exploits = exploits
        self.audit_index = audit_index
        self.redactor = redactor
        self.notifier = notifier or Notifier.from_settings(settings, blob_store)
        self._seen: SeenRequest | None = None  # the digest's approval request, read once per audit
        self.queries = QueryFollowUp(settings, audit_index, self._describe)  # the fleet query tables

    def annotate_reused(self, meta: AuditMeta, earlier: AuditMeta, log: ScanLogger) -> AuditMeta:
        """The same for an audit answered from ``earlier`` (dedup, ``reuse.py``): its
        findings are the earlier audit's, read from its details or stored report."""
        keys: set[Key] | None = None
        if self.audit_index is not None:
            folder = (earlier.trivy_audit_path or "").rsplit("/", 1)[0]
            try:
                keys = findings_of(self.audit_index, earlier, folder, self.settings.notify_min_severity)
            except Exception as error:  # noqa: BLE001 - a comparison never fails an audit
                log.warning("the earlier audit's findings cannot be read", fields={"error": self._describe(error)})
        report = None
        if earlier.trivy_audit_path and policy_of(self.config).needs_report:
            try:
                report = self.blob_store.download_bytes(earlier.trivy_audit_path)
            except Exception as error:  # noqa: BLE001 - the policy then judges from the meta
                log.warning("the earlier audit's report cannot be read", fields={"error": self._describe(error)})
        if keys is None:
            return meta.model_copy(update=self._policy(meta, report, log))
        return self.annotate(meta, Path(), log, current_keys=keys, report=report)

    @traced("follow-up")
    def annotate(
        self,
        meta: AuditMeta,
        report_path: Path,
        log: ScanLogger,
        *,
        looked_back: Future[LookBack] | None = None,
        current_keys: set[Key] | None = None,
        report: bytes | DecodedReport | None = None,
        approval: Future[SeenRequest | None] | None = None,
    ) -> AuditMeta:
        """``meta`` with its decision and what changed since the previous audit of the image.

        ``looked_back``: ``look_back``'s answer, asked while the report uploaded;
        ``current_keys``: the report's keys, collected while it was read for the
        summary (``key_collector``); ``report``: the report already decoded for the summary
        (or a reused audit's bytes), so the policy's facts do not read it again; ``approval``:
        ``read_approval_ahead``'s answer, used when it is the request of the digest trivy
        scanned. Without them all are found here."""
        if meta.audit_result is not AuditResult.SUCCEEDED:
            return meta
        update = self._policy(meta, report if report is not None else report_path, log, approval)
        threshold = self.settings.notify_min_severity
        try:
            found = looked_back.result() if looked_back is not None else None
            if found is None or not _same_previous(found.identity, image_identity(meta.image, meta.image_digest)):
                found = self._look_back(meta)
            if current_keys is None:
                self.queries.incomplete(meta.audit_id)
                current_keys = current_findings(report_path, threshold)
            changes = compare(found.previous, found.previous_keys, meta.scan_status, current_keys)
            update |= {"previous_audit_id": found.previous_id, "changes": changes}
        except Exception as error:  # noqa: BLE001 - a comparison never fails an audit
            log.warning("changes since the previous audit not computed", fields={"error": self._describe(error)})
        return meta.model_copy(update=update)

    def look_back(self, meta: AuditMeta) -> Future[LookBack] | None:
        """The previous audit of ``meta``'s image (an index listing and a meta read), started
        on the process's I/O pool so that it runs beside the report upload (issue 11)."""
        if self.audit_index is None:
            return None
        return io_pool().submit(self._look_back, meta)

    def read_approval_ahead(self, meta: AuditMeta) -> Future[SeenRequest | None] | None:
        """The approval request of ``meta``'s digest (its accepted findings go into the policy's
        decision), read on the I/O pool while trivy runs (issue 26.3) when the digest is known
        before the scan: a request by digest (the watch, push events, rescans). ``None`` otherwise."""
        repository, _, digest = approval_subject(meta)
        if self.audit_index is None or not repository or not digest:
            return None
        return io_pool().submit(read_request, self._approvals(), meta)

    def key_collector(self, audit_id: str | None = None) -> tuple[Callable[[Vulnerability], None], set[Key]]:
        """A callback for the report summariser that gathers the keys ``annotate`` compares,
        so that the report is read once for the summary and the changes alike; with
        ``audit_id``, it also keeps every finding for the fleet query tables (``queries.py``)."""
        keys: set[Key] = set()
        limit = severity_rank(self.settings.notify_min_severity)
        keep = self.queries.collector(audit_id)

        def collect(finding: Vulnerability) -> None:
            if keep is not None:
                keep(finding)
            if finding.vulnerability_id and severity_rank(finding.severity) <= limit:
                keys.add(Key(finding.vulnerability_id, finding.pkg_name, finding.severity))

        return collect, keys

    def _look_back(self, meta: AuditMeta) -> LookBack:
        identity = image_identity(meta.image, meta.image_digest)
        if self.audit_index is not None and (row := find_previous(self.audit_index, meta)) is not None:
            found = previous_findings(self.audit_index, row, self.settings.notify_min_severity)
            if found is not None:
                return LookBack(identity, found[0], found[1], row.audit_id)
        return LookBack(identity, None, set(), None)

    def follow_approval(self, meta: AuditMeta, log: ScanLogger) -> str | None:
        """The image's approval request (``approvals/book.py``); off for a caller's own
        blob store (no index). Never fails the audit: errors are logged."""
        if self.audit_index is None or meta.audit_result is not AuditResult.SUCCEEDED:
            return None
        try:
            book = ApprovalBook(self._approvals(), self.notifier, revocation=policy_of(self.config).revocation)
            outcome = book.after_audit(meta, self._seen)
        except Exception as error:  # noqa: BLE001 - approval bookkeeping never fails an audit
            log.warning("approval request not updated", fields={"error": self._describe(error)})
            return None
        if outcome is not None:
            log.info(f"approval request {outcome}")
        return outcome

    @traced("follow-up")
    def notify(self, meta: AuditMeta, folder: str, log: ScanLogger) -> list[Delivery] | None:
        """The approval follow-up, the audit's notification if it warrants one and none was sent
        yet, then the fleet query tables (``queries.py``)."""
        try:
            return self._notify(meta, folder, log)
        finally:
            self.queries.record(meta, log)

    def _notify(self, meta: AuditMeta, folder: str, log: ScanLogger) -> list[Delivery] | None:
        self.follow_approval(meta, log)
        if meta.audit_result is not AuditResult.SUCCEEDED or not self.notifier.urls:
            return None
        reasons = should_notify(meta)
        if not reasons:
            return None
        try:
            deliveries = self.notifier.send_once(folder, build_event(meta, folder, reasons))
        except Exception as error:  # noqa: BLE001 - a notification never fails an audit
            log.warning("notification not sent", fields={"error": self._describe(error)})
            return None
        if deliveries is None:
            log.info("notification already claimed by an earlier delivery of this audit")
            return None
        for delivery in deliveries:
            fields = {"reasons": reasons, **delivery.document()}
            if delivery.delivered:
                log.info("notification delivered", fields=fields)
            else:
                log.warning("notification not delivered", fields=fields)
        return deliveries

    def _policy(
        self, meta: AuditMeta, report: Path | bytes | DecodedReport | None, log: ScanLogger,
        approval: Future[SeenRequest | None] | None = None,
    ) -> dict[str, object]:
        """The policy's decision (``gate.py``); a fault falls back to the thresholds' decision."""
        if isinstance(report, Path) and not report.is_file():
            report = None
        try:
            accepted = self._accepted(meta, log, approval)
            return policy_fields(self.config, meta, report, exploits=self.exploits, accepted=accepted)
        except Exception as error:  # noqa: BLE001 - a policy fault never fails an audit
            log.warning("policy not evaluated", fields={"error": self._describe(error)})
            return {"decision": decide(meta.scan_status, self.settings.trivy_auto_reject_critical)}

    def _approvals(self) -> ApprovalStore:
        return ApprovalStore(self.settings.blob_container_url, self.settings.scanner_short_id,
                             fleet_state=lambda: fleet_state_of(self.settings))

    def _accepted(
        self, meta: AuditMeta, log: ScanLogger, ahead: Future[SeenRequest | None] | None = None
    ) -> list[AcceptedRisk]:
        """The findings the approval of this digest accepts (issue 15: they apply to its later
        audits until their date); none without an index (a caller's own blob store). The
        request read here (or ahead, when it is this digest's) is kept for ``follow_approval``,
        which then does not read it again."""
        if self.audit_index is None:
            return []
        try:
            self._seen = _read_ahead(ahead, meta) or read_request(self._approvals(), meta)
        except Exception as error:  # noqa: BLE001 - then the policy judges without them
            log.warning("the approval's accepted findings cannot be read", fields={"error": self._describe(error)})
            return []
        return self._seen.accepted if self._seen is not None else []

    def _describe(self, error: Exception) -> str:
        return self.redactor(f"{type(error).__name__}: {error}")[:500]


def _read_ahead(ahead: Future[SeenRequest | None] | None, meta: AuditMeta) -> SeenRequest | None:
    """What ``read_approval_ahead`` read, if it is the request of the digest trivy scanned (a
    failed read, or another digest, is read again)."""
    if ahead is None:
        return None
    try:
        seen = ahead.result()
    except Exception:  # noqa: BLE001 - read again, and that read reports its error
        return None
    repository, _, digest = approval_subject(meta)
    if seen is None or not repository or not digest or seen.identifier != approval_id(repository, digest):
        return None
    return seen
