"""The approval gate's HTTP API (issue 15): reviewers list, read and decide (approve,
reject, revoke at once, or extend an at-risk request's deadline (issue 25), with ``If-Match``). The routes, bodies and answers: docs/api.md; the gate itself:
docs/policy.md. ``reason`` is kept verbatim up to ``MAX_REASON_CHARS`` (400 beyond: the
field and the limit are named).
"""

from __future__ import annotations

import json
import re
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from ..approvals import (
    APPROVAL_STATES,
    REVOKED_EVENT,
    ApprovalNotFound,
    ApprovalStore,
    Decision,
    DecisionRules,
    InvalidTransition,
    ReviewerRefused,
    StaleVersion,
    decide_request,
    reviewer_from,
    send_transition,
)
from ..models import AcceptedRisk
from ..registry import parse_image_reference
from ..storage import iso8601
from .http_api import ApiContext
from .responses import ApiError, answer, json_object, json_response, limit_param

MAX_REASON_CHARS = 4000
DECISION_EXAMPLE = '{"reason": "...", "accept": [{"id": "CVE-...", "until": "YYYY-MM-DD", "justification": "..."}]}'
MAX_ACCEPT = 100
MAX_JUSTIFICATION_CHARS = 1000
DECISION_FIELDS = ("reason", "accept", "reviewer")
EXTEND_FIELDS = ("reason", "deadline", "reviewer")
EXTEND_EXAMPLE = '{"deadline": "YYYY-MM-DDTHH:MM:SSZ", "reason": "..."}'
ACCEPT_FIELDS = ("id", "until", "justification")
_ID = re.compile(r"ap-[0-9a-f]{24}")
_FINDING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def store_of(ctx: ApiContext) -> ApprovalStore:
    return ApprovalStore(ctx.config.settings.blob_container_url, ctx.short_id, fleet_state=ctx.fleet_state)


