"""The metrics snapshot as Azure Monitor gauges (issue 19): the heartbeat sets the
OpenTelemetry instruments (``telemetry/instruments.py``) from the stored snapshot, so
Application Insights graphs the same figures as ``GET /api/metrics``."""

from __future__ import annotations

from ..telemetry import active_instruments, clean
from .snapshot import MetricsSnapshot

_SEVERITIES = (("critical", "Critical"), ("high", "High"), ("medium", "Medium"), ("low", "Low"), ("unknown", "Unknown"))


def record_snapshot(snapshot: MetricsSnapshot) -> bool:
    """Sets the gauges from ``snapshot``; ``False`` (nothing done) when telemetry is off."""
    instruments = active_instruments()
    if instruments is None:
        return False
    for image in snapshot.images:
        labels = clean(image.labels)
        instruments.image_status.set(1, labels | {"status": image.status})
        for key, severity in _SEVERITIES:
            if image.vulnerabilities is not None:
                instruments.vulnerabilities.set(image.vulnerabilities.get(key, 0), labels | {"severity": severity})
    for kind, count in snapshot.queue_messages.items():
        if count is not None:
            instruments.queue_messages.set(count, {"queue": kind})
    for db in ("trivy", "java"):
        if (updated := snapshot.db_updated(db)) is not None:
            instruments.db_age.set(max(0.0, snapshot.taken_at - updated), {"db": db})
    if snapshot.heartbeat is not None and snapshot.heartbeat.trivy_db_stale is not None:
        instruments.db_stale.set(1 if snapshot.heartbeat.trivy_db_stale else 0)
    for (result, reason), count in snapshot.recent_audits.items():
        instruments.recent_audits.set(count, {"result": result, "reason": reason or "none"})
    return True
