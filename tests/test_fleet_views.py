"""Issue 24, items 2 and 4: ``GET /api/images`` pages every image of the fleet from its
state (filters, cursors, the snapshot's totals), images past ``FLEET_IMAGE_TTL_DAYS``
leave it, and bad parameters get a clear 400. Real Azurite Table service; metas made
here and recorded through the product's own writer (no trivy needed for the listing)."""

from __future__ import annotations

import base64
import time

import pytest

from scanner_core.config import load_config
from scanner_core.functions import fleet_images
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.storage import FleetState, fleet_state_of, take_snapshot
from tests.test_http_api import answer, error_of, http, make_api

NOW = int(time.time())
HOSTILE = "registry.example:5000/a_b/c-d.e/f"


def meta(n: int, repository: str, *, critical: int, result: AuditResult = AuditResult.SUCCEEDED,
         age_days: int = 0) -> AuditMeta:
    ok = result is AuditResult.SUCCEEDED
    requested = NOW - age_days * 86_400 - n
    return AuditMeta(
        audit_id=f"a-{n}", scanner_id="s", scanner_version="t", timestamp=requested + 1, requested_at=requested,
        audit_result=result, image=f"{repository}:v{n}", image_digest=f"sha256:{n:064x}",
        scan_status=("failed" if critical else "passed") if ok else None,
        vulnerabilities={"critical": critical, "high": 0, "medium": 0, "low": 0, "unknown": 0, "total": critical}
        if ok else None, failure_reason=None if ok else "timeout",
    )


@pytest.fixture
def fleet(scanner_env, azurite) -> FleetState:
    scanner_env.set(FLEET_IMAGE_TTL_DAYS="30")
    state = fleet_state_of(load_config().settings)
    for n in range(24):
        state.record(meta(n, "registry.example/team/app" if n % 2 else HOSTILE, critical=n % 3), f"trivy-x/{n}")
    state.record(meta(90, "registry.example/team/app", critical=0, result=AuditResult.AUDIT_FAILED), "trivy-x/90")
    state.record(meta(91, "registry.example/old/app", critical=5, age_days=40), "trivy-x/91")  # past the TTL
    state.approval_changed(HOSTILE, f"sha256:{2:064x}", "ap-x", "approved")
    return state


def pages(api, **params: str) -> list[dict]:
    found, cursor = [], None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        page = answer(fleet_images(http("GET", "images", params=query), api), 200)
        found.append(page)
        cursor = page["next-cursor"]
        if cursor is None:
            return found


def test_every_image_once_filters_and_totals(fleet, azurite):
    api = make_api(azurite)
    listed = pages(api, limit="7")
    images = [image for page in listed for image in page["images"]]
    assert len(images) == 25 and len({(i["repository"], i["tag"]) for i in images}) == 25
    assert all(len(page["images"]) <= 7 for page in listed) and len(listed) >= 4
    assert "registry.example/old/app" not in {i["repository"] for i in images}  # left the fleet (TTL)
    assert listed[0]["totals"] is None  # no snapshot yet: said, not walked

    failed = [i for p in pages(api, status="failed") for i in p["images"]]
    assert sorted(i["audit-id"] for i in failed) == sorted(f"a-{n}" for n in range(24) if n % 3)
    assert [i["status"] for p in pages(api, status="audit-failed") for i in p["images"]] == ["audit-failed"]
    mine = [i for p in pages(api, repository=HOSTILE) for i in p["images"]]
    assert len(mine) == 12 and {i["repository"] for i in mine} == {HOSTILE}
    approved = [i for p in pages(api, approval="approved") for i in p["images"]]
    assert [(i["repository"], i["tag"], i["approval"]) for i in approved] == [(HOSTILE, "v2", "approved")]

    snapshot = take_snapshot(fleet)
    assert snapshot.gone == 1 and snapshot.approvals["approved"] == 1
    first = answer(fleet_images(http("GET", "images", params={"limit": "5"}), api), 200)
    assert first["totals"] == {"total": 25, "passed": 8, "warning": 0, "failed": 16, "audit-failed": 1}


@pytest.mark.parametrize(("params", "field", "says"), [
    ({"limit": "1001"}, "limit", "1 to 1000"),
    ({"limit": "0"}, "limit", "1 to 1000"),
    ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor", "not a cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'c1:{"PartitionKey": 1}').decode()}, "cursor", "not a cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'c1:{"PartitionKey": "a", "RowKey": "b", "x": "c"}').decode()},
     "cursor", "not a cursor"),
    ({"status": "evil"}, "status", "passed, warning, failed, audit-failed"),
    ({"approval": "maybe"}, "approval", "one of"),
    ({"repository": "bad repo/#?"}, "repository", ""),
    ({"repository": "registry.example/team/app:1.0"}, "repository", "without tag or digest"),
])
def test_bad_parameters_are_a_clear_400(scanner_env, azurite, params, field, says):
    error = error_of(fleet_images(http("GET", "images", params=params), make_api(azurite)), 400)
    assert error["field"] == field and says in error["message"], error
