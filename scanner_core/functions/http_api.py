"""The HTTP API: request scans, read an audit, the security summary.

Plain handlers, ``handler(req, ctx) -> HttpResponse``, wired by the function
app (auth level ``FUNCTION``: callers send a function key, ``?code=`` or
``x-functions-key``). Routes, under the host's route prefix (``/api``):

``POST /api/images/{name}/{tag}/scan``  → ``request_scan_by_path``
    The seed's form (``/images/redis/7.2-alpine/scan``). A route segment can
    not hold ``/``, so ``name`` is one segment; a multi-segment name or a
    registry host may be sent percent-encoded (``library%2Fredis``,
    ``myacr.azurecr.io%2Fteam%2Fapp``): the host leaves ``%2F`` encoded and it
    is decoded here, once. ``tag`` is a tag, or a digest (``sha256:<hex>``,
    then the reference is ``name@digest``). Optional query ``audit-id``.
``POST /api/scans``  → ``request_scan``
    JSON body ``{"image": "<full reference>", "audit-id": "<optional>"}``; any
    reference the scanner accepts (registry host, tag, ``@digest``).
``GET /api/audits/{audit_id}``  → ``get_audit``
    The audit's ``meta`` exactly as the core wrote it (404 until the scan has
    finished: a queued scan has no meta yet).
``GET /api/security/summary?limit=50&cursor=...&totals=...``  → ``security_summary``
    Totals (``total``, ``passed``, ``warning``, ``failed``, ``audit-failed``)
    and a page of audits, newest request first, from the audit index
    (``storage/index.py``). Totals cost a walk of the whole index, so they are
    computed for the first page (no ``cursor``) and left out of later pages
    unless ``totals=true``; ``limit`` is 1..``MAX_LIMIT``.

A scan request answers **202** with the audit id, the queue message and
where the results will land (``results``: the audit folder, its ``meta``
and, if the scan succeeds, ``scan-result.json``), plus ``Location`` and
``links.audit`` pointing at ``GET /api/audits/{id}``. The audit id defaults
to a new UUID; re-using one re-scans, and the index then shows the newest
request. Query parameters other than the documented ones (such as ``code``,
the function key) are ignored; unknown JSON body fields are refused.

Every error is ``{"error": {"code", "field", "message"}}``: 400
``invalid-json`` / ``invalid-field`` / ``missing-field`` / ``unknown-field``,
404 ``not-found``, 405 ``method-not-allowed`` (with ``Allow``; reached only if
the route is wired without ``methods=``), 503 ``storage-unavailable`` /
``queue-unavailable``, 500 ``configuration-error`` / ``internal-error``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import azure.functions as func

from ..config import ScannerConfig, load_config
from ..errors import ConfigurationError, RequestError, StorageError
from ..queue import QueueConnection, QueueEncoding, build_message, enqueue
from ..registry import allowed_reference, parse_image_reference, parse_platform
from ..storage import META_BLOB, REPORT_BLOB, AuditIndex, AuditRow, audit_folder, iso8601, validate_audit_id
from .host import message_encoding
from .settings import load_function_settings

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
JSON_MIMETYPE = "application/json"
SCAN_BODY_FIELDS = ("image", "audit-id", "platform")
_log = logging.getLogger("scanner_core.http_api")


@dataclass(frozen=True)
class ApiContext:
    """Everything a handler needs besides the request; built per invocation
    (``from_environment``) or by tests."""

    config: ScannerConfig
    queue_connection: str | QueueConnection = field(repr=False)
    queue_name: str
    message_encoding: QueueEncoding
    route_prefix: str = "api"

    @classmethod
    def from_environment(cls, app_root: Path, route_prefix: str = "api") -> ApiContext:
        """The scanner's configuration, and the queue the trigger listens on
        (``SCAN_QUEUE_CONNECTION``/``SCAN_QUEUE_NAME``, host.json's ``messageEncoding``)."""
        bindings = load_function_settings()
        return cls(
            config=load_config(),
            queue_connection=bindings.queue_connection_value,
            queue_name=bindings.queue_name,
            message_encoding=message_encoding(app_root),
            route_prefix=route_prefix,
        )

    @property
    def short_id(self) -> str:
        return self.config.settings.scanner_short_id

    def audit_index(self) -> AuditIndex:
        return AuditIndex(self.config.settings.blob_container_url, self.short_id)

    def path(self, route: str) -> str:
        """A root-relative link: right behind any proxy or custom domain."""
        prefix = self.route_prefix.strip("/")
        return f"/{prefix}/{route}" if prefix else f"/{route}"


class ApiError(Exception):
    """An error answer; raised by handlers, rendered by ``_answer``."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})

    def response(self) -> func.HttpResponse:
        body = {"error": {"code": self.code, "field": self.field, "message": self.message}}
        return json_response(self.status, body, self.headers)


Handler = Callable[[func.HttpRequest, ApiContext], func.HttpResponse]


# -- entry point for the function app ----------------------------------------


def serve(handler: Handler, req: func.HttpRequest, app_root: Path, route_prefix: str = "api") -> func.HttpResponse:
    """Builds the context and runs ``handler``; a bad configuration is a 500
    naming the bad settings (never their values)."""
    try:
        ctx = ApiContext.from_environment(app_root, route_prefix)
    except ConfigurationError as error:
        return ApiError(
            500, "configuration-error", f"the scanner is misconfigured: {'; '.join(error.problems)}"
        ).response()
    return handler(req, ctx)


# -- handlers ----------------------------------------------------------------


def request_scan_by_path(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST images/{name}/{tag}/scan``."""
    return _answer(
        req,
        ("POST",),
        lambda: _enqueue_scan(ctx, _image_from_route(req), req.params.get("audit-id"), req.params.get("platform")),
    )


def request_scan(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST scans`` with ``{"image": ..., "audit-id": ...}``."""

    def run() -> func.HttpResponse:
        body = _json_object(req.get_body(), SCAN_BODY_FIELDS)
        if "image" not in body:
            raise ApiError(
                400,
                "missing-field",
                "is required: the image reference to scan, e.g. "
                "registry.example.com/team/app:1.0 or ...@sha256:<digest>",
                "image",
            )
        image = _string(body, "image")
        audit_id = _string(body, "audit-id") if "audit-id" in body else None
        platform = _string(body, "platform") if "platform" in body else None
        allowed_reference(image, "image")  # ALLOWED_REGISTRIES: 400 registry-not-allowed naming "image"
        return _enqueue_scan(ctx, image, audit_id, platform)

    return _answer(req, ("POST",), run)


def get_audit(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET audits/{audit_id}``: the meta, verbatim."""

    def run() -> func.HttpResponse:
        audit_id = validate_audit_id(req.route_params.get("audit_id", ""), field="audit-id")
        meta: bytes | None = None
        with ctx.audit_index() as index:
            if (meta_path := index.find(audit_id)) is not None:
                meta = index.read(meta_path)  # None: the index outlived the folder
        if meta is None:
            raise ApiError(
                404,
                "not-found",
                f"no audit {audit_id!r} has been recorded; a requested scan appears here once it has finished",
                "audit-id",
            )
        return func.HttpResponse(meta, status_code=200, mimetype=JSON_MIMETYPE, charset="utf-8")

    return _answer(req, ("GET",), run)


def security_summary(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET security/summary``: totals and one page of audits."""

    def run() -> func.HttpResponse:
        limit = _limit(req.params.get("limit"))
        cursor = req.params.get("cursor") or None
        with_totals = _flag(req.params.get("totals"), "totals", default=cursor is None)
        with ctx.audit_index() as index:
            rows, next_cursor = index.page(limit, cursor)
            totals = index.totals() if with_totals else None
        document: dict[str, Any] = dict(totals) if totals is not None else {}
        next_link = None
        if next_cursor:
            next_link = f"{ctx.path('security/summary')}?{urlencode({'limit': limit, 'cursor': next_cursor})}"
        document |= {
            "audits": [_row_document(row, ctx) for row in rows],
            "limit": limit,
            "next-cursor": next_cursor,
            "links": {"next": next_link},
        }
        return json_response(200, document)

    return _answer(req, ("GET",), run)


# -- the parts ---------------------------------------------------------------


def _enqueue_scan(ctx: ApiContext, image: str, audit_id: str | None, platform: str | None = None) -> func.HttpResponse:
    audit_id = validate_audit_id(audit_id, field="audit-id") if audit_id is not None else str(uuid.uuid4())
    platform = str(parse_platform(platform, field="platform")) if platform is not None else None
    message = build_message(image, audit_id, created_at=time.time(), platform=platform, trigger="request")
    requested_at = datetime.fromtimestamp(message.headers.creation_time, timezone.utc)
    try:
        sent = enqueue(
            message, connection=ctx.queue_connection, queue_name=ctx.queue_name, encoding=ctx.message_encoding
        )
    except StorageError as error:
        _log.error("scan request not queued: %s", error)
        raise ApiError(503, "queue-unavailable", f"the scan request could not be queued: {error}") from None
    folder = audit_folder(ctx.short_id, requested_at, audit_id)
    audit_link = ctx.path(f"audits/{quote(audit_id)}")
    return json_response(
        202,
        {
            "audit-id": audit_id,
            "image": image,
            **({"platform": platform} if platform else {}),
            "status": "queued",
            "requested-at": iso8601(message.headers.creation_time),
            "queue": sent.queue,
            "message-id": sent.message_id,
            "results": {
                "folder": folder,
                "meta": f"{folder}/{META_BLOB}",
                "report": f"{folder}/{REPORT_BLOB}",
            },
            "links": {"audit": audit_link},
        },
        {"Location": audit_link},
    )


def _image_from_route(req: func.HttpRequest) -> str:
    name = _route_segment(req, "name")
    tag = _route_segment(req, "tag")
    try:
        parsed = allowed_reference(name, "name")
    except RequestError as error:
        raise ApiError(400, getattr(error, "reason", "invalid-field"), str(error).removeprefix("name: "), "name") from None
    if parsed.tag or parsed.digest:
        raise ApiError(
            400,
            "invalid-field",
            f"{name!r} must be a repository name without tag or digest: the tag goes in the {{tag}} segment",
            "name",
        )
    image = f"{name}@{tag}" if ":" in tag else f"{name}:{tag}"
    parse_image_reference(image, field="tag")
    return image


def _route_segment(req: func.HttpRequest, name: str) -> str:
    value = req.route_params.get(name) or ""
    if not value:
        raise ApiError(400, "missing-field", "the route segment is empty", name)
    return unquote(value) if "%" in value else value


def _json_object(body: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    example = '{"image": "registry.example.com/team/app:1.0", "audit-id": "optional-id"}'
    if not body.strip():
        raise ApiError(400, "invalid-json", f"the request body is empty; expected a JSON object such as {example}")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(
            400, "invalid-json", f"the request body is not valid JSON ({error}); expected {example}"
        ) from None
    if not isinstance(document, dict):
        raise ApiError(
            400,
            "invalid-json",
            f"the request body must be a JSON object, got {type(document).__name__}; expected {example}",
        )
    for key in document:
        if key not in allowed:
            raise ApiError(400, "unknown-field", f"unknown field; allowed fields: {', '.join(allowed)}", key)
    return document


def _string(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(400, "invalid-field", f"must be a string, got {json.dumps(value)}", name)
    return value


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(
            400,
            "invalid-field",
            f"{text!r} is not allowed: an integer from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
            "limit",
        )
    return value


def _flag(text: str | None, name: str, *, default: bool) -> bool:
    if text is None or text == "":
        return default
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise ApiError(400, "invalid-field", f"{text!r} is not allowed: true or false", name)


def _row_document(row: AuditRow, ctx: ApiContext) -> dict[str, Any]:
    return {
        "audit-id": row.audit_id,
        "image": row.image,
        "audit-result": row.audit_result,
        "scan-status": row.scan_status,
        "vulnerabilities": row.vulnerabilities,
        "summary": row.summary,
        "failure-reason": row.failure_reason,
        "requested-at": iso8601(row.requested_at),
        "scanned-at": iso8601(row.scanned_at),
        "meta": row.meta_path,
        "links": {"audit": ctx.path(f"audits/{quote(row.audit_id)}")},
        # The image's identity and the DB's date (issue 10: history, dashboard).
        "repository": row.repository,
        "tag": row.tag,
        "digest": row.digest,
        "trivy-db-updated-at": row.db_updated_at,
        "decision": row.decision, **row.exploits(),  # issue 15: KEV count, highest EPSS
    }


def _answer(req: func.HttpRequest, methods: tuple[str, ...], run: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    """Method check, then the handler; typed errors become JSON error answers."""
    if req.method.upper() not in methods:
        return ApiError(
            405,
            "method-not-allowed",
            f"{req.method.upper()} is not allowed here; allowed: {', '.join(methods)}",
            headers={"Allow": ", ".join(methods)},
        ).response()
    try:
        return run()
    except ApiError as error:
        return error.response()
    except RequestError as error:  # includes InvalidImageReference and InvalidCursor
        code = getattr(error, "reason", "invalid-field")  # registry-not-allowed
        return ApiError(400, code, str(error).removeprefix(f"{error.field}: "), error.field).response()
    except StorageError as error:
        _log.error("storage failure: %s", error)
        return ApiError(503, "storage-unavailable", str(error)).response()
    except Exception:  # an answer, never a stack trace; logged
        _log.exception("unexpected failure in %s %s", req.method, req.url.split("?", 1)[0])
        return ApiError(500, "internal-error", "an unexpected error occurred; see the function's logs").response()


def json_response(status: int, document: Any, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(document), status_code=status, mimetype=JSON_MIMETYPE, charset="utf-8", headers=dict(headers or {})
    )


__all__ = [
    "ApiContext",
    "ApiError",
    "get_audit",
    "request_scan",
    "request_scan_by_path",
    "security_summary",
    "serve",
]
