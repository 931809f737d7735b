"""Blueprint: ``GET /api/metrics``, with its own auth level.

Functions fixes a route's auth level when the worker indexes the functions, so
``METRICS_ANONYMOUS`` is read here, at import: ``true`` makes the route
anonymous (for a scrape from a private network: VNet integration, private
endpoint, or access restrictions), anything else keeps the function key
(``?code=`` or ``x-functions-key``, which Prometheus sends as a header or a
``params`` entry). Changing the app setting restarts the app, which re-indexes.
The handler (and ``prometheus-client`` behind it) is imported by the first scrape.
"""

from __future__ import annotations

import azure.functions as func

from .host import APP_ROOT
from .bindings import binding_names

AUTH_LEVEL = func.AuthLevel.ANONYMOUS if binding_names().metrics_anonymous else func.AuthLevel.FUNCTION
blueprint = func.Blueprint(http_auth_level=AUTH_LEVEL)


@blueprint.function_name("api_metrics")
@blueprint.route(route="metrics", methods=["GET"], auth_level=AUTH_LEVEL)
def api_metrics(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, metrics_api  # on first use

    return http_api.serve(metrics_api.metrics, req, APP_ROOT)
