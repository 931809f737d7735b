"""The scanner's metrics as OpenTelemetry instruments, for Azure Monitor.

The same names as ``GET /api/metrics`` (see docs/metrics.md); Application Insights
stores them in ``customMetrics`` with the labels as ``customDimensions``:

* per audit, where the scan ran: ``trivy_scanner_audits`` (counter; ``result``,
  ``reason``) and ``trivy_scanner_scan_duration_seconds`` (histogram);
* per heartbeat, from the stored snapshot (set by ``metrics/azure_monitor.py``): the gauges
  ``trivy_image_vulnerabilities`` (image labels and ``severity``),
  ``trivy_scanner_image_status``, ``trivy_scanner_queue_messages``,
  ``trivy_scanner_db_age_seconds``, ``trivy_scanner_db_stale`` and
  ``trivy_scanner_recent_audits``. The heartbeat timer runs on one instance at a
  time (Functions timers are singletons), so a fleet exports each once.
* per admission review, where it was answered: ``trivy_scanner_admission_decisions``
  (counter; ``decision``: allowed, warned, denied, audit-refused, exempt; ``mode``: the
  ``ADMISSION_MODE``; ``unscanned``: ``true`` when an image of the review had never been
  scanned). Each instance adds its own; Application Insights sums them (issue 25).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spans import STATE, clean

if TYPE_CHECKING:
    from ..models import AuditMeta


class Instruments:
    """Made once per meter (``setup.use_providers``)."""

    def __init__(self, meter: Any) -> None:
        self.audits = meter.create_counter(
            "trivy_scanner_audits", unit="{audit}", description="Audits by result and failure reason"
        )
        self.durations = meter.create_histogram(
            "trivy_scanner_scan_duration_seconds", unit="s", description="trivy's run time of succeeded audits"
        )
        self.state_failures = meter.create_counter(
            "trivy_scanner_fleet_state_failures", unit="{audit}",
            description="Audits whose fleet state could not be written (reindex rebuilds it)",
        )
        self.admissions = meter.create_counter(
            "trivy_scanner_admission_decisions", unit="{review}",
            description="AdmissionReviews answered by decision, ADMISSION_MODE and whether an image was unscanned",
        )
        gauge = meter.create_gauge
        self.vulnerabilities = gauge(
            "trivy_image_vulnerabilities", description="Findings of each image's latest succeeded audit"
        )
        self.image_status = gauge(
            "trivy_scanner_image_status", description="1 for the status of each image's latest audit"
        )
        self.queue_messages = gauge("trivy_scanner_queue_messages", description="Approximate messages on the queues")
        self.db_age = gauge("trivy_scanner_db_age_seconds", unit="s", description="Age of the scanner's DBs")
        self.db_stale = gauge("trivy_scanner_db_stale", description="1 when the trivy DB is stale")
        self.recent_audits = gauge(
            "trivy_scanner_recent_audits", description="Audits of the last hour by result and reason"
        )

    def record_audit(self, meta: AuditMeta) -> None:
        self.audits.add(1, clean({"result": meta.audit_result.value, "reason": meta.failure_reason or "none"}))
        if meta.scan_duration_ms is not None:
            self.durations.record(meta.scan_duration_ms / 1000)

    def record_admission(self, decision: str, mode: str, unscanned: bool) -> None:
        self.admissions.add(1, {"decision": decision, "mode": mode, "unscanned": "true" if unscanned else "false"})


def count_state_failure() -> None:
    """One audit whose fleet state was not written (issue 24): counted where telemetry is on."""
    if STATE.instruments is not None:
        STATE.instruments.state_failures.add(1)


def active_instruments() -> Instruments | None:
    """The process's instruments while telemetry is on; ``None`` when it is off."""
    return STATE.instruments  # type: ignore[no-any-return]
