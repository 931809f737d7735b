"""Blueprint: the HTTP API's routes (function keys).

Methods are checked by the handlers in ``http_api.py``, which answer a wrong
one with a JSON 405 instead of the host's bare 404.
"""

from __future__ import annotations

import azure.functions as func

from . import http_api
from .host import APP_ROOT

blueprint = func.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)


@blueprint.function_name("api_request_scan_by_path")
@blueprint.route(route="images/{name}/{tag}/scan", auth_level=func.AuthLevel.FUNCTION)
def api_request_scan_by_path(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.request_scan_by_path, req, APP_ROOT)


@blueprint.function_name("api_request_scan")
@blueprint.route(route="scans", auth_level=func.AuthLevel.FUNCTION)
def api_request_scan(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.request_scan, req, APP_ROOT)


@blueprint.function_name("api_get_audit")
@blueprint.route(route="audits/{audit_id}", auth_level=func.AuthLevel.FUNCTION)
def api_get_audit(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.get_audit, req, APP_ROOT)


@blueprint.function_name("api_security_summary")
@blueprint.route(route="security/summary", auth_level=func.AuthLevel.FUNCTION)
def api_security_summary(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.security_summary, req, APP_ROOT)