def list_approvals(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        status = req.params.get("status") or None
        if status is not None and status not in APPROVAL_STATES:
            raise ApiError(400, "invalid-field", f"{status!r} is not allowed: one of {', '.join(APPROVAL_STATES)}",
                           "status")
        repository = _repository(req.params.get("repository")) if req.params.get("repository") else None
        limit = limit_param(req.params.get("limit"))
        rows, next_cursor = store_of(ctx).page(limit, req.params.get("cursor") or None, state=status,
                                               repository=repository)
        query = {k: v for k, v in (("status", status), ("repository", repository)) if v}
        next_link = f"{ctx.path('approvals')}?{urlencode(query | {'limit': limit, 'cursor': next_cursor})}" \
            if next_cursor else None
        return json_response(200, {"approvals": [_row_document(row, ctx) for row in rows], "limit": limit,
                                   "next-cursor": next_cursor, "links": {"next": next_link}})

    return answer(req, ("GET",), run)


def get_approval(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        store = store_of(ctx)
        identifier = _approval_id(req)
        request, etag = _found(store, identifier)
        history = [entry.document() for entry in store.history(identifier)]
        return json_response(200, _document(request, etag, ctx) | {"history": history}, {"ETag": etag})

    return answer(req, ("GET",), run)


def approval_security(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        request, etag = _found(store_of(ctx), _approval_id(req))
        return json_response(200, {
            "id": request.id, "image_name": request.repository, "tag_name": request.tag,
            "digest": request.digest, "status": request.state, "security_scan": request.security_scan,
            "created_at": request.created_at,
        }, {"ETag": etag})

    return answer(req, ("GET",), run)


def approve(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    return answer(req, ("POST",), lambda: _decide(req, ctx, "approve"))


def reject(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    return answer(req, ("POST",), lambda: _decide(req, ctx, "reject"))


def revoke(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST approvals/{id}/revoke``: a reviewer revokes an allowed request at once (issue 25)."""
    return answer(req, ("POST",), lambda: _decide(req, ctx, "revoke"))


def extend(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    """``POST approvals/{id}/extend``: a reviewer moves an at-risk request's deadline (issue 25)."""
    return answer(req, ("POST",), lambda: _decide(req, ctx, "extend"))


def approval_of(ctx: ApiContext, repository: str | None, digest: str | None) -> dict[str, Any] | None:
    """The approval of an image for ``/verdict``: id, state, who decided, why (``None``: no request)."""
    from ..approvals import approval_id

    if not repository or not digest:
        return None
    found = store_of(ctx).get(approval_id(repository, digest))
    if found is None:
        return None
    request, etag = found
    document = {"id": request.id, "state": request.state, "decided-by": request.decided_by,
                "reason": request.reason, "updated-at": request.updated_at, "etag": etag,
                "accepted": [risk.model_dump(mode="json", exclude_none=True) for risk in request.accepted],
                "links": {"approval": ctx.path(f"approvals/{request.id}")}}
    if request.at_risk is not None:  # issue 25: still allowed until the deadline
        risk = request.at_risk
        document |= {"deadline": risk.deadline, "at-risk": {
            "since": risk.since, "deadline": risk.deadline, "rule": risk.rule, "findings": risk.findings,
            "reason": risk.reason, "audit-id": risk.audit_id}}
    return document


def on_deadlines(timer: func.TimerRequest | None, app_root: Path) -> Any:
    """The deadline timer's body (issue 25): revokes at-risk requests past their deadline and
    sends ``approval-deadline-soon`` within the policy's ``revocation.notice``."""
    from ..approvals import apply_deadlines
    from ..follow_up import Notifier
    from ..policy import load_policy
    from .handlers import make_scanner

    scanner = make_scanner(app_root)
    settings = scanner.config.settings
    notifier = Notifier.from_settings(settings, scanner.blob_store)
    notice = (scanner.config.policy or load_policy(settings)).revocation.notice.seconds
    store = ApprovalStore(settings.blob_container_url, scanner.short_id, fleet_state=scanner.fleet_state)
    run = apply_deadlines(store, notifier, notice)  # a revocation reaches the image's state (verdicts, metrics)
    scanner.logger.info("approval deadlines", fields={"revoked": len(run.revoked), "warned": len(run.warned),
                                                      "raced": len(run.raced), "unreadable": run.unreadable})
    return run


def on_digest(timer: func.TimerRequest | None, app_root: Path) -> Any:
    """The digest timer's body: today's summary to ``NOTIFY_WEBHOOK_URLS``, once a day, from the
    fleet state (O(images) once a day)."""
    from ..approvals import send_digest
    from ..follow_up import Notifier
    from .handlers import make_scanner

    scanner = make_scanner(app_root)
    settings = scanner.config.settings
    notifier = Notifier.from_settings(settings, scanner.blob_store)  # signed with NOTIFY_WEBHOOK_SECRET too
    # One walk of the fleet state (issue 24), never the approvals index; the store names the claim blob.
    result = send_digest(ApprovalStore(settings.blob_container_url, scanner.short_id), scanner.fleet_state(), notifier)
    scanner.logger.info("approval digest", fields={"sent": result.sent, "pending": len(result.event["pending"])})
    return result


# -- the parts ---------------------------------------------------------------


def _decide(req: func.HttpRequest, ctx: ApiContext, action: str) -> func.HttpResponse:
    identifier = _approval_id(req)
    if_match = req.headers.get("if-match")
    if not if_match:
        raise ApiError(428, "precondition-required", "is required: the ETag of the version you decided on "
                       f"(GET {ctx.path(f'approvals/{identifier}')} answers it in its ETag header)", "If-Match")
    if action == "extend":
        body = json_object(req.get_body(), EXTEND_FIELDS, EXTEND_EXAMPLE, empty=True)
    else:
        body = json_object(req.get_body(), DECISION_FIELDS, DECISION_EXAMPLE, empty=True)
    headers = {key.lower(): value for key, value in req.headers.items()}
    try:
        reviewer = reviewer_from(headers, body.get("reviewer"), ctx.config.settings.approver_roles)
    except ReviewerRefused as refused:
        code = "forbidden" if refused.status == 403 else "invalid-field"
        raise ApiError(refused.status, code, refused.message, refused.field) from None
    deadline = body.get("deadline")
    if action == "extend" and not isinstance(deadline, str):
        raise ApiError(400, "invalid-field", "is required: the new deadline, an ISO 8601 UTC time "
                       "YYYY-MM-DDTHH:MM:SSZ after the current one", "deadline")
    decision = Decision(action, reviewer, _reason(body.get("reason")), _accept(body.get("accept")),  # type: ignore[arg-type]
                        deadline=deadline)
    rules = DecisionRules(ctx.config.settings.approval_four_eyes, ctx.config.policy)
    store = store_of(ctx)
    try:
        request, etag, entry = decide_request(store, identifier, decision, _quoted(if_match), _now(), rules)
    except ReviewerRefused as refused:
        raise ApiError(403, "forbidden", refused.message, refused.field) from None
    except StaleVersion:
        current = store.get(identifier)
        raise ApiError(409, "stale-version", "the request changed since the version you saw; nothing was changed: "
                       "read it again and decide on the current version", "If-Match",
                       {"ETag": current[1]} if current else {}) from None
    except InvalidTransition as error:
        raise ApiError(409, "invalid-transition", str(error), "state") from None
    except ApprovalNotFound:
        raise ApiError(404, "not-found", f"no approval request {identifier!r}", "id") from None
    if action == "revoke":
        _send_revoked(ctx, store, request, entry.at)
    return json_response(200, _document(request, etag, ctx) | {"history-entry": entry.document()}, {"ETag": etag})


def _send_revoked(ctx: ApiContext, store: ApprovalStore, request: Any, at: str) -> None:
    """A reviewer's revocation is a transition like the scanner's: one signed event."""
    from ..follow_up import Notifier
    from ..redact import Redactor
    from ..storage import AzureBlobStore

    settings = ctx.config.settings
    if not settings.notify_webhook_urls:
        return
    blob_store = AzureBlobStore(settings.blob_container_url, Redactor(ctx.config.secrets))
    send_transition(Notifier.from_settings(settings, blob_store), store.prefix, REVOKED_EVENT, request,
                    request.latest_audit_id, revoked_at=at)


def _found(store: ApprovalStore, identifier: str) -> tuple[Any, str]:
    found = store.get(identifier)
    if found is None:
        raise ApiError(404, "not-found", f"no approval request {identifier!r}", "id")
    return found


def _approval_id(req: func.HttpRequest) -> str:
    value = req.route_params.get("approval_id") or ""
    if not _ID.fullmatch(value):
        raise ApiError(400, "invalid-field", f"{value[:80]!r} is not an approval id: ap- and 24 hex digits", "id")
    return value


def _repository(value: str) -> str:
    reference = parse_image_reference(value, field="repository")
    if reference.tag or reference.digest:
        raise ApiError(400, "invalid-field", f"{value!r} must be a repository without tag or digest", "repository")
    return f"{reference.registry}/{reference.repository}"


def _reason(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid-field", f"must be a string, got {type(value).__name__}", "reason")
    if len(value) > MAX_REASON_CHARS:
        raise ApiError(400, "invalid-field", f"is {len(value)} characters long; at most {MAX_REASON_CHARS} are allowed",
                       "reason")
    return value


def _accept(value: object) -> list[AcceptedRisk]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ACCEPT:
        raise ApiError(400, "invalid-field", f"must be a list of at most {MAX_ACCEPT} objects "
                       '{"id": "CVE-...", "until": "YYYY-MM-DD", "justification": "..."}', "accept")
    risks = []
    today = datetime.now(timezone.utc).date()
    for position, entry in enumerate(value):
        where = f"accept[{position}]"
        if not isinstance(entry, dict):
            raise ApiError(400, "invalid-field", "must be an object with id, until, justification", where)
        for key in entry:
            if key not in ACCEPT_FIELDS:
                raise ApiError(400, "unknown-field", f"unknown field; allowed fields: {', '.join(ACCEPT_FIELDS)}",
                               f"{where}.{key}")
        identifier = entry.get("id")
        if not isinstance(identifier, str) or not _FINDING_ID.fullmatch(identifier):
            raise ApiError(400, "invalid-field", "is required: a finding id such as CVE-2026-1111 "
                           "(1-128 characters of [A-Za-z0-9._:-])", f"{where}.id")
        until = entry.get("until")
        parsed: date | None = None
        if until is not None:
            try:
                parsed = date.fromisoformat(until) if isinstance(until, str) else None
            except ValueError:
                parsed = None
            if parsed is None or parsed < today:
                raise ApiError(400, "invalid-field", f"{until!r} is not allowed: a date YYYY-MM-DD, today or later",
                               f"{where}.until")
        justification = entry.get("justification", "")
        if not isinstance(justification, str) or len(justification) > MAX_JUSTIFICATION_CHARS:
            raise ApiError(400, "invalid-field", f"must be a string of at most {MAX_JUSTIFICATION_CHARS} characters",
                           f"{where}.justification")
        risks.append(AcceptedRisk(id=identifier, until=parsed, justification=justification))
    return risks


def _quoted(etag: str) -> str:
    etag = etag.strip()
    return etag if etag.startswith('"') or etag.startswith("W/") else f'"{etag}"'


def _now() -> str:
    return iso8601(int(time.time())) or ""


def _document(request: Any, etag: str, ctx: ApiContext) -> dict[str, Any]:
    return request.document() | {
        "etag": etag, "allowed": request.allowed,
        "links": {"self": ctx.path(f"approvals/{request.id}"), "security": ctx.path(f"approvals/{request.id}/security"),
                  "approve": ctx.path(f"approvals/{request.id}/approve"),
                  "reject": ctx.path(f"approvals/{request.id}/reject"),
                  "revoke": ctx.path(f"approvals/{request.id}/revoke"),
                  "extend": ctx.path(f"approvals/{request.id}/extend"),
                  "audit": ctx.path(f"audits/{quote(request.latest_audit_id)}")},
    }


def _row_document(row: dict[str, str], ctx: ApiContext) -> dict[str, Any]:
    identifier = row.get("id", "")
    return {
        "id": identifier, "state": row.get("state"), "repository": row.get("repository"), "tag": row.get("tag"),
        "digest": row.get("digest"), "scan-status": row.get("scanstatus"),
        "vulnerabilities": json.loads(row.get("counts") or "{}"), "decided-by": row.get("decidedby"),
        "audit-id": row.get("auditid"), "created-at": row.get("created"), "updated-at": row.get("updated"),
        "decided-at": row.get("decided"), "deadline": row.get("deadline"),
        "links": {"self": ctx.path(f"approvals/{identifier}"), "security": ctx.path(f"approvals/{identifier}/security")},
    }
