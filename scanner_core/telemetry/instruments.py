"""The scanner's metrics as OpenTelemetry instruments, for Azure Monitor.

The same names as ``GET /api/metrics`` (see README "Metrics"); Application Insights
stores them in ``customMetrics`` with the labels as ``customDimensions``:

* per audit, where the scan ran: ``trivy_scanner_audits`` (counter; ``result``,
  ``reason``) and ``trivy_scanner_scan_duration_seconds`` (histogram);
* per heartbeat, from the stored snapshot (``metrics/snapshot.py``): the gauges
  ``trivy_image_vulnerabilities`` (image labels and ``severity``),
  ``trivy_scanner_image_status``, ``trivy_scanner_queue_messages``,
  ``trivy_scanner_db_age_seconds``, ``trivy_scanner_db_stale`` and
  ``trivy_scanner_recent_audits``. The heartbeat timer runs on one instance at a
  time (Functions timers are singletons), so a fleet exports each once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .spans import STATE, clean

if TYPE_CHECKING:
    from ..metrics import MetricsSnapshot
    from ..models import AuditMeta

_SEVERITIES = (("critical", "Critical"), ("high", "High"), ("medium", "Medium"), ("low", "Low"), ("unknown", "Unknown"))


class Instruments:
    """Made once per meter (``setup.use_providers``)."""

    def __init__(self, meter: Any) -> None:
        self.audits = meter.create_counter(
            "trivy_scanner_audits", unit="{audit}", description="Audits by result and failure reason"
        )
        self.durations = meter.create_histogram(
            "trivy_scanner_scan_duration_seconds", unit="s", description="trivy's run time of succeeded audits"
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

    def record_snapshot(self, snapshot: MetricsSnapshot) -> None:
        for image in snapshot.images:
            labels = clean(image.labels)
            self.image_status.set(1, labels | {"status": image.status})
            for key, severity in _SEVERITIES:
                if image.vulnerabilities is not None:
                    self.vulnerabilities.set(image.vulnerabilities.get(key, 0), labels | {"severity": severity})
        for kind, count in snapshot.queue_messages.items():
            if count is not None:
                self.queue_messages.set(count, {"queue": kind})
        for db in ("trivy", "java"):
            if (updated := snapshot.db_updated(db)) is not None:
                self.db_age.set(max(0.0, snapshot.taken_at - updated), {"db": db})
        if snapshot.heartbeat is not None and snapshot.heartbeat.trivy_db_stale is not None:
            self.db_stale.set(1 if snapshot.heartbeat.trivy_db_stale else 0)
        for (result, reason), count in snapshot.recent_audits.items():
            self.recent_audits.set(count, {"result": result, "reason": reason or "none"})


def record_snapshot(snapshot: MetricsSnapshot) -> bool:
    """Sets the gauges from ``snapshot``; ``False`` (nothing done) when telemetry is off."""
    if STATE.instruments is None:
        return False
    STATE.instruments.record_snapshot(snapshot)
    return True
