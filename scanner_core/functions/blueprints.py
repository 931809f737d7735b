"""Every Blueprint of the function app, in registration order."""

from __future__ import annotations

import azure.functions as func


def all_blueprints() -> list[func.Blueprint]:
    """Imported here, not at module load: each Blueprint module reads its binding
    settings when imported, which only the app (and its tests) should trigger."""
    from . import admission_routes, approval_routes, http_routes, metrics_routes, monitor_loop, scan_queue, timers

    return [
        scan_queue.blueprint,
        timers.blueprint,
        http_routes.blueprint,
        monitor_loop.blueprint,
        metrics_routes.blueprint,
        approval_routes.blueprint,
        admission_routes.blueprint,
    ]
