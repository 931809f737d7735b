"""What the monitor adds to each succeeded audit, in two steps around the
writing of its ``meta``: before, ``previous-audit-id``, ``changes`` and
``decision`` (``annotate``); after, the webhook notification (``notify``).

Neither step ever fails or blocks an audit for long: errors are logged and
the audit goes on without the annotation or the notification.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import ScannerConfig
from ..log import ScanLogger
from ..models import AuditMeta, AuditResult
from ..redact import Redactor
from ..storage import AuditIndex, BlobStore
from .changes import Key, compare, current_findings, find_previous, findings_of, previous_findings
from .decision import decide
from .notify import Delivery, Notifier, build_event, should_notify


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
    ) -> None:
        settings = config.settings
        self.settings = settings
        self.audit_index = audit_index
        self.redactor = redactor
        self.notifier = notifier or Notifier(
            [url.get_secret_value() for url in settings.notify_webhook_urls],
            blob_store,
            attempts=settings.notify_attempts,
            timeout_s=settings.notify_timeout_s,
        )

    def annotate(self, meta: AuditMeta, report_path: Path, log: ScanLogger) -> AuditMeta:
        """``meta`` with its decision and what changed since the previous audit of the image."""
        return self._annotate(meta, lambda threshold: current_findings(report_path, threshold), log)

    def annotate_reused(self, meta: AuditMeta, earlier: AuditMeta, log: ScanLogger) -> AuditMeta:
        """The same for an audit answered from ``earlier`` (dedup, ``reuse.py``): its
        findings are the earlier audit's, read from its details or stored report."""

        def findings(threshold: str) -> set[Key]:
            folder = (earlier.trivy_audit_path or "").rsplit("/", 1)[0]
            keys = findings_of(self.audit_index, earlier, folder, threshold) if self.audit_index else None
            if keys is None:
                raise ValueError("the earlier audit's findings cannot be read")
            return keys

        return self._annotate(meta, findings, log)

    def _annotate(self, meta: AuditMeta, current: Callable[[str], set[Key]], log: ScanLogger) -> AuditMeta:
        if meta.audit_result is not AuditResult.SUCCEEDED:
            return meta
        update: dict[str, object] = {"decision": decide(meta.scan_status, self.settings.trivy_auto_reject_critical)}
        threshold = self.settings.notify_min_severity
        try:
            previous: AuditMeta | None = None
            previous_keys: set[Key] = set()
            previous_id: str | None = None
            if self.audit_index is not None and (row := find_previous(self.audit_index, meta)) is not None:
                if (found := previous_findings(self.audit_index, row, threshold)) is not None:
                    (previous, previous_keys), previous_id = found, row.audit_id
            changes = compare(previous, previous_keys, meta.scan_status, current(threshold))
            update |= {"previous_audit_id": previous_id, "changes": changes}
        except Exception as error:  # noqa: BLE001 - a comparison never fails an audit
            log.warning("changes since the previous audit not computed", fields={"error": self._describe(error)})
        return meta.model_copy(update=update)

    def notify(self, meta: AuditMeta, folder: str, log: ScanLogger) -> list[Delivery] | None:
        """Sends the audit's notification if it warrants one and none was sent yet."""
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

    def _describe(self, error: Exception) -> str:
        return self.redactor(f"{type(error).__name__}: {error}")[:500]
