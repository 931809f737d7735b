"""The verdict of one image (by tag, by digest, or both): the latest audit's
verdict document with its approval and ``allowed``. One seam for every caller
that gates on it: the verdict routes (``image_api.py``) and, later, admission.

Issue 24: the image's current state (``storage/fleet_state.py``) is one point read
(two when a tag and a digest disagree), then the approvals of the manifests it
names; no listing of the audit history, whatever its length.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from ..approvals import ALLOWING_STATES
from ..errors import StorageError
from ..io_pool import io_pool
from ..storage import AuditRow, iso8601
from .approvals_api import approval_of
from .http_api import ApiContext

_log = logging.getLogger("scanner_core.verdicts")

def find_verdict(ctx: ApiContext, repository: str, tag: str | None, digest: str | None) -> dict[str, Any] | None:
    """The verdict document of ``repository`` (canonical form) at ``tag`` and/or ``digest``
    (already validated), or ``None`` when this scanner never scanned it."""
    fleet = ctx.fleet_state()
    state = fleet.get(repository, tag, digest)
    if state is None:
        return None
    try:
        fleet.asked(repository, tag, digest, known=state)  # at most one write a day per image: the TTL counts from asks
    except StorageError as error:  # the answer does not depend on it
        _log.warning("the image's last ask not recorded: %s", error)
    row = state.row()
    return _verdict_document(row, ctx) | _gate(ctx, row, digest)


def _gate(ctx: ApiContext, row: AuditRow, asked: str | None) -> dict[str, Any]:
    """``approval`` and ``allowed`` (issue 23): approvals are per platform manifest. A platform's
    digest is allowed when its own request is approved; an image index (asked by its digest or a
    tag) only when every platform it offers is, so neither a reviewer who saw one platform nor a
    requester's choice of platform can make the index allowed; ``platforms`` says which are not."""
    wanted = row.approval_digests  # {manifest digest: platform}
    if asked is not None and asked == row.platform_digest and asked != row.digest:
        wanted = {asked: wanted.get(asked, "")}  # a node that pulls this manifest by its digest
    found = dict(zip(wanted, io_pool().map(lambda digest: approval_of(ctx, row.repository, digest), wanted)))
    allowed = bool(found) and all(a is not None and a["state"] in ALLOWING_STATES for a in found.values())
    # The scanned manifest's request (for a row from before issue 23: the only one asked).
    approval = found.get(row.platform_digest or row.digest) or (next(iter(found.values())) if len(found) == 1 else None)
    document: dict[str, Any] = {"approval": approval, "allowed": allowed}
    if row.platforms:
        document["platforms"] = [
            {"platform": wanted[digest] or None, "digest": digest, "approval": (a or {}).get("state"),
             "allowed": bool(a and a["state"] in ALLOWING_STATES)}
            for digest, a in found.items()
        ]
    return document


def _verdict_document(row: AuditRow, ctx: ApiContext) -> dict[str, Any]:
    return {
        "image": row.image,
        "repository": row.repository,
        "tag": row.tag,
        "digest": row.digest,
        "audit-id": row.audit_id,
        "audit-result": row.audit_result,
        "scan-status": row.scan_status,
        "decision": row.decision,
        "vulnerabilities": row.vulnerabilities,
        "summary": row.summary,
        "failure-reason": row.failure_reason,
        "requested-at": iso8601(row.requested_at),
        "scanned-at": iso8601(row.scanned_at),
        "trivy-db-updated-at": row.db_updated_at,
        "links": {
            "audit": ctx.path(f"audits/{quote(row.audit_id)}"),
            "history": ctx.path(f"images/{quote(row.repository or '', safe='')}/history"),
        },
    }
