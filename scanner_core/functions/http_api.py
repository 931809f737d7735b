"""The HTTP API's scan and audit routes: request a scan (by path or JSON body), read an
audit's ``meta``, the security summary. Every route, its answers and errors: docs/api.md.

Plain handlers, ``handler(req, ctx) -> HttpResponse``, wired by ``http_routes.py`` (auth
level ``FUNCTION``); the shared answer and parameter helpers are in ``responses.py``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from ..config import ScannerConfig, load_config
from ..errors import ConfigurationError, RequestError, StorageError
from ..models import AuditMeta
from ..queue import QueueEncoding, build_message, enqueue
from ..storage import QueueConnection
from ..registry import allowed_reference, parse_image_reference, parse_platform
from ..storage import META_BLOB, REPORT_BLOB, AuditIndex, AuditRow, FleetState, current_snapshot, fleet_state_of, audit_folder, iso8601, same_image, validate_audit_id
from .host import message_encoding
from .responses import (
    JSON_MIMETYPE,
    ApiError,
    answer,
    flag_param,
    json_object,
    json_response,
    limit_param,
    route_segment,
    string_field,
)
from .settings import load_function_settings

SCAN_BODY_FIELDS = ("image", "audit-id", "platform")
SCAN_BODY_EXAMPLE = '{"image": "registry.example.com/team/app:1.0", "audit-id": "optional-id"}'
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

    def fleet_state(self) -> FleetState:
        """The images' current state (issue 24): every question about *now* reads it."""
        return fleet_state_of(self.config.settings)

    def path(self, route: str) -> str:
        """A root-relative link: right behind any proxy or custom domain."""
        prefix = self.route_prefix.strip("/")
        return f"/{prefix}/{route}" if prefix else f"/{route}"


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
    return answer(
        req,
        ("POST",),
        lambda: _enqueue_scan(ctx, _image_from_route(req), req.params.get("audit-id"), req.params.get("platform"),
                              _requester(req)),
    )


