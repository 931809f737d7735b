"""The approval gate's rules, each against real Azurite where it stores
something: the first state (policy or the seed's auto-rejection), revocation
(expired acceptances, the policy), concurrent first audits, reviewers without
authentication, hostile reasons, bad bodies, the daily digest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date

import pytest

from scanner_core.approvals import (
    ApprovalBook,
    ApprovalRequest,
    ApprovalStore,
    ReviewerRefused,
    approval_id,
    initial_state,
    reviewer_from,
    revocation_reason,
    send_digest,
)
from azure.functions.timer import TimerRequest

from scanner_core.errors import ConfigurationError
from scanner_core.functions import approve, get_approval, list_approvals, load_function_settings, on_digest, reject, request_scan
from scanner_core.models import AcceptedRisk, AuditMeta, AuditResult, Finding, PolicyDecision
from scanner_core.follow_up import Notifier
from scanner_core.redact import Redactor
from scanner_core.config import load_config
from scanner_core.storage import AzureBlobStore, FleetState, fleet_state_of, iso8601
from tests.conftest import REPO_ROOT
from tests.support.easy_auth import principal_headers
from tests.support.webhook import WebhookReceiver
from tests.test_approvals import call, decide
from tests.test_audit_index import SHORT_ID, folder_of
from tests.test_http_api import http, make_api, queued

REPOSITORY = "registry.example.com/team/app"
DIGEST = "sha256:" + "ab" * 32


def meta(audit_id: str, *, status: str = "passed", critical: list[str] = (), trigger: str | None = "watch",
         at: int = 1_796_000_000, **fields: object) -> AuditMeta:
    details = [Finding(vulnerability_id=cve, pkg_name="openssl", severity="CRITICAL", installed_version="1")
               for cve in critical]
    counts = {"critical": len(critical), "high": 0, "medium": 0, "low": 0, "unknown": 0, "total": len(critical)}
    return AuditMeta(
        audit_id=audit_id, scanner_id="0123abcd-0000-4000-8000-000000000000", scanner_version="test",
        timestamp=at, requested_at=at - 5, audit_result=AuditResult.SUCCEEDED, trigger=trigger,  # type: ignore[arg-type]
        image=f"{REPOSITORY}:1.0@{DIGEST}", image_digest=DIGEST, vulnerabilities=counts, scan_status=status,
        summary=f"{status.upper()}: {len(critical)} critical", details=details, critical_threshold=0, **fields,
    )


def store_for(scanner_env, audits) -> ApprovalStore:
    return ApprovalStore(audits.sas_url, scanner_env.short_id)


# -- the first state ---------------------------------------------------------------


def test_the_first_state_comes_from_the_policy_when_it_decided() -> None:
    for action, state in (("approve", "auto-approved"), ("reject", "auto-rejected"), ("review", "pending")):
        decided = meta("p", policy=PolicyDecision(action=action, rule="no-critical-fixable",
                                                  reason="rule no-critical-fixable: 0 critical findings with a fix"))
        assert initial_state(decided) == (state, "rule no-critical-fixable",
                                          "rule no-critical-fixable: 0 critical findings with a fix")


def test_without_a_policy_the_seeds_auto_rejection_decides() -> None:
    state, by, reason = initial_state(meta("r", status="failed", critical=["CVE-1", "CVE-2"], decision="rejected"))
    assert (state, by) == ("auto-rejected", "TRIVY_AUTO_REJECT_CRITICAL")
    assert "TRIVY_AUTO_REJECT_CRITICAL" in reason and "2 critical findings" in reason
    assert initial_state(meta("p", status="failed", critical=["CVE-1"], decision="pending"))[0] == "pending"


# -- revocation ----------------------------------------------------------------------


def approved(accepted: list[AcceptedRisk], decided_status: str = "failed") -> ApprovalRequest:
    return ApprovalRequest(
        id=approval_id(REPOSITORY, DIGEST), repository=REPOSITORY, digest=DIGEST, state="approved",
        decided_by="alice", audit_id="a1", latest_audit_id="a1", decided_status=decided_status, accepted=accepted,
        created_at="2026-12-01T00:00:00Z", updated_at="2026-12-01T00:00:00Z", security_scan={},
    )


def test_an_acceptance_holds_until_its_date_then_revokes() -> None:
    request = approved([AcceptedRisk(id="CVE-2026-1111", until=date(2026, 12, 31), justification="1.4.4")])
    rescan = meta("a2", status="failed", critical=["CVE-2026-1111"])
    assert revocation_reason(request, rescan, date(2026, 12, 31)) is None
    reason = revocation_reason(request, rescan, date(2027, 1, 1))
    assert reason is not None and "acceptance expired: CVE-2026-1111 (accepted until 2026-12-31)" in reason
    assert reason.startswith("audit a2: ")


def test_a_new_critical_a_newly_failed_status_or_the_policys_reject_revokes() -> None:
    request = approved([AcceptedRisk(id="CVE-1")], decided_status="passed")
    assert "not accepted: CVE-2" in revocation_reason(request, meta("a2", status="failed", critical=["CVE-1", "CVE-2"]),
                                                      date(2026, 12, 2))
    eosl = meta("a3", status="failed")  # no critical, but failed (an end-of-life OS)
    assert "scan status is now failed" in revocation_reason(request, eosl, date(2026, 12, 2))
    rejected = meta("a4", policy=PolicyDecision(action="reject", rule="no-eosl", reason="the OS is end-of-life"))
    assert "rule no-eosl rejects it" in revocation_reason(request, rejected, date(2026, 12, 2))
    assert revocation_reason(request, meta("a5"), date(2026, 12, 2)) is None
    assert revocation_reason(request.model_copy(update={"state": "rejected"}), eosl, date(2026, 12, 2)) is None


# -- storage -------------------------------------------------------------------------


def test_concurrent_first_audits_create_one_request(scanner_env, audits) -> None:
    store = store_for(scanner_env, audits)
    start = threading.Barrier(6)
    outcomes: list[object] = []

    def first_audit(n: int) -> None:
        book = ApprovalBook(store, None)
        start.wait()
        outcomes.append(book.after_audit(meta(f"watch-{n}")))

    threads = [threading.Thread(target=first_audit, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("created") == 1, outcomes
    rows = list(store.rows())
    assert [row["id"] for row in rows] == [approval_id(REPOSITORY, DIGEST)]
    history = store.history(rows[0]["id"])
    assert [(h.from_state, h.to_state) for h in history] == [(None, "pending")]
    names = [n for n in audits.all_names() if "/approvals/" in n]
    assert len([n for n in names if "/requests/" in n]) == 1 and len([n for n in names if "/history/" in n]) == 1


def test_rescans_and_unrequested_scans_create_nothing(scanner_env, audits) -> None:
    store = store_for(scanner_env, audits)
    assert ApprovalBook(store, None).after_audit(meta("rescan-1", trigger="rescan")) is None
    assert ApprovalBook(store, None).after_audit(meta("cli-1", trigger=None)) is None
    assert list(store.rows()) == []
    assert ApprovalBook(store, None).after_audit(meta("api-1", trigger="request")) == "created"


def test_http_api_scan_requests_say_trigger_request(scanner_env, azurite) -> None:
    api = make_api(azurite)
    response = request_scan(http("POST", "scans", body={"image": "redis:7.2-alpine", "audit-id": "api-1"}), api)
    assert response.status_code == 202
    [message] = queued(api)
    assert '"trigger":"request"' in message.content.replace(" ", "")


# -- reviewers -----------------------------------------------------------------------


def test_a_principal_header_is_trusted_only_with_app_service_authentication_on() -> None:
    alice = principal_headers("alice@contoso.com", roles=["approvers"])
    headers = {k.lower(): v for k, v in alice.items()}
    assert reviewer_from(headers, None, ["approvers"], {"WEBSITE_AUTH_ENABLED": "True"}).name == "alice@contoso.com"
    with pytest.raises(ReviewerRefused) as refused:
        reviewer_from(headers, None, ["approvers"], {})  # a forged header without Easy Auth
    assert refused.value.status == 403
    named = reviewer_from(headers, "mallory", [], {})
    assert (named.name, named.authenticated) == ("mallory", False)


def test_function_key_reviewers_hostile_reasons_and_bad_bodies(scanner_env, azurite, audits) -> None:
    store = store_for(scanner_env, audits)
    assert ApprovalBook(store, None).after_audit(meta("api-1", trigger="request")) == "created"
    ctx = make_api(azurite)
    ids = {"approval_id": approval_id(REPOSITORY, DIGEST)}
    status, request, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
    etag = headers["ETag"]

    status, error, _ = decide(approve, ctx, ids["approval_id"], etag, {"reason": "ok"})
    assert (status, error["error"]["field"]) == (400, "reviewer")
    status, error, _ = decide(approve, ctx, ids["approval_id"], etag, {"reviewer": "dave", "reason": "x" * 1_000_000})
    assert status == 400 and error["error"]["field"] == "reason" and "4000" in error["error"]["message"]
    status, error, _ = decide(approve, ctx, ids["approval_id"], etag,
                              {"reviewer": "dave", "accept": [{"id": "CVE-1", "until": "2020-01-01"}]})
    assert status == 400 and error["error"]["field"] == "accept[0].until"
    status, error, _ = decide(approve, ctx, ids["approval_id"], etag, {"reviewer": "dave", "approved": True})
    assert status == 400 and error["error"] == {"code": "unknown-field", "field": "approved",
                                                "message": "unknown field; allowed fields: reason, accept, reviewer"}
    status, error, _ = call(list_approvals, ctx, "GET", "approvals", params={"status": "waiting"})
    assert status == 400 and error["error"]["field"] == "status" and "pending" in error["error"]["message"]

    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>\x00\x07\x1b[31m\u202eevil\r\n' + "é" * 100
    status, decided, headers = decide(reject, ctx, ids["approval_id"], etag, {"reviewer": "dave", "reason": hostile})
    assert status == 200 and decided["reason"] == hostile and decided["authenticated"] is False
    status, stored, _ = call(get_approval, ctx, "GET", "x", route_params=ids)
    assert stored["history"][-1]["reason"] == hostile and stored["history"][-1]["authenticated"] is False
    assert stored["history"][-1]["by"] == "dave"
    for query, expected in (({"repository": REPOSITORY, "status": "rejected"}, 1), ({"status": "pending"}, 0),
                            ({"repository": REPOSITORY}, 1), ({"repository": "registry.example.com/team/other"}, 0)):
        status, listed, _ = call(list_approvals, ctx, "GET", "approvals", params=query)
        assert status == 200 and len(listed["approvals"]) == expected, (query, listed)
    status, error, _ = decide(reject, ctx, ids["approval_id"], headers["ETag"], {"reviewer": "dave", "reason": "x"})
    assert status == 409 and error["error"]["code"] == "invalid-transition" and "approve" not in error["error"]["field"]


# -- the digest ----------------------------------------------------------------------


def _state_store(scanner_env, audits) -> tuple[FleetState, ApprovalStore]:
    """The scanner's fleet state and a store that keeps it in step, as the API and the scan path have."""
    state = fleet_state_of(load_config().settings)
    return state, ApprovalStore(audits.sas_url, scanner_env.short_id, fleet_state=lambda: state)


