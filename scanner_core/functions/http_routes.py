"""Blueprint: the HTTP API's routes (function keys).

Methods are checked by the handlers in ``http_api.py``, which answer a wrong
one with a JSON 405 instead of the host's bare 404. The handler modules (and
the storage and queue SDKs behind them) are imported by the first request, not
when the worker indexes the functions: a cold start pays only for what it runs.
"""

from __future__ import annotations

import azure.functions as func

from .host import APP_ROOT

blueprint = func.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)


@blueprint.function_name("api_request_scan_by_path")
@blueprint.route(route="images/{name}/{tag}/scan", auth_level=func.AuthLevel.FUNCTION)
def api_request_scan_by_path(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(http_api.request_scan_by_path, req, APP_ROOT)


@blueprint.function_name("api_request_scan")
@blueprint.route(route="scans", auth_level=func.AuthLevel.FUNCTION)
def api_request_scan(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(http_api.request_scan, req, APP_ROOT)


@blueprint.function_name("api_get_audit")
@blueprint.route(route="audits/{audit_id}", auth_level=func.AuthLevel.FUNCTION)
def api_get_audit(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(http_api.get_audit, req, APP_ROOT)


@blueprint.function_name("api_security_summary")
@blueprint.route(route="security/summary", auth_level=func.AuthLevel.FUNCTION)
def api_security_summary(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(http_api.security_summary, req, APP_ROOT)


@blueprint.function_name("api_fleet_images")
@blueprint.route(route="images", auth_level=func.AuthLevel.FUNCTION)
def api_fleet_images(req: func.HttpRequest) -> func.HttpResponse:
    from . import fleet_api, http_api  # noqa: F401 - on first use

    return http_api.serve(fleet_api.fleet_images, req, APP_ROOT)


@blueprint.function_name("api_image_verdict")
@blueprint.route(route="images/{name}/{tag}/verdict", auth_level=func.AuthLevel.FUNCTION)
def api_image_verdict(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(image_api.image_verdict, req, APP_ROOT)


@blueprint.function_name("api_image_verdict_by_digest")
@blueprint.route(route="images/{name}/verdict", auth_level=func.AuthLevel.FUNCTION)
def api_image_verdict_by_digest(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(image_api.image_verdict, req, APP_ROOT)


@blueprint.function_name("api_image_history")
@blueprint.route(route="images/{name}/history", auth_level=func.AuthLevel.FUNCTION)
def api_image_history(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(image_api.image_history, req, APP_ROOT)


@blueprint.function_name("api_dashboard")
@blueprint.route(route="dashboard", auth_level=func.AuthLevel.FUNCTION)
def api_dashboard(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, image_api  # noqa: F401 - on first use

    return http_api.serve(image_api.dashboard, req, APP_ROOT)


@blueprint.function_name("api_policy_evaluate")
@blueprint.route(route="policy/evaluate", auth_level=func.AuthLevel.FUNCTION)
def api_policy_evaluate(req: func.HttpRequest) -> func.HttpResponse:
    from . import http_api, policy_api  # noqa: F401 - on first use

    return http_api.serve(policy_api.evaluate_policy, req, APP_ROOT)


@blueprint.function_name("api_vulnerability_images")
@blueprint.route(route="vulnerabilities/{id}/images", auth_level=func.AuthLevel.FUNCTION)
def api_vulnerability_images(req: func.HttpRequest) -> func.HttpResponse:
    from . import fleet_query_api, http_api  # noqa: F401 - on first use

    return http_api.serve(fleet_query_api.vulnerability_images, req, APP_ROOT)


@blueprint.function_name("api_package_images")
@blueprint.route(route="packages/{name}/images", auth_level=func.AuthLevel.FUNCTION)
def api_package_images(req: func.HttpRequest) -> func.HttpResponse:
    from . import fleet_query_api, http_api  # noqa: F401 - on first use

    return http_api.serve(fleet_query_api.package_images, req, APP_ROOT)
