"""Switching telemetry on: the Azure Monitor distro, or providers a test hands in.

``configure_telemetry(connection_string)`` is called by the function bodies on
each invocation (``functions/handlers.py``); the first call with a connection
string imports ``azure.monitor.opentelemetry`` (seconds of imports: never at a
cold start's indexing) and calls ``configure_azure_monitor`` once per process.
The distro's HTTP instrumentations are switched off: they would record request
URLs, and a blob or queue URL may carry its SAS token; the scanner's own spans
and metrics are what is exported (plus the distro's default resource attributes).
"""

from __future__ import annotations

import threading
from typing import Any

from .instruments import Instruments
from .spans import STATE

_INSTRUMENTATIONS_OFF = ("azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")
_lock = threading.Lock()
_configured: dict[str, bool] = {"done": False}


def configure_telemetry(connection_string: str | None) -> bool:
    """Switches telemetry on when ``connection_string`` is set (once); whether it is on."""
    if not connection_string or _configured["done"]:
        return STATE.tracer is not None
    with _lock:
        if not _configured["done"]:
            from azure.monitor.opentelemetry import configure_azure_monitor  # heavy: first use only
            from opentelemetry import metrics, trace

            configure_azure_monitor(
                connection_string=connection_string,
                logger_name="scanner_core.telemetry",  # the host already ships the function logs
                enable_live_metrics=False,
                sampling_ratio=1.0,  # every scan keeps its trace (the distro otherwise rate-limits)
                instrumentation_options={name: {"enabled": False} for name in _INSTRUMENTATIONS_OFF},
            )
            use_providers(trace.get_tracer_provider(), metrics.get_meter_provider())
            _configured["done"] = True
    return True


def use_providers(tracer_provider: Any, meter_provider: Any) -> None:
    """Exports through these providers (the distro's, or a test's in-memory ones)."""
    from .. import __version__

    STATE.tracer = tracer_provider.get_tracer("scanner_core", __version__)
    STATE.instruments = Instruments(meter_provider.get_meter("scanner_core", __version__))


def reset_telemetry() -> None:
    """Back to no-ops (tests)."""
    STATE.tracer = None
    STATE.instruments = None
