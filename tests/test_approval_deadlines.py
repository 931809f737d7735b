"""Grace periods' rules (issue 25, item 1) against real Azurite: which condition sets the
deadline (a KEV ``dueDate``, ``0`` for at once, the default), a reviewer extending a deadline
with a reason or revoking at once through the HTTP routes, the deadline timer's exactly-once
under two concurrent runs, the approvals list showing the deadline, and a bad ``revocation:``
section stopping start-up with the field and what it allows. The end to end path with trivy:
tests/test_approval_grace.py."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest

from scanner_core.approvals import ApprovalBook, ApprovalStore, apply_deadlines, approval_id, decide_request
from scanner_core.approvals import Decision, Reviewer
from scanner_core.config import load_config
from scanner_core.errors import ConfigurationError
from scanner_core.functions import extend, get_approval, list_approvals, revoke
from scanner_core.models import Finding, KevEntry
from scanner_core.policy import RevocationPolicy
from scanner_core.storage import iso8601
from tests.support.webhook import WebhookReceiver
from tests.test_approval_rules import DIGEST, REPOSITORY, meta, store_for
from tests.test_approvals import call, decide
from tests.test_http_api import make_api
from tests.test_policy import write_policy

NOW = 1_796_000_100  # a little after meta()'s audits
OTHER = "sha256:" + "cd" * 32
POLICY = {"default": "review", "revocation": {"grace": "14d", "conditions": [
    {"id": "kev-due", "kev": True, "grace": "kev-due-date"},
    {"id": "fixable-critical-now", "severity": "critical", "fixable": True, "grace": 0},
]}}


def _approved_book(store: ApprovalStore, revocation: RevocationPolicy | None, now: float = NOW) -> ApprovalBook:
    book = ApprovalBook(store, None, clock=lambda: now, revocation=revocation)
    assert book.after_audit(meta("a1")) == "created"
    request, etag = store.get(approval_id(REPOSITORY, DIGEST))
    decide_request(store, request.id, Decision("approve", Reviewer("alice", False), "ok"), etag, iso8601(NOW))
    return book


def _finding(cve: str, *, due: str | None = None, fixed: str | None = None) -> Finding:
    return Finding(vulnerability_id=cve, pkg_name="openssl", severity="CRITICAL", installed_version="1",
                   fixed_version=fixed, kev=KevEntry(due_date=due) if due else None)


def _rescan(audit_id: str, *findings: Finding, at: int = 1_796_000_050):
    audit = meta(audit_id, status="failed", at=at)
    counts = dict(audit.vulnerabilities or {}) | {"critical": len(findings), "total": len(findings)}
    return audit.model_copy(update={"details": list(findings), "vulnerabilities": counts})


def test_the_first_matching_condition_sets_the_deadline(scanner_env, audits) -> None:
    policy = RevocationPolicy.model_validate(POLICY["revocation"])
    store = store_for(scanner_env, audits)
    book = _approved_book(store, policy)
    # A KEV finding: its dueDate (the end of that day, UTC), not the 14 days of the default.
    assert book.after_audit(_rescan("a2", _finding("CVE-2026-0001", due="2027-03-01"))) == "at-risk"
    request, _ = store.get(approval_id(REPOSITORY, DIGEST))
    assert (request.state, request.at_risk.deadline, request.at_risk.rule) == ("at-risk", "2027-03-02T00:00:00Z",
                                                                               "kev-due")
    assert request.allowed and request.at_risk.findings == ["CVE-2026-0001"] and request.at_risk.from_state == "approved"
    # A later audit adds a fixable critical whose grace is 0: revoked at once, naming it.
    assert book.after_audit(_rescan("a3", _finding("CVE-2026-0001", due="2027-03-01"),
                                    _finding("CVE-2026-0002", fixed="1.1"), at=1_796_000_060)) == "revoked"
    request, _ = store.get(request.id)
    assert request.state == "revoked" and "CVE-2026-0002" in request.reason and not request.allowed
    assert [(h.from_state, h.to_state) for h in store.history(request.id)][-2:] == [
        ("approved", "at-risk"), ("at-risk", "revoked")]


def test_without_a_revocation_section_a_new_critical_revokes_at_once(scanner_env, audits) -> None:
    store = store_for(scanner_env, audits)
    book = _approved_book(store, None)
    assert book.after_audit(_rescan("a2", _finding("CVE-2026-0003"))) == "revoked"


def test_a_reviewer_extends_with_a_reason_or_revokes_at_once(scanner_env, azurite, audits, tmp_path) -> None:
    write_policy(scanner_env, tmp_path, POLICY)
    store = store_for(scanner_env, audits)
    now = time.time()
    book = _approved_book(store, RevocationPolicy.model_validate(POLICY["revocation"]), now)
    assert book.after_audit(_rescan("a2", _finding("CVE-2026-0004"), at=int(now))) == "at-risk"
    ctx = make_api(azurite)
    ids = {"approval_id": approval_id(REPOSITORY, DIGEST)}
    _, request, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
    deadline = request["at-risk"]["deadline"]
    later = iso8601(int(now) + 30 * 86_400)

    status, error, _ = decide(extend, ctx, ids["approval_id"], headers["ETag"], {"reviewer": "carol", "deadline": later})
    assert (status, error["error"]["field"]) == (400, "reason")
    status, error, _ = decide(extend, ctx, ids["approval_id"], headers["ETag"],
                              {"reviewer": "carol", "reason": "x", "deadline": "2020-01-01T00:00:00Z"})
    assert status == 400 and error["error"]["field"] == "deadline" and deadline in error["error"]["message"]
    status, error, _ = decide(extend, ctx, ids["approval_id"], headers["ETag"],
                              {"reviewer": "carol", "reason": "x", "accept": []})
    assert status == 400 and error["error"]["field"] == "accept" and "deadline" in error["error"]["message"]
    status, extended, headers = decide(extend, ctx, ids["approval_id"], headers["ETag"],
                                       {"reviewer": "carol", "reason": "vendor patch due on the 20th", "deadline": later})
    assert status == 200 and extended["state"] == "at-risk" and extended["at-risk"]["deadline"] == later
    entry = extended["history-entry"]
    assert entry["deadline"] == later and deadline in entry["reason"] and "vendor patch" in entry["reason"]
    status, listed, _ = call(list_approvals, ctx, "GET", "approvals", params={"status": "at-risk"})
    assert status == 200 and [(a["id"], a["deadline"]) for a in listed["approvals"]] == [(ids["approval_id"], later)]

    with WebhookReceiver() as receiver:
        scanner_env.set(NOTIFY_WEBHOOK_URLS=receiver.url)
        ctx = make_api(azurite)
        status, error, _ = decide(revoke, ctx, ids["approval_id"], headers["ETag"], {"reviewer": "carol"})
        assert (status, error["error"]["field"]) == (400, "reason")
        status, revoked, _ = decide(revoke, ctx, ids["approval_id"], headers["ETag"],
                                    {"reviewer": "carol", "reason": "exploited in the wild"})
        assert status == 200 and revoked["state"] == "revoked" and revoked["allowed"] is False
        assert "at-risk" not in revoked
        assert receiver.wait_for(1)
        (event,) = [r.json() for r in receiver.all()]
        assert (event["event"], event["approval-id"], event["reason"]) == (
            "approval-revoked", ids["approval_id"], "exploited in the wild")
    status, error, _ = decide(extend, ctx, ids["approval_id"], revoked["etag"],
                              {"reviewer": "carol", "reason": "x", "deadline": later})
    assert status == 409 and error["error"]["code"] == "invalid-transition" and "at-risk" in error["error"]["message"]


def test_two_timer_runs_at_once_revoke_once(scanner_env, audits) -> None:
    store = store_for(scanner_env, audits)
    policy = RevocationPolicy.model_validate({"grace": "1d"})
    book = _approved_book(store, policy)
    assert book.after_audit(_rescan("a2", _finding("CVE-2026-0005"))) == "at-risk"
    start = threading.Barrier(4)
    runs = []

    def run() -> None:
        start.wait()
        runs.append(apply_deadlines(store, None, 0, NOW + 2 * 86_400))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(r.revoked) for r in runs) == 1, runs
    # A damaged request among the at-risk ones is reported, and the others still get their deadlines.
    book.after_audit(meta("b1").model_copy(update={"image": f"{REPOSITORY}:2.0@{OTHER}", "image_digest": OTHER}))
    other, etag = store.get(approval_id(REPOSITORY, OTHER))
    decide_request(store, other.id, Decision("approve", Reviewer("alice", False), "ok"), etag, iso8601(NOW))
    assert book.after_audit(_rescan("b2", _finding("CVE-2026-0008")).model_copy(
        update={"image": f"{REPOSITORY}:2.0@{OTHER}", "image_digest": OTHER})) == "at-risk"
    damaged = "ap-" + "0" * 24
    audits.client.upload_blob(store.request_name(damaged), b"{not json")
    audits.client.upload_blob(f"{store.scope('at-risk')}0000000000-{damaged}.row", b"",
                              metadata={"id": damaged, "state": "at-risk"})
    run = apply_deadlines(store, None, 0, NOW + 2 * 86_400)
    assert (run.revoked, run.unreadable) == ([approval_id(REPOSITORY, OTHER)], [damaged])
    moves = [(h.from_state, h.to_state) for h in store.history(approval_id(REPOSITORY, DIGEST))]
    assert moves.count(("at-risk", "revoked")) == 1


def test_a_bad_revocation_section_names_the_field_and_what_it_allows(scanner_env, tmp_path) -> None:
    write_policy(scanner_env, tmp_path, {"revocation": {"grace": "7x", "conditions": [
        {"id": "k", "severity": "urgent", "grace": "1d"}, {"id": "k2", "grace": "1d", "kev": True, "due": 1}]}})
    with pytest.raises(ConfigurationError) as error:
        load_config()
    text = "; ".join(error.value.problems)
    assert "revocation.grace" in text and "7d, 12h or 30m" in text and "kev-due-date" in text
    assert "urgent is not a severity" in text and "critical" in text
    assert "due" in text and "unknown field; allowed: id, severity, fixable, kev, epss, rule, grace" in text


def test_kev_due_dates_are_read_from_the_details() -> None:
    from scanner_core.approvals import revocation_causes
    from tests.test_approval_rules import approved

    causes = revocation_causes(approved([]), _rescan("a9", _finding("CVE-1", due="2027-01-15")), date(2026, 12, 1))
    assert causes is not None and causes.threats[0].kev_due == date(2027, 1, 15) and causes.threats[0].kev


def test_the_metrics_the_digest_and_the_dashboard_list_show_at_risk_with_the_deadline(scanner_env, azurite,
                                                                                     audits) -> None:
    from scanner_core.approvals import build_digest
    from scanner_core.storage import AuditIndex
    from tests.test_audit_index import folder_of
    from tests.test_metrics import samples, scrape

    api = make_api(azurite)
    # As the API and the scan path do: every saved request updates its digest's fleet state (issue 24),
    # which the metrics read.
    store = ApprovalStore(api.config.settings.blob_container_url, api.short_id, fleet_state=api.fleet_state)
    book = _approved_book(store, RevocationPolicy.model_validate({"grace": "3d"}))
    rescan = _rescan("a2", _finding("CVE-2026-0006"))
    with AuditIndex(api.config.settings.blob_container_url, api.short_id) as index:
        index.record(rescan, folder_of(rescan, api.short_id))
    api.fleet_state().record(rescan, folder_of(rescan, api.short_id))
    assert book.after_audit(rescan) == "at-risk"
    request, _ = store.get(approval_id(REPOSITORY, DIGEST))
    deadline = request.at_risk.deadline
    assert deadline == iso8601(NOW + 3 * 86_400)

    families = scrape(api)["families"]
    [state] = samples(families, "trivy_scanner_image_approval", image_digest=DIGEST)
    [due] = samples(families, "trivy_scanner_image_approval_deadline_timestamp_seconds", image_digest=DIGEST)
    assert state.labels["state"] == "at-risk" and due.value == NOW + 3 * 86_400

    digest = build_digest(api.fleet_state().approvals(NOW + 60), NOW + 60)  # the digest reads the state too
    assert [(item["state"], item["deadline"]) for item in digest["at-risk"]] == [("at-risk", deadline)]
    assert digest["decisions"] == [] and f"(deadline {deadline})" in digest["text"] and "1 at risk" in digest["text"]


def test_the_dashboard_shows_the_deadline_and_a_click_revokes_at_once(scanner_env, azurite, audits) -> None:
    import json

    from scanner_core.config import load_config
    from scanner_core.storage import AuditIndex, fleet_state_of
    from tests.support.api_server import ApiServer
    from tests.support.browser import find_chromium
    from tests.support.cdp import DevToolsBrowser
    from tests.support.easy_auth import principal_headers
    from tests.test_approval_page import KEY, ROW

    scanner_env.set(WEBSITE_AUTH_ENABLED="True")
    store = store_for(scanner_env, audits)
    now = time.time()
    book = _approved_book(store, RevocationPolicy.model_validate({"grace": "5d"}), now)
    rescan = _rescan("a2", _finding("CVE-2026-0007"), at=int(now))
    folder = f"trivy-{scanner_env.short_id}/20261202-000000-a2"
    AuditIndex(audits.sas_url, scanner_env.short_id).record(rescan, folder)
    fleet_state_of(load_config().settings).record(rescan, folder)  # the dashboard lists images from the state
    assert book.after_audit(rescan) == "at-risk"
    deadline = store.get(approval_id(REPOSITORY, DIGEST))[0].at_risk.deadline
    field = ROW + " [data-field={}]"
    with ApiServer(make_api(azurite), KEY, principal_headers("alice@contoso.com")) as server, \
            DevToolsBrowser(str(find_chromium())) as browser:
        tab = browser.new_tab(f"{server.base_url}/api/dashboard?code={KEY}")
        tab.wait_for("document.body.dataset.state === 'ready'")
        assert tab.evaluate(f"document.querySelector({json.dumps(ROW)}).dataset.state") == "at-risk"
        shown = tab.evaluate(f"document.querySelector({json.dumps(field.format('deadline'))}).textContent")
        assert shown == f"until {deadline} (CVE-2026-0007)"
        assert tab.evaluate("document.querySelector('#images [data-approval]').textContent") == \
            f"approval: at-risk until {deadline}"
        tab.type_into(field.format("reason-input"), "exploited in the wild")
        tab.click(ROW + " button[data-action=revoke]")
        tab.wait_for(f"document.querySelector({json.dumps(ROW)}).dataset.state === 'revoked'")
        assert tab.evaluate(f"document.querySelector({json.dumps(field.format('deadline'))}).textContent") == ""
    assert store.get(approval_id(REPOSITORY, DIGEST))[0].decided_by == "alice@contoso.com"


def test_four_eyes_refuses_a_reviewer_who_only_names_themselves(scanner_env, audits) -> None:
    from scanner_core.approvals import DecisionRules, ReviewerRefused

    store = store_for(scanner_env, audits)
    assert ApprovalBook(store, None).after_audit(meta("r1", trigger="request", requested_by="bob")) == "created"
    request, etag = store.get(approval_id(REPOSITORY, DIGEST))
    assert request.requesters == ["bob"]
    for reviewer in (Reviewer("mallory", False), Reviewer("BOB", True)):
        with pytest.raises(ReviewerRefused) as refused:
            decide_request(store, request.id, Decision("approve", reviewer, "ok"), etag, iso8601(NOW),
                           DecisionRules(four_eyes=True))
        assert refused.value.status == 403 and "APPROVAL_FOUR_EYES" in refused.value.message
    decided, _, _ = decide_request(store, request.id, Decision("approve", Reviewer("alice", True), "ok"), etag,
                                   iso8601(NOW), DecisionRules(four_eyes=True))
    assert decided.state == "approved"
