"""Blueprint: the approval gate's routes (function keys; App Service
authentication names the reviewer), the at-risk deadlines' timer
(``APPROVAL_DEADLINE_SCHEDULE``, issue 25) and the daily digest timer.

``DIGEST_SCHEDULE`` unset or empty (the default) registers no digest timer at
all: a timer trigger needs a schedule, and "off" is the absence of the function.
"""

from __future__ import annotations

import azure.functions as func

from .host import APP_ROOT
from .bindings import binding_names

bindings = binding_names()  # without pydantic: see bindings.py
blueprint = func.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)


@blueprint.function_name("api_list_approvals")
@blueprint.route(route="approvals", auth_level=func.AuthLevel.FUNCTION)
def api_list_approvals(req: func.HttpRequest) -> func.HttpResponse:
    from . import approvals_api, http_api  # on first use

    return http_api.serve(approvals_api.list_approvals, req, APP_ROOT)


@blueprint.function_name("api_get_approval")
@blueprint.route(route="approvals/{approval_id}", auth_level=func.AuthLevel.FUNCTION)
def api_get_approval(req: func.HttpRequest) -> func.HttpResponse:
    from . import approvals_api, http_api  # on first use

    return http_api.serve(approvals_api.get_approval, req, APP_ROOT)


@blueprint.function_name("api_approval_security")
@blueprint.route(route="approvals/{approval_id}/security", auth_level=func.AuthLevel.FUNCTION)
def api_approval_security(req: func.HttpRequest) -> func.HttpResponse:
    from . import approvals_api, http_api  # on first use

    return http_api.serve(approvals_api.approval_security, req, APP_ROOT)


@blueprint.function_name("api_approve")
@blueprint.route(route="approvals/{approval_id}/approve", auth_level=func.AuthLevel.FUNCTION)
def api_approve(req: func.HttpRequest) -> func.HttpResponse:
    from . import approvals_api, http_api  # on first use

    return http_api.serve(approvals_api.approve, req, APP_ROOT)


@blueprint.function_name("api_reject")
@blueprint.route(route="approvals/{approval_id}/reject", auth_level=func.AuthLevel.FUNCTION)
def api_reject(req: func.HttpRequest) -> func.HttpResponse:
    from . import approvals_api, http_api  # on first use

    return http_api.serve(approvals_api.reject, req, APP_ROOT)


@blueprint.function_name("api_revoke_approval")
@blueprint.route(route="approvals/{approval_id}/revoke", auth_level=func.AuthLevel.FUNCTION)
def api_revoke_approval(req: func.HttpRequest) -> func.HttpResponse:
    from . import approvals_api, http_api  # on first use

    return http_api.serve(approvals_api.revoke, req, APP_ROOT)


@blueprint.function_name("api_extend_deadline")
@blueprint.route(route="approvals/{approval_id}/extend", auth_level=func.AuthLevel.FUNCTION)
def api_extend_deadline(req: func.HttpRequest) -> func.HttpResponse:
    from . import approvals_api, http_api  # on first use

    return http_api.serve(approvals_api.extend, req, APP_ROOT)


@blueprint.function_name("approval_deadlines")
@blueprint.timer_trigger(arg_name="timer", schedule=bindings.deadline_schedule, run_on_startup=False, use_monitor=True)
def approval_deadlines(timer: func.TimerRequest) -> None:
    from . import approvals_api  # the core and the storage SDKs: on first use

    approvals_api.on_deadlines(timer, APP_ROOT)


if bindings.digest_schedule:

    @blueprint.function_name("approval_digest")
    @blueprint.timer_trigger(arg_name="timer", schedule=bindings.digest_schedule, run_on_startup=False,
                             use_monitor=True)
    def approval_digest(timer: func.TimerRequest) -> None:
        from . import approvals_api  # the core and the storage SDKs: on first use

        approvals_api.on_digest(timer, APP_ROOT)
