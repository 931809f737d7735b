"""The function app's HTTP routes served on 127.0.0.1 for a browser.

A double of the Azure Functions host's HTTP front only (routing under
``/api``, function keys in ``?code=`` or ``x-functions-key``, route
parameters left percent-encoded as the host leaves ``%2F``): documented at
https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger
(route templates, authorization keys). Everything behind it is real: the
handlers of ``scanner_core.functions`` with their ``func.HttpRequest`` and
``func.HttpResponse`` objects, against Azurite.

With ``principal`` it also doubles App Service authentication for a signed-in
user: as Easy Auth does, it drops any ``X-MS-CLIENT-PRINCIPAL*`` header the
client sent and adds that user's (``tests/support/easy_auth.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from tests.support.loopback_http import LoopbackHttpServer

from scanner_core.functions import (
    ApiContext,
    approval_security,
    approve,
    dashboard,
    fleet_images,
    get_approval,
    list_approvals,
    reject,
    revoke,
    extend,
    get_audit,
    image_history,
    image_verdict,
    metrics,
    package_images,
    security_summary,
    vulnerability_images,
)

Handler = Callable[[func.HttpRequest, ApiContext], func.HttpResponse]

# The GET routes of functions/http_routes.py (the scan routes need a queue, not a browser).
ROUTES: tuple[tuple[str, Handler], ...] = (
    ("images/{name}/{tag}/verdict", image_verdict),
    ("images/{name}/verdict", image_verdict),
    ("images/{name}/history", image_history),
    ("audits/{audit_id}", get_audit),
    ("security/summary", security_summary),
    ("images", fleet_images),
    ("dashboard", dashboard),
    ("metrics", metrics),
    ("approvals", list_approvals),
    ("approvals/{approval_id}", get_approval),
    ("approvals/{approval_id}/security", approval_security),
    ("approvals/{approval_id}/approve", approve),
    ("approvals/{approval_id}/reject", reject),
    ("approvals/{approval_id}/revoke", revoke),
    ("approvals/{approval_id}/extend", extend),
    ("vulnerabilities/{id}/images", vulnerability_images),
    ("packages/{name}/images", package_images),
)


def match(path: str) -> tuple[Handler, dict[str, str]] | None:
    segments = path.split("/")
    for template, handler in ROUTES:
        parts = template.split("/")
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{") and part.endswith("}") and segment:
                params[part[1:-1]] = segment
            elif part != segment:
                break
        else:
            return handler, params
    return None


class ApiServer(LoopbackHttpServer):
    """Serves ``ROUTES`` under ``/api/`` with ``ctx``; requires the function key ``key``."""

    def __init__(self, ctx: ApiContext, key: str, principal: dict[str, str] | None = None) -> None:
        self.requests: list[str] = []
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                url = urlsplit(self.path)
                params = dict(parse_qsl(url.query, keep_blank_values=True))
                if not url.path.startswith("/api/") or (found := match(url.path[len("/api/") :])) is None:
                    self._send(404, b"", {"Content-Type": "text/plain"})
                    return
                if key not in (params.get("code"), self.headers.get("x-functions-key")):
                    self._send(401, b"", {"Content-Type": "text/plain"})  # what the host answers
                    return
                handler, route_params = found
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("x-ms-client-principal")}
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = func.HttpRequest(
                    method=self.command,
                    url=f"http://{self.headers.get('Host')}{self.path}",
                    headers=headers | (principal or {}),
                    params=params,
                    route_params=route_params,
                    body=body,
                )
                response = handler(request, ctx)
                content_type = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
                headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
                self._send(response.status_code, response.get_body(), headers | {"Content-Type": content_type})

            def _send(self, status: int, body: bytes, headers: dict[str, Any]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, str(value))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._serve(RequestHandler, "api-server")