def _audited(state: FleetState, book: ApprovalBook, audit: AuditMeta) -> str | None:
    """As the scan path does: the audit's state first (the approval's hook updates it), then the request."""
    state.record(audit, folder_of(audit, SHORT_ID))
    return book.after_audit(audit)


def test_the_digest_posts_one_summary_a_day(scanner_env, audits) -> None:
    state, store = _state_store(scanner_env, audits)
    now = time.time()
    book = ApprovalBook(store, None, clock=lambda: now)
    others = [(f"registry.example.com/team/svc-{n}:1.0@sha256:" + f"{n:02d}" * 32) for n in range(3)]
    for n, image in enumerate(others):
        digest = image.rsplit("@", 1)[1]
        audit = meta(f"w{n}", critical=["CVE-9"] * n, status="failed" if n else "passed", at=int(now),
                     decision="rejected" if n == 2 else "pending").model_copy(
            update={"image": image, "image_digest": digest})
        assert _audited(state, book, audit) == "created"
    secret = "digest-signing-secret-0123456789"
    with WebhookReceiver(secret=secret.encode()) as receiver:  # verifies the signature (issue 17)
        scanner_env.set(NOTIFY_WEBHOOK_URLS=receiver.url, NOTIFY_WEBHOOK_SECRET=secret)
        first = on_digest(TimerRequest(), REPO_ROOT)  # the timer's body
        notifier = Notifier([receiver.url], AzureBlobStore(audits.sas_url, Redactor([])))
        second = send_digest(store, state, notifier, now + 60)
        assert receiver.wait_for(1)
        time.sleep(0.5)
        assert (first.sent, second.sent, len(receiver.all())) == (True, False, 1)
        assert receiver.all()[0].verified is True  # the digest is signed like every other event
        event = receiver.all()[0].json()
    first_page, cursor = store.page(2)
    second_page, end = store.page(2, cursor)
    assert (len(first_page), len(second_page), end) == (2, 1, None) and cursor
    assert {r["id"] for r in first_page} | {r["id"] for r in second_page} == {r["id"] for r in store.rows()}
    assert event["event"] == "approval-digest"
    assert len(event["pending"]) == 2 and [d["state"] for d in event["decisions"]] == ["auto-rejected"]
    assert event["worst"][0]["image"] == "registry.example.com/team/svc-2:1.0"
    assert "2 pending" in event["text"]