def request_scan(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST scans`` with ``{"image": ..., "audit-id": ...}``."""

    def run() -> func.HttpResponse:
        body = json_object(req.get_body(), SCAN_BODY_FIELDS, SCAN_BODY_EXAMPLE)
        if "image" not in body:
            raise ApiError(
                400,
                "missing-field",
                "is required: the image reference to scan, e.g. "
                "registry.example.com/team/app:1.0 or ...@sha256:<digest>",
                "image",
            )
        image = string_field(body, "image")
        audit_id = string_field(body, "audit-id") if "audit-id" in body else None
        platform = string_field(body, "platform") if "platform" in body else None
        allowed_reference(image, "image")  # ALLOWED_REGISTRIES: 400 registry-not-allowed naming "image"
        return _enqueue_scan(ctx, image, audit_id, platform, _requester(req))

    return answer(req, ("POST",), run)


def get_audit(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET audits/{audit_id}``: the meta, verbatim."""

    def run() -> func.HttpResponse:
        audit_id = validate_audit_id(req.route_params.get("audit_id", ""), field="audit-id", recorded=True)
        with ctx.audit_index() as index:
            meta = index.read_meta(audit_id)  # None also when the index outlived the folder
        if meta is None:
            raise ApiError(
                404,
                "not-found",
                f"no audit {audit_id!r} has been recorded; a requested scan appears here once it has finished",
                "audit-id",
            )
        return func.HttpResponse(meta, status_code=200, mimetype=JSON_MIMETYPE, charset="utf-8")

    return answer(req, ("GET",), run)


def security_summary(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``GET security/summary``: the fleet's totals (images by their latest audit's category, from
    the fleet snapshot: one point read) and one page of audits (one listing of the index)."""

    def run() -> func.HttpResponse:
        limit = limit_param(req.params.get("limit"))
        cursor = req.params.get("cursor") or None
        with_totals = flag_param(req.params.get("totals"), "totals", default=cursor is None)
        with ctx.audit_index() as index:
            rows, next_cursor = index.page(limit, cursor)
        document: dict[str, Any] = {}
        if with_totals:
            snapshot = current_snapshot(ctx.fleet_state())
            document |= snapshot.totals() | {"totals-at": iso8601(snapshot.taken_at)}
        next_link = None
        if next_cursor:
            next_link = f"{ctx.path('security/summary')}?{urlencode({'limit': limit, 'cursor': next_cursor})}"
        document |= {
            "audits": [row_document(row, ctx) for row in rows],
            "limit": limit,
            "next-cursor": next_cursor,
            "links": {"next": next_link},
        }
        return json_response(200, document)

    return answer(req, ("GET",), run)


# -- the parts ---------------------------------------------------------------


def _requester(req: func.HttpRequest) -> str | None:
    """Who asks (App Service authentication), recorded on the message for four eyes (issue 25)."""
    from ..approvals import ReviewerRefused, requester_from

    try:
        return requester_from({key.lower(): value for key, value in req.headers.items()})
    except ReviewerRefused as refused:
        raise ApiError(refused.status, "invalid-field", refused.message, refused.field) from None


def _enqueue_scan(ctx: ApiContext, image: str, audit_id: str | None, platform: str | None = None,
                  requested_by: str | None = None) -> func.HttpResponse:
    if audit_id is not None:
        audit_id = validate_audit_id(audit_id, field="audit-id")
        _check_reuse(ctx, audit_id, image)
    else:
        audit_id = str(uuid.uuid4())
    platform = str(parse_platform(platform, field="platform")) if platform is not None else None
    message = build_message(image, audit_id, created_at=time.time(), platform=platform, trigger="request",
                            requested_by=requested_by)
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
            **({"requested-by": requested_by} if requested_by else {}),
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


def _check_reuse(ctx: ApiContext, audit_id: str, image: str) -> None:
    """An audit id names one image's audits: re-used for another image it would move the id's
    verdicts and history to that image (issue 23), so that is a 409 (one HEAD and one GET)."""
    with ctx.audit_index() as index:
        data = index.read_meta(audit_id)
    if data is None:
        return
    earlier = AuditMeta.model_validate_json(data).image_tag
    if earlier is None or not same_image(earlier, image):
        raise ApiError(409, "audit-id-in-use", f"audit id {audit_id!r} names audits of {earlier or 'an image tarball'}: "
                       "re-use it only to scan that image again, or leave audit-id out for a new one", "audit-id")


def _image_from_route(req: func.HttpRequest) -> str:
    name = route_segment(req, "name")
    tag = route_segment(req, "tag")
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
    if "/" in tag:  # "80/latest" would turn {name} into a registry host: 169.254.169.254:80/latest
        raise ApiError(400, "invalid-field", f"{tag[:200]!r} is not allowed: a tag (letters, digits, '_', '.', '-', "
                       "no '/') or a digest sha256:<64 hex>", "tag")
    image = f"{name}@{tag}" if ":" in tag else f"{name}:{tag}"
    parse_image_reference(image, field="tag")
    try:  # the allowlist applies to the whole reference the route builds, not only to {name}
        allowed_reference(image, "name")
    except RequestError as error:
        raise ApiError(400, getattr(error, "reason", "invalid-field"), str(error).removeprefix("name: "), "name") from None
    return image


def row_document(row: AuditRow, ctx: ApiContext) -> dict[str, Any]:
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
        "platform-digest": row.platform_digest,
        "trivy-db-updated-at": row.db_updated_at,
        "decision": row.decision, **row.exploits(),  # issue 15: KEV count, highest EPSS
    }


__all__ = [
    "ApiContext",
    "ApiError",
    "row_document",
    "get_audit",
    "request_scan",
    "request_scan_by_path",
    "security_summary",
    "serve",
]
