"""Metrics (issue 19): what the scanner has stored, as numbers a Prometheus scrape,
a Grafana dashboard or Azure Monitor can graph and alert on.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "record_snapshot": ".azure_monitor",
    "render_prometheus": ".exposition",
    "SnapshotCollector": ".exposition",
    "ImageMetrics": ".snapshot",
    "MetricsSnapshot": ".snapshot",
    "read_snapshot": ".snapshot",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
