"""The Azure Functions app (Python v2 programming model): wiring only.

Every decision lives in ``scanner_core``; each function here turns a binding
into a core call. Bindings are named by app settings (see README,
"Configuration"), read when the worker indexes the functions.
"""

from __future__ import annotations

from pathlib import Path

import azure.functions as func

from scanner_core import functions, http_api

APP_ROOT = Path(__file__).resolve().parent
bindings = functions.binding_settings()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("scan_request")
@app.queue_trigger(arg_name="message", queue_name=bindings.queue_name, connection=bindings.queue_connection)
@app.queue_output(arg_name="quarantine", queue_name=bindings.poison_queue_name, connection=bindings.queue_connection)
def scan_request(message: func.QueueMessage, quarantine: func.Out[str]) -> None:
    functions.on_scan_message(message, quarantine.set, APP_ROOT)


@app.function_name("heartbeat")
@app.timer_trigger(arg_name="timer", schedule=bindings.heartbeat_schedule, run_on_startup=False, use_monitor=True)
def heartbeat(timer: func.TimerRequest) -> None:
    functions.on_heartbeat(timer, bindings, APP_ROOT)


@app.function_name("refresh_vulnerability_db")
@app.timer_trigger(arg_name="timer", schedule=bindings.db_refresh_schedule, run_on_startup=False, use_monitor=True)
def refresh_vulnerability_db(timer: func.TimerRequest) -> None:
    functions.on_db_refresh(timer, APP_ROOT)


# HTTP API (function keys). Methods are checked by the handlers, which answer a
# wrong one with a JSON 405 instead of the host's bare 404.
@app.function_name("api_request_scan_by_path")
@app.route(route="images/{name}/{tag}/scan", auth_level=func.AuthLevel.FUNCTION)
def api_request_scan_by_path(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.request_scan_by_path, req, APP_ROOT)


@app.function_name("api_request_scan")
@app.route(route="scans", auth_level=func.AuthLevel.FUNCTION)
def api_request_scan(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.request_scan, req, APP_ROOT)


@app.function_name("api_get_audit")
@app.route(route="audits/{audit_id}", auth_level=func.AuthLevel.FUNCTION)
def api_get_audit(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.get_audit, req, APP_ROOT)


@app.function_name("api_security_summary")
@app.route(route="security/summary", auth_level=func.AuthLevel.FUNCTION)
def api_security_summary(req: func.HttpRequest) -> func.HttpResponse:
    return http_api.serve(http_api.security_summary, req, APP_ROOT)
