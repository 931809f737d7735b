"""Four eyes and owners (issue 25, item 5), with real parts: bob asks for a scan of team A's
image through ``POST /api/scans`` behind App Service authentication; the queue message and
the audit record him, and the request lists him as a requester. With
``APPROVAL_FOUR_EYES=true`` he may not approve it; the policy's ``approvers:`` gives team A's
images to team A's reviewers, so team B's reviewer is refused naming the entry; the rule that
decided the request needs ``approvals: 2``, so alice's approval is recorded and leaves it
pending, alice again is refused, and carol's second approval approves it; the history shows
both. Real registry, Azurite, trivy; the handlers get ``func.HttpRequest``s as the host builds them.
"""

from __future__ import annotations


from scanner_core.approvals import approval_id
from scanner_core.config import load_config
from scanner_core.functions import ApiContext, approve, get_approval, image_verdict, request_scan
from tests.conftest import REPO_ROOT, Audits
from tests.support.easy_auth import principal_headers
from tests.test_approvals import call, decide
from tests.test_monitor_rescan import meta_of
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture

TEAM_A, TEAM_B = "team-a-reviewers", "team-b-reviewers"
POLICY = f"""\
default: review
rules:
  - {{id: two-for-critical, action: review, severity: {{critical: "> 0"}}, approvals: 2}}
approvers:
  - {{id: team-a, repository: "team-a/*", roles: [{TEAM_A}]}}
  - {{id: team-b, repository: "team-b/*", roles: [{TEAM_B}]}}
"""


def test_the_requester_may_not_approve_owners_decide_and_a_rule_needs_two_reviewers(
        monitor: Monitor, audits: Audits, azurite, tmp_path) -> None:  # noqa: F811
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    monitor.configure([], POLICY_PATH=str(policy), WEBSITE_AUTH_ENABLED="True", APPROVAL_FOUR_EYES="true")
    digest = monitor.push("team-a/app", "1.0")
    repository = f"{monitor.registry.address}/team-a/app"
    ctx = ApiContext(config=load_config(), queue_connection=azurite.connection_string, queue_name=monitor.queue.name,
                     message_encoding="none")
    bob = principal_headers("bob@contoso.com", groups=[TEAM_A])
    status, queued, _ = call(request_scan, ctx, "POST", "scans", body={"image": f"{repository}@{digest}"}, headers=bob)
    assert status == 202 and queued["requested-by"] == "bob@contoso.com", queued
    (message,) = monitor.queue.take()
    assert message.payload["requested-by"] == "bob@contoso.com"
    assert monitor.queue.deliver(message, REPO_ROOT) == []
    audit = meta_of(monitor, audits, queued["audit-id"])
    assert audit["requested-by"] == "bob@contoso.com" and audit["policy"]["rule"] == "two-for-critical"

    ids = {"approval_id": approval_id(repository, digest)}
    _, request, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
    assert request["state"] == "pending" and request["requesters"] == ["bob@contoso.com"]
    etag = headers["ETag"]

    # Team B's reviewer: 403 naming the owners' entry; nothing changes.
    dave = principal_headers("dave@contoso.com", groups=[TEAM_B])
    status, error, _ = decide(approve, ctx, ids["approval_id"], etag, {"reason": "fine"}, dave)
    assert status == 403 and error["error"]["field"] == "reviewer", error
    assert "'team-a'" in error["error"]["message"] and TEAM_A in error["error"]["message"]
    # The requester, though on team A: 403 naming the rule.
    status, error, _ = decide(approve, ctx, ids["approval_id"], etag, {"reason": "fine"}, bob)
    assert status == 403 and "APPROVAL_FOUR_EYES" in error["error"]["message"], error
    # A function-key caller naming themselves cannot pass the owners' check either.
    status, error, _ = decide(approve, ctx, ids["approval_id"], etag, {"reason": "fine", "reviewer": "eve"})
    assert status == 403 and "unauthenticated" in error["error"]["message"]

    # Two different reviewers of team A: the first approval is recorded, the state waits for the second.
    alice = principal_headers("alice@contoso.com", roles=[TEAM_A])
    status, first, headers = decide(approve, ctx, ids["approval_id"], etag, {"reason": "reviewed the criticals"}, alice)
    assert status == 200 and first["state"] == "pending" and first["allowed"] is False, first
    assert first["history-entry"]["approval"] == "1 of 2" and [a["by"] for a in first["approvals"]] == [
        "alice@contoso.com"]
    status, error, _ = decide(approve, ctx, ids["approval_id"], headers["ETag"], {"reason": "again"}, alice)
    assert status == 403 and "two-for-critical requires 2 different reviewers" in error["error"]["message"]
    carol = principal_headers("carol@contoso.com", groups=[TEAM_A])
    status, second, _ = decide(approve, ctx, ids["approval_id"], headers["ETag"], {"reason": "agreed"}, carol)
    assert status == 200 and second["state"] == "approved" and second["history-entry"]["approval"] == "2 of 2"

    _, final, _ = call(get_approval, ctx, "GET", "x", route_params=ids)
    approvals = [(h["by"], h.get("from"), h["to"], h.get("approval")) for h in final["history"][1:]]
    assert approvals == [("alice@contoso.com", "pending", "pending", "1 of 2"),
                         ("carol@contoso.com", "pending", "approved", "2 of 2")]
    status, verdict, _ = call(image_verdict, ctx, "GET", "v", route_params={"name": repository.replace("/", "%2F")},
                              params={"digest": digest})
    assert status == 200 and verdict["allowed"] is True and verdict["approval"]["decided-by"] == "carol@contoso.com"
