"""Azure Monitor (Application Insights) through OpenTelemetry (issue 19): a trace per
scan and the scanner's metrics, when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.

Nothing here imports OpenTelemetry until telemetry is switched on: the spans are
no-ops that cost a dictionary lookup, and a cold start loads none of it.
Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "traced": ".spans",
    "traced_scan": ".spans",
    "tracer_span": ".spans",
    "telemetry_active": ".spans",
    "SCAN_SPANS": ".spans",
    "configure_telemetry": ".setup",
    "use_providers": ".setup",
    "reset_telemetry": ".setup",
    "active_instruments": ".instruments",
    "count_state_failure": ".instruments",
    "clean": ".spans",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
