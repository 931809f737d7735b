"""Blueprint: the admission routes (issue 25), with their own auth level.

Functions fixes a route's auth level when the worker indexes the functions, so
``ADMISSION_AUTH`` is read here, at import: ``function-key`` (the default) lets the host
check ``x-functions-key`` (Gatekeeper and Kyverno can send headers); ``client-certificate``
makes the routes anonymous to the host, and the handler accepts only a configured client
certificate from ``X-ARR-ClientCert`` (App Service client certificates, mode ``Required``).
"""

from __future__ import annotations

import os

import azure.functions as func

from .host import APP_ROOT

AUTH_LEVEL = (func.AuthLevel.ANONYMOUS if os.environ.get("ADMISSION_AUTH") == "client-certificate"
              else func.AuthLevel.FUNCTION)
blueprint = func.Blueprint(http_auth_level=AUTH_LEVEL)


@blueprint.function_name("api_admission_review")
@blueprint.route(route="admission/review", auth_level=AUTH_LEVEL)
def api_admission_review(req: func.HttpRequest) -> func.HttpResponse:
    from . import admission_api  # on first use

    return admission_api.serve_admission(admission_api.admission_review, req, APP_ROOT)


@blueprint.function_name("api_admission_provider")
@blueprint.route(route="admission/provider", auth_level=AUTH_LEVEL)
def api_admission_provider(req: func.HttpRequest) -> func.HttpResponse:
    from . import admission_api  # on first use

    return admission_api.serve_admission(admission_api.admission_provider, req, APP_ROOT)
