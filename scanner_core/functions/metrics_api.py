"""``GET /api/metrics``: the Prometheus exposition of what the scanner has stored.

A plain handler, ``metrics(req, ctx) -> HttpResponse``, like ``http_api.py``'s;
wired by ``metrics_routes.py`` with its own auth level. The answer is the text
format (``text/plain; version=0.0.4``), or OpenMetrics when the scraper's
``Accept`` asks for it (Prometheus does). Errors are ``http_api``'s JSON errors:
405 for a method other than GET, 503 ``storage-unavailable`` when Blob Storage
or the queue service fails (the scrape then fails, and ``up`` says so).
"""

from __future__ import annotations

import logging

import azure.functions as func

from ..errors import StorageError
from ..metrics import read_snapshot, render_prometheus
from .http_api import ApiContext, ApiError

_log = logging.getLogger("scanner_core.metrics_api")


def metrics(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET metrics``."""
    if req.method.upper() != "GET":
        method = req.method.upper()
        return ApiError(
            405, "method-not-allowed", f"{method} is not allowed here; allowed: GET", headers={"Allow": "GET"}
        ).response()
    settings = ctx.config.settings
    try:
        snapshot = read_snapshot(
            settings.blob_container_url,
            ctx.short_id,
            ctx.queue_connection,
            ctx.queue_name,
            fleet=ctx.fleet_state(),
            max_images=settings.metrics_max_images,
        )
    except StorageError as error:
        _log.error("metrics not read: %s", error)
        return ApiError(503, "storage-unavailable", str(error)).response()
    body, content_type = render_prometheus(snapshot, req.headers.get("accept"))
    mimetype = "; ".join(part.strip() for part in content_type.split(";") if not part.strip().startswith("charset="))
    return func.HttpResponse(body, status_code=200, mimetype=mimetype, charset="utf-8")


__all__ = ["metrics"]
