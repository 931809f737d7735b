"""``GET /api/images`` (issue 24): every image of the fleet, paged, from the images'
current state (``storage/fleet_state.py``), never from the audit history. Filters:
``status`` (the latest audit's category), ``approval`` (the approval state) and
``repository``; ``sort`` (``severity``, ``kev``, ``epss``, ``age``, ``recent``: served in that
order by the table kept for it, ``storage/fleet_order.py``, never sorted here); the first page
carries the fleet's totals from the last snapshot (one point read; the heartbeat timer and
``reindex`` take it). Costs: docs/api.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import azure.functions as func

from ..approvals import APPROVAL_STATES
from ..registry import parse_image_reference
from ..storage import CATEGORIES, ORDERS, ImageState, iso8601, page_images, read_fleet_snapshot
from .http_api import ApiContext
from .responses import ApiError, answer, flag_param, json_response, limit_param

FILTERS = ("status", "approval", "repository", "sort")


def fleet_images(req: func.HttpRequest, ctx: ApiContext) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        limit = limit_param(req.params.get("limit"))
        cursor = req.params.get("cursor") or None
        status = _choice(req.params.get("status"), "status", CATEGORIES)
        approval = _choice(req.params.get("approval"), "approval", APPROVAL_STATES)
        repository = _repository(req.params.get("repository"))
        sort = _choice(req.params.get("sort"), "sort", ORDERS)
        with_totals = flag_param(req.params.get("totals"), "totals", default=cursor is None)
        state = ctx.fleet_state()
        images, next_cursor = page_images(state, limit, cursor, repository=repository, category=status,
                                          approval=approval, sort=sort)
        document: dict[str, Any] = {}
        if with_totals:
            snapshot = read_fleet_snapshot(state)
            document["totals"] = snapshot.totals() if snapshot else None
            document["totals-at"] = iso8601(snapshot.taken_at) if snapshot else None
        query = {k: v for k, v in (("status", status), ("approval", approval), ("repository", repository),
                                   ("sort", sort)) if v}
        next_link = (f"{ctx.path('images')}?{urlencode(query | {'limit': limit, 'cursor': next_cursor})}"
                     if next_cursor else None)
        document |= {"images": [image_document(image, ctx) for image in images], "limit": limit,
                     "next-cursor": next_cursor, "links": {"next": next_link}}
        return json_response(200, document)

    return answer(req, ("GET",), run)


def image_document(image: ImageState, ctx: ApiContext) -> dict[str, Any]:
    """One image as the fleet list shows it: its latest audit and its latest succeeded audit's findings."""
    name = quote(image.repository, safe="")
    return {
        "image": image.image, "repository": image.repository, "tag": image.tag, "digest": image.digest,
        "audit-id": image.audit_id, "audit-result": image.audit_result, "status": image.category,
        "failure-reason": image.failure_reason, "scan-status": image.last_status,
        "vulnerabilities": image.vulnerabilities, "secrets": image.secrets, "kev": image.kev,
        "epss-max": image.epss_max, "policy": image.policy_action, "decision": image.decision,
        "platform-digest": image.platform_digest, "approval": image.approval_state,
        "approval-deadline": image.approval_deadline, "requested-at": iso8601(image.requested_at),
        "scanned-at": iso8601(image.scanned_at), "trivy-db-updated-at": image.db_updated_at,
        "links": {"audit": ctx.path(f"audits/{quote(image.audit_id)}"), "history": ctx.path(f"images/{name}/history")},
    }


def _choice(value: str | None, field: str, allowed: tuple[str, ...]) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise ApiError(400, "invalid-field", f"{value[:100]!r} is not allowed: one of {', '.join(allowed)}", field)
    return value


def _repository(value: str | None) -> str | None:
    if not value:
        return None
    reference = parse_image_reference(value, field="repository")
    if reference.tag or reference.digest:
        raise ApiError(400, "invalid-field", f"{value[:200]!r} must be a repository without tag or digest",
                       "repository")
    return f"{reference.registry}/{reference.repository}"
