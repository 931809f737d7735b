"""The approvals on the dashboard, in Debian's Chromium driven over the DevTools
protocol with real mouse clicks: two reviewers signed in with App Service
authentication (the host's front and Easy Auth are the documented doubles of
tests/support/api_server.py) open the page; one click approves; the other
reviewer's click, made on the version they loaded, shows the conflict and
changes nothing. A hostile reason is stored verbatim and shown as text."""

from __future__ import annotations

import json

from scanner_core.approvals import ApprovalBook, ApprovalStore, Decision, Reviewer, approval_id, decide_request
from scanner_core.config import load_config
from scanner_core.storage import AuditIndex, fleet_state_of
from tests.support.api_server import ApiServer
from tests.support.browser import find_chromium
from tests.support.cdp import DevToolsBrowser
from tests.support.easy_auth import principal_headers
from tests.test_approval_rules import DIGEST, REPOSITORY, meta
from tests.test_http_api import make_api

KEY = "approval-page-key"
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>\x00\x1b[2J\u202e!'
ROW = f'#approvals tr[data-approval-id="{approval_id(REPOSITORY, DIGEST)}"]'


def test_a_click_approves_and_a_stale_second_click_shows_the_conflict(scanner_env, audits, azurite) -> None:
    scanner_env.set(APPROVER_ROLES="approvers", WEBSITE_AUTH_ENABLED="True")
    audit = meta("watch-1", status="failed", critical=["CVE-2026-1111"])
    AuditIndex(audits.sas_url, scanner_env.short_id).record(audit, f"trivy-{scanner_env.short_id}/20261202-000000-watch-1")
    # The dashboard lists the images' state (issue 24), written beside the index by the ship stage.
    fleet_state_of(load_config().settings).record(audit, f"trivy-{scanner_env.short_id}/20261202-000000-watch-1")
    store = ApprovalStore(audits.sas_url, scanner_env.short_id)
    assert ApprovalBook(store, None).after_audit(audit) == "created"
    request, etag = store.get(approval_id(REPOSITORY, DIGEST))
    decide_request(store, request.id, Decision("reject", Reviewer("dave", False), HOSTILE), etag, "2026-12-02T10:00:00Z")

    ctx = make_api(azurite)
    alice, bob = principal_headers("alice@contoso.com", roles=["approvers"]), principal_headers(
        "bob@contoso.com", groups=["approvers"])
    with ApiServer(ctx, KEY, alice) as for_alice, ApiServer(ctx, KEY, bob) as for_bob, \
            DevToolsBrowser(str(find_chromium())) as browser:
        tab_a = browser.new_tab(f"{for_alice.base_url}/api/dashboard?code={KEY}")
        tab_b = browser.new_tab(f"{for_bob.base_url}/api/dashboard?code={KEY}")
        for tab in (tab_a, tab_b):
            tab.wait_for("document.body.dataset.state === 'ready'")
            assert tab.evaluate(f"document.querySelector({json.dumps(ROW)}).dataset.state") == "rejected"
        # The approval state beside the scan status, in the audits' table.
        assert tab_a.evaluate("document.querySelector('#images [data-approval]').dataset.approval") == "rejected"
        # The hostile reason is text: no element, no script ran.
        assert tab_a.evaluate(f"document.querySelector({json.dumps(ROW + ' [data-field=reason]')}).textContent") \
            == HOSTILE
        assert tab_a.evaluate("document.querySelectorAll('#approvals img, #approvals script').length") == 0

        # Alice types a reason (the scan failed) and clicks approve.
        tab_a.type_into(ROW + " [data-field=reason-input]", "accepted until 1.4.4 <b>ships</b>")
        tab_a.click(ROW + " button[data-action=approve]")
        tab_a.wait_for(f"document.querySelector({json.dumps(ROW)}).dataset.state === 'approved'")
        assert tab_a.evaluate(f"document.querySelector({json.dumps(ROW + ' [data-field=result]')}).textContent") \
            == "approved by alice@contoso.com"

        # Bob, on the version he loaded, clicks approve too: the conflict, and nothing changes.
        tab_b.click(ROW + " button[data-action=approve]")
        tab_b.wait_for(f"document.querySelector({json.dumps(ROW + ' [data-field=result]')}).dataset.conflict")
        result = tab_b.evaluate(f"document.querySelector({json.dumps(ROW + ' [data-field=result]')}).textContent")
        assert "conflict" in result and "alice@contoso.com" in result
        assert tab_b.evaluate(f"document.querySelector({json.dumps(ROW)}).dataset.state") == "approved"
        history = tab_a.evaluate(f"[...document.querySelectorAll({json.dumps(ROW + ' [data-field=history] li')})]"
                                 ".map(li => li.dataset.to)")
        assert history == ["pending", "rejected", "approved"]
        assert "pwned" not in (tab_a.evaluate("document.title"), tab_b.evaluate("document.title"))

    request, _ = store.get(request.id)
    assert (request.state, request.decided_by, request.authenticated) == ("approved", "alice@contoso.com", True)
    assert request.reason == "accepted until 1.4.4 <b>ships</b>"
    entries = store.history(request.id)
    assert [(e.by, e.to_state) for e in entries] == [("scanner", "pending"), ("dave", "rejected"),
                                                    ("alice@contoso.com", "approved")]
    assert entries[1].reason == HOSTILE  # stored verbatim