def test_the_digest_reads_the_fleet_state_not_the_approvals_index(scanner_env, audits, monkeypatch) -> None:
    state, store = _state_store(scanner_env, audits)
    now = time.time()

    def audit(name: str, at: float, decision: str = "pending") -> AuditMeta:
        digest = "sha256:" + name.encode().hex().ljust(64, "0")
        return meta(name, at=int(at), decision=decision).model_copy(
            update={"image": f"registry.example.com/team/{name}:1.0@{digest}", "image_digest": digest})

    assert _audited(state, ApprovalBook(store, None, clock=lambda: now), audit("waiting", now)) == "created"
    assert _audited(state, ApprovalBook(store, None, clock=lambda: now), audit("fresh", now, "rejected")) == "created"
    old = ApprovalBook(store, None, clock=lambda: now - 2 * 86_400)
    assert _audited(state, old, audit("stale", now, "rejected")) == "created"  # rescanned today, decided 2 days ago
    risky = audit("risky", now)
    state.record(risky, folder_of(risky, SHORT_ID))  # the grace timer's transition, as its store hook writes it
    state.approval_changed(REPOSITORY.rsplit("/", 1)[0] + "/risky", risky.image_digest, "ap-risky", "at-risk",
                           iso8601(int(now) + 86_400), int(now) - 60, "grace")
    ttl = FleetState(state.table, 2)  # FLEET_IMAGE_TTL_DAYS=2: "gone" is out of the fleet
    _audited(state, ApprovalBook(store, None, clock=lambda: now - 3 * 86_400), audit("gone", now - 3 * 86_400))

    def no_index(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the digest read the approvals index")

    monkeypatch.setattr(ApprovalStore, "rows", no_index)
    event = send_digest(store, ttl, Notifier([], AzureBlobStore(audits.sas_url, Redactor([]))), now).event
    assert [i["image"] for i in event["pending"]] == ["registry.example.com/team/waiting:1.0"]  # once, not per entity
    assert [(i["image"], i["state"]) for i in event["decisions"]] == [("registry.example.com/team/fresh:1.0",
                                                                       "auto-rejected")]
    assert [(i["id"], i["deadline"], i["decided-by"]) for i in event["at-risk"]] == [
        ("ap-risky", iso8601(int(now) + 86_400), "grace")]
    assert "1 pending, 1 decided and 0 revoked" in event["text"] and "1 at risk" in event["text"]


def test_the_digest_timer_exists_only_with_a_schedule(monkeypatch) -> None:
    probe = ("import json, function_app; print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())"
             " for f in function_app.app.get_functions()}))")
    env = {k: v for k, v in os.environ.items() if k != "DIGEST_SCHEDULE"} | {"DIGEST_SCHEDULE": "0 0 7 * * *"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    functions = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(b["type"], b["schedule"]) for b in functions["approval_digest"]["bindings"]] == [
        ("timerTrigger", "0 0 7 * * *")]
    monkeypatch.setenv("DIGEST_SCHEDULE", "daily")
    with pytest.raises(ConfigurationError) as invalid:
        load_function_settings()
    assert "DIGEST_SCHEDULE" in str(invalid.value)
