"""The snapshot in the Prometheus text exposition format, with ``prometheus-client``.

A custom ``Collector`` over one ``MetricsSnapshot``, registered in a fresh
``CollectorRegistry`` per scrape: no process-global registry state, so what a
scrape answers depends only on what is stored. Names follow trivy-operator's
where it has one (``trivy_image_vulnerabilities``, ``trivy_image_exposedsecrets``
with its ``image_registry``/``image_repository``/``image_tag``/``image_digest``
labels and its title-case ``severity`` values), so its users' dashboards and
alerts carry over; the scanner's own series are ``trivy_scanner_*``, in base
units (``_seconds``, ``_timestamp_seconds``), counters ending in ``_total``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..storage import RECENT_WINDOW_SECONDS
from .snapshot import MetricsSnapshot

IMAGE_LABELS = ["image_registry", "image_repository", "image_tag", "image_digest"]
SEVERITIES = (("critical", "Critical"), ("high", "High"), ("medium", "Medium"), ("low", "Low"), ("unknown", "Unknown"))


class SnapshotCollector(Collector):
    """Every metric of one snapshot (see docs/metrics.md for the table)."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._images()
        yield from self._audits()
        yield from self._queues()
        yield from self._database()

    def _images(self) -> Iterator[Metric]:
        s = self.snapshot
        vulnerabilities = GaugeMetricFamily(
            "trivy_image_vulnerabilities",
            "Vulnerabilities of the image's latest succeeded audit, after suppressions, by severity",
            labels=[*IMAGE_LABELS, "severity"],
        )
        secrets = GaugeMetricFamily(
            "trivy_image_exposedsecrets",
            "Secrets found in the image by its latest succeeded audit",
            labels=IMAGE_LABELS,
        )
        status = GaugeMetricFamily(
            "trivy_scanner_image_status",
            "1 for the status of the image's latest audit: passed, warning, failed or audit-failed",
            labels=[*IMAGE_LABELS, "status"],
        )
        approval = GaugeMetricFamily(
            "trivy_scanner_image_approval", "1 for the image's approval state (none until approvals exist)",
            labels=[*IMAGE_LABELS, "state"],
        )  # fmt: skip
        deadline = GaugeMetricFamily(
            "trivy_scanner_image_approval_deadline_timestamp_seconds",
            "When the image's at-risk approval is revoked unless re-approved (unix seconds; issue 25)",
            labels=IMAGE_LABELS,
        )
        db_age = GaugeMetricFamily(
            "trivy_scanner_image_db_age_seconds",
            "Age, at scrape time, of the vulnerability DB the image's findings were found with",
            labels=IMAGE_LABELS,
        )
        scanned = GaugeMetricFamily(
            "trivy_scanner_image_last_scan_timestamp_seconds",
            "When the image's latest audit finished (unix seconds)",
            labels=IMAGE_LABELS,
        )
        for image in s.images:
            values = list(image.labels.values())
            status.add_metric([*values, image.status], 1)
            if image.approval is not None:
                approval.add_metric([*values, image.approval], 1)
            if image.approval_deadline is not None:
                deadline.add_metric(values, image.approval_deadline)
            if image.scanned_at is not None:
                scanned.add_metric(values, image.scanned_at)
            if image.vulnerabilities is not None:
                for key, severity in SEVERITIES:
                    vulnerabilities.add_metric([*values, severity], image.vulnerabilities.get(key, 0))
            if image.secrets is not None:
                secrets.add_metric(values, image.secrets)
            if image.db_updated_at is not None:
                db_age.add_metric(values, max(0.0, s.taken_at - image.db_updated_at))
        yield from (vulnerabilities, secrets, status, approval, deadline, db_age, scanned)
        indexed = GaugeMetricFamily("trivy_scanner_images", "Images in the audit index (repository and tag)")
        indexed.add_metric([], s.images_indexed)
        exported = GaugeMetricFamily(
            "trivy_scanner_images_exported", "Images with series in this answer (newest first, METRICS_MAX_IMAGES)"
        )
        exported.add_metric([], len(s.images))
        yield from (indexed, exported)

    def _audits(self) -> Iterator[Metric]:
        s = self.snapshot
        audits = CounterMetricFamily(
            "trivy_scanner_audits",
            "Audits in the index by audit result and failure reason",
            labels=["result", "reason"],
        )
        recent = GaugeMetricFamily(
            "trivy_scanner_recent_audits",
            f"Audits finished in the last {RECENT_WINDOW_SECONDS} s by audit result and failure reason",
            labels=["result", "reason"],
        )
        for (result, reason), count in sorted(s.audits.items()):
            audits.add_metric([result, reason], count)
        for (result, reason), count in sorted(s.recent_audits.items()):
            recent.add_metric([result, reason], count)
        durations = HistogramMetricFamily(
            "trivy_scanner_scan_duration_seconds", "trivy's run time of the succeeded audits in the index"
        )
        durations.add_metric(
            [], [(_bound(le), count) for le, count in s.durations.buckets], sum_value=s.durations.total_seconds
        )
        yield from (audits, recent, durations)

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "trivy_scanner_queue_messages",
            "Approximate number of messages on the scan queue (queue=scan) and its quarantine (queue=poison)",
            labels=["queue", "queue_name"],
        )
        for kind, count in self.snapshot.queue_messages.items():
            if count is not None:
                depth.add_metric([kind, self.snapshot.queue_names.get(kind, "")], count)
        yield depth

    def _database(self) -> Iterator[Metric]:
        s = self.snapshot
        updated = GaugeMetricFamily(
            "trivy_scanner_db_updated_timestamp_seconds", "UpdatedAt of the scanner's DB (unix seconds)", labels=["db"]
        )
        age = GaugeMetricFamily(
            "trivy_scanner_db_age_seconds", "Age of the scanner's DB at scrape time, per heartbeat", labels=["db"]
        )
        for db in ("trivy", "java"):
            if (when := s.db_updated(db)) is not None:
                updated.add_metric([db], when)
                age.add_metric([db], max(0.0, s.taken_at - when))
        stale = GaugeMetricFamily("trivy_scanner_db_stale", "1 when the heartbeat found the trivy DB stale")
        heartbeat = GaugeMetricFamily(
            "trivy_scanner_heartbeat_timestamp_seconds", "When the scanner last wrote its heartbeat (unix seconds)"
        )
        info = GaugeMetricFamily(
            "trivy_scanner_info", "The scanner and trivy versions of the last heartbeat",
            labels=["scanner_id", "scanner_version", "trivy_version"],
        )  # fmt: skip
        if (beat := s.heartbeat) is not None:
            heartbeat.add_metric([], beat.heartbeat)
            if beat.trivy_db_stale is not None:
                stale.add_metric([], 1 if beat.trivy_db_stale else 0)
            info.add_metric([beat.scanner_id, beat.scanner_version or "", beat.trivy_version or ""], 1)
        yield from (updated, age, stale, heartbeat, info)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def render_prometheus(snapshot: MetricsSnapshot, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition (text format, or OpenMetrics when ``accept`` asks for it) and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
