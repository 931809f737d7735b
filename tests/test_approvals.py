"""The approval gate end to end (issue 15, "done when" without the policy's dry
run): a pushed tag is scanned by the watch timer and gets a pending request; a
reviewer authenticated by App Service approves it with an accepted CVE;
``/verdict`` says allowed; a second reviewer with a stale ETag gets 409; the DB
learns a new critical; the rescan revokes the approval and a real receiver gets
exactly one ``approval-revoked`` event. Real registry, Azurite, trivy and
webhook receiver; the routes' handlers are called with ``func.HttpRequest``s as
the Functions host builds them.
"""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
from azure.functions.timer import TimerRequest

from scanner_core.functions import (
    ApiContext,
    approval_security,
    approve,
    evaluate_policy,
    get_approval,
    image_verdict,
    list_approvals,
    reject,
)
from scanner_core.functions import monitor_handlers
from tests.conftest import REPO_ROOT, Audits
from tests.support.easy_auth import principal_headers
from tests.support.webhook import WebhookReceiver
from tests.test_http_api import make_api
from tests.test_monitor_rescan import DAY1, DAY2, meta_of, write_db
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture

BASE = "http://localhost:7071/api"
APPROVERS = "release-approvers"
NEW_CVE = "CVE-2099-0100"


def call(handler: Any, ctx: ApiContext, method: str, route: str, *, route_params: dict[str, str] | None = None,
         params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         body: dict[str, Any] | bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    request = func.HttpRequest(method=method, url=f"{BASE}/{route}", headers=headers or {}, params=params or {},
                               route_params=route_params or {}, body=data)
    response = handler(request, ctx)
    return response.status_code, json.loads(response.get_body()), dict(response.headers)


def decide(handler: Any, ctx: ApiContext, approval_id: str, etag: str | None, body: dict[str, Any],
           headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    sent = dict(headers or {}) | ({"If-Match": etag} if etag else {})
    return call(handler, ctx, "POST", f"approvals/{approval_id}/x", route_params={"approval_id": approval_id},
                headers=sent, body=body)


def critical_ids(security_scan: dict[str, Any]) -> list[str]:
    return [d["VulnerabilityID"] for d in security_scan["details"] if d["Severity"] == "CRITICAL"]


def test_push_review_approve_verdict_stale_learn_revoke_notify_once(monitor: Monitor, audits: Audits, azurite,
                                                                      tmp_path) -> None:  # noqa: F811
    cache = write_db(tmp_path / "cache", DAY1)
    with WebhookReceiver() as receiver:
        monitor.env.set(TRIVY_CACHE_DIR=str(cache), NOTIFY_WEBHOOK_URLS=receiver.url, APPROVER_ROLES=APPROVERS,
                        WEBSITE_AUTH_ENABLED="True")
        monitor.configure([{"repository": f"{monitor.registry.address}/gate/app"}])
        assert monitor.watch() == []
        digest = monitor.push("gate/app", "1.4.3")
        (message,) = _watch(monitor)
        assert monitor.queue.deliver(message, REPO_ROOT) == []
        first = meta_of(monitor, audits, message.payload["image-scan-id"])
        ctx = make_api(azurite)

        # 1. The scanned tag has one pending request, listed newest first, with the seed's security block.
        status, page, _ = call(list_approvals, ctx, "GET", "approvals", params={"status": "pending"})
        assert status == 200 and len(page["approvals"]) == 1, page
        row = page["approvals"][0]
        repository = f"{monitor.registry.address}/gate/app"
        assert (row["repository"], row["tag"], row["digest"], row["state"]) == (repository, "1.4.3", digest, "pending")
        approval_id = row["id"]
        ids = {"approval_id": approval_id}
        status, request, headers = call(get_approval, ctx, "GET", f"approvals/{approval_id}", route_params=ids)
        assert status == 200 and request["state"] == "pending" and request["audit-id"] == first["audit-id"]
        etag = headers["ETag"]
        assert request["etag"] == etag
        status, security, _ = call(approval_security, ctx, "GET", "x", route_params=ids)
        assert status == 200 and set(security) >= {"image_name", "tag_name", "security_scan", "created_at"}
        scan = security["security_scan"]
        assert (security["image_name"], security["tag_name"]) == (repository, "1.4.3")
        assert set(scan) == {"scanned_at", "status", "vulnerabilities", "summary", "details"}
        assert set(scan["vulnerabilities"]) == {"critical", "high", "medium", "low", "unknown", "total"}
        assert scan["status"] == first["scan-status"] == "failed"
        (accepted_cve,) = critical_ids(scan)

        # 2. Not an approver: 403, nothing changes. An approver without a reason: 400 naming "reason".
        bob = principal_headers("bob@contoso.com", roles=["developers"])
        status, error, _ = decide(approve, ctx, approval_id, etag, {"reason": "looks fine"}, bob)
        assert status == 403 and error["error"]["field"] == "reviewer" and APPROVERS in error["error"]["message"]
        alice = principal_headers("alice@contoso.com", roles=[APPROVERS])
        status, error, _ = decide(approve, ctx, approval_id, etag, {}, alice)
        assert status == 400 and error["error"]["field"] == "reason" and "failed" in error["error"]["message"]
        status, error, _ = decide(approve, ctx, approval_id, None, {"reason": "x"}, alice)
        assert status == 428 and error["error"]["field"] == "If-Match"

        # 3. Alice approves, accepting the critical CVE until the next release.
        accept = [{"id": accepted_cve, "until": "2099-01-31", "justification": "fixed in 1.4.4"}]
        status, approved, headers = decide(approve, ctx, approval_id, etag,
                                           {"reason": "accepted until the 1.4.4 release", "accept": accept}, alice)
        assert status == 200, approved
        assert (approved["state"], approved["decided-by"], approved["authenticated"]) == (
            "approved", "alice@contoso.com", True)
        assert headers["ETag"] != etag and approved["etag"] == headers["ETag"]

        # 4. /verdict says allowed, from the approval.
        status, verdict, _ = call(image_verdict, ctx, "GET", "v", route_params={"name": repository.replace("/", "%2F")},
                                  params={"digest": digest})
        assert status == 200 and verdict["allowed"] is True, verdict
        assert (verdict["approval"]["id"], verdict["approval"]["state"], verdict["approval"]["decided-by"]) == (
            approval_id, "approved", "alice@contoso.com")
        assert verdict["scan-status"] == "failed"  # the scan's status, beside the team's decision

        # 5. A second reviewer who read the first version gets 409; nothing changed.
        carol = principal_headers("carol@contoso.com", groups=[APPROVERS])
        status, error, headers = decide(reject, ctx, approval_id, etag, {"reason": "too risky"}, carol)
        assert status == 409 and error["error"]["code"] == "stale-version"
        assert headers["ETag"] == approved["etag"]
        status, now, _ = call(get_approval, ctx, "GET", "x", route_params=ids)
        assert (now["state"], now["decided-by"], len(now["history"])) == ("approved", "alice@contoso.com", 2)

        # 6. The DB learns a new critical; the rescan revokes the approval and notifies once.
        write_db(cache, DAY2, refreshed=True)
        monitor.env.set(RESCAN_MAX_AGE_HOURS="0")
        monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT)
        (rescan,) = monitor.queue.take()
        assert monitor.queue.deliver(rescan, REPO_ROOT) == []
        assert monitor.queue.deliver(rescan, REPO_ROOT) == []  # redelivered: no second revocation
        second = meta_of(monitor, audits, rescan.payload["image-scan-id"])
        status, revoked, _ = call(get_approval, ctx, "GET", "x", route_params=ids)
        assert revoked["state"] == "revoked" and NEW_CVE in revoked["reason"], revoked
        assert accepted_cve not in revoked["reason"]  # accepted, and its date is not past
        assert revoked["latest-audit-id"] == second["audit-id"]
        history = revoked["history"]
        assert [(h["from"] if "from" in h else None, h["to"]) for h in history] == [
            (None, "pending"), ("pending", "approved"), ("approved", "revoked")]
        assert history[1]["by"] == "alice@contoso.com" and history[1]["authenticated"] is True
        assert history[1]["accept"] == accept and history[1]["audit-id"] == first["audit-id"]
        assert history[2]["audit-id"] == second["audit-id"] and history[2]["by"] == "scanner"
        assert all(h["at"].endswith("Z") for h in history)
        status, verdict, _ = call(image_verdict, ctx, "GET", "v", route_params={"name": repository.replace("/", "%2F")},
                                  params={"digest": digest})
        assert verdict["allowed"] is False and verdict["approval"]["state"] == "revoked"

        assert receiver.wait_for(3)  # the first audit's, the rescan's change, the revocation
        receiver.wait_for(4, timeout=2)
        revocations = [r.json() for r in receiver.all() if r.json().get("event") == "approval-revoked"]
        assert len(revocations) == 1, [r.json() for r in receiver.all()]
        assert revocations[0]["approval-id"] == approval_id and NEW_CVE in revocations[0]["text"]
        assert revocations[0]["audit-id"] == second["audit-id"]

        # 7. Someone editing the rules asks for a dry run on the revoking audit: the decision the
        #    new rule would make, rule by rule with why, and the recorded one (nothing changes).
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(
            "default: review\nrules:\n"
            "  - {id: no-critical-fixable, action: reject, severity: {critical: '> 0'}, fixable-only: true}\n"
        )
        monitor.env.set(POLICY_PATH=str(policy_file))
        before = {name: audits.read(name) for name in audits.all_names()}
        status, dry_run, _ = call(evaluate_policy, make_api(azurite), "POST", "policy/evaluate",
                                  body={"audit-id": second["audit-id"]})
        assert status == 200, dry_run
        assert dry_run["recorded"] == second["policy"]
        assert dry_run["decision"]["action"] == "reject" and dry_run["decision"]["rule"] == "no-critical-fixable"
        assert dry_run["decision"]["reason"].startswith("rule no-critical-fixable: ") and NEW_CVE in dry_run[
            "decision"]["reason"]
        assert [r["rule"] for r in dry_run["rules"] if r["matched"]] == ["no-critical-fixable"]
        assert {name: audits.read(name) for name in audits.all_names()} == before


def _watch(monitor: Monitor) -> list:
    monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
    return monitor.queue.take()


def test_an_event_grid_push_creates_a_request_and_broken_bookkeeping_never_fails_an_audit(
        monitor: Monitor, audits: Audits, caplog) -> None:  # noqa: F811
    from scanner_core.approvals import ApprovalStore, approval_id
    from tests.support.monitor import image_pushed_event

    monitor.configure([])
    store = ApprovalStore(audits.sas_url, monitor.env.short_id)
    good, broken = monitor.push("pushed/app", "3.1"), monitor.push("pushed/broken", "1.0")
    repository = f"{monitor.registry.address}/pushed/broken"
    audits.client.upload_blob(store.request_name(approval_id(repository, broken)), b"{not json")  # a damaged request

    for repo, digest, tag in (("pushed/app", good, "3.1"), ("pushed/broken", broken, "1.0")):
        event = image_pushed_event(monitor.registry.address, repo, digest, tag)
        assert monitor_handlers.on_image_pushed(event, lambda _: None, REPO_ROOT) is not None
    for message in monitor.queue.take():
        assert monitor.queue.deliver(message, REPO_ROOT) == []
        assert meta_of(monitor, audits, message.payload["image-scan-id"])["audit-result"] == "succeeded"

    created = store.get(approval_id(f"{monitor.registry.address}/pushed/app", good))
    assert created is not None and created[0].state == "pending" and created[0].tag == "3.1"
    assert "approval request not updated" in caplog.text  # the damaged one: logged, the audit recorded
