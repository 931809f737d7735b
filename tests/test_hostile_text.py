"""Hostile text cannot break storage or pages (issue 23, items 4 and 9).

* An approval's history written by the old code (pydantic leaves U+2028 raw, the old
  reader split on it) still reads, and a new line escapes every line-breaking character.
* A hostile image (a 20,000-character package name holding U+2028, under AGPL, and a
  20,000-character OS version) gets a bounded meta, approval request and webhook body,
  a readable history although the policy's reason quotes the name, and its report keeps
  every string whole. Real registry, trivy, Azurite and webhook receiver.
* On the dashboard (Chromium), a request that cannot be read shows its error in its row;
  the other rows, and the audits, still show.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from scanner_core.approvals import ApprovalBook, ApprovalStore, HistoryEntry, approval_id
from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import get_approval, reject
from scanner_core.models import ELLIPSIS, NAME_CHARS, TEXT_CHARS
from scanner_core.storage import AuditIndex, fleet_state_of
from tests.support.api_server import ApiServer
from tests.support.browser import find_chromium
from tests.support.cdp import DevToolsBrowser
from tests.support.images import SAMPLE_PACKAGES, ApkPackage, build_alpine_image
from tests.support.webhook import WebhookReceiver
from tests.test_approval_rules import DIGEST, REPOSITORY, meta
from tests.test_approvals import call, decide
from tests.test_http_api import make_api
from tests.test_metrics import use_registry

# Every character str.splitlines() breaks on.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
HOSTILE_NAME = "copyleft\u2028lib-" + "n" * 20_000
HOSTILE_OS = "3.18.4" + "9" * 20_000
DOCUMENT_BYTES = 32 * 1024  # what the hostile image's documents stay under (unbounded: 200 KB and more)
KEY = "hostile-text-key"


def test_an_old_history_with_a_raw_line_separator_reads_and_new_lines_escape_every_break(scanner_env, audits,
                                                                                         azurite) -> None:
    store = ApprovalStore(audits.sas_url, scanner_env.short_id)
    assert ApprovalBook(store, None).after_audit(meta("api-1", trigger="request")) == "created"
    ids = {"approval_id": approval_id(REPOSITORY, DIGEST)}
    history = audits.client.get_blob_client(store.history_name(ids["approval_id"]))
    # The old code's line: pydantic's JSON (U+2028 raw) and "\n", appended to the Append Blob.
    old_reason = "first\u2028second\u2029third\x85fourth"
    old = HistoryEntry(at="2026-12-02T10:00:00Z", by="dave", authenticated=False, from_state="pending",
                       to_state="rejected", reason=old_reason, audit_id="api-1")
    assert "\u2028" in old.to_json_bytes().decode()
    history.append_block(old.to_json_bytes() + b"\n")

    ctx = make_api(azurite)
    status, found, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
    assert status == 200, found
    assert [h["reason"] for h in found["history"]][1:] == [old_reason]

    new_reason = f"a{LINE_BREAKS}b"
    status, decided, _ = decide(reject, ctx, ids["approval_id"], headers["ETag"],
                                {"reviewer": "erin", "reason": new_reason})
    assert status == 200, decided
    status, found, _ = call(get_approval, ctx, "GET", "x", route_params=ids)
    assert status == 200 and [h["reason"] for h in found["history"]][1:] == [old_reason, new_reason]
    new_line = history.download_blob().readall().split(b"\n")[-2]
    assert new_line.decode().splitlines() == [new_line.decode()]  # no character of it breaks the line

    # Bytes that no repair reads (written outside the app): a clear 503 naming the history, never a 500.
    history.append_block(b"\xff\xfe{not json\n")
    status, error, _ = call(get_approval, ctx, "GET", "x", route_params=ids)
    assert (status, error["error"]["code"]) == (503, "storage-unavailable")
    assert "history" in error["error"]["message"] and "line 4" in error["error"]["message"]


def test_a_hostile_image_gets_bounded_documents_and_a_readable_history(scanner_env, audits, azurite, registry,
                                                                       tmp_path) -> None:
    packages = (*SAMPLE_PACKAGES, ApkPackage(HOSTILE_NAME, "1.36.1-r2", origin="busybox", license="AGPL-3.0"))
    image = build_alpine_image(tmp_path / "hostile.tar", packages, repo_tag="hostile/app:1.0",
                               alpine_version=HOSTILE_OS)
    digest = registry.push_docker_archive(image.path, "hostile/app", "1.0")
    use_registry(scanner_env, registry)
    policy = tmp_path / "policy.yaml"  # a licence rule: its reason quotes the package's name
    policy.write_text(json.dumps({"default": "review", "rules": [
        {"id": "no-agpl", "action": "reject", "licenses": {"forbidden": "> 0"}}]}))
    with WebhookReceiver() as receiver:
        scanner_env.set(TRIVY_SCANNERS="vuln,license", POLICY_PATH=str(policy), NOTIFY_WEBHOOK_URLS=receiver.url)
        outcome = Scanner(load_config()).scan(ScanRequest(
            audit_id="hostile-1", requested_at=datetime.now(timezone.utc), image=f"{registry.address}/hostile/app:1.0",
            trigger="request"))
        assert outcome.succeeded, outcome.failure
        assert receiver.wait_for(1)
        webhook = receiver.all()[0].body

    cut_name = HOSTILE_NAME[: NAME_CHARS - 1] + ELLIPSIS
    meta_bytes = audits.read(outcome.meta_path)
    written = json.loads(meta_bytes)
    assert len(meta_bytes) < DOCUMENT_BYTES
    assert written["os"]["name"] == HOSTILE_OS[: NAME_CHARS - 1] + ELLIPSIS
    assert cut_name in {d["PkgName"] for d in written["details"]}
    assert all(len(d["Target"]) <= TEXT_CHARS for d in written["details"])
    assert "copyleft\u2028lib" in written["policy"]["reason"] and len(written["policy"]["reason"]) <= TEXT_CHARS
    report = audits.json(written["trivy-audit-path"])  # the report keeps every string whole
    assert HOSTILE_NAME in {v["PkgName"] for r in report["Results"] for v in r.get("Vulnerabilities") or []}
    assert report["Metadata"]["OS"]["Name"] == HOSTILE_OS

    store = ApprovalStore(audits.sas_url, scanner_env.short_id)
    ids = {"approval_id": approval_id(f"{registry.address}/hostile/app", digest)}
    assert len(audits.read(store.request_name(ids["approval_id"]))) < DOCUMENT_BYTES
    status, request, _ = call(get_approval, make_api(azurite), "GET", "x", route_params=ids)
    assert status == 200, request
    assert request["state"] == "auto-rejected" and request["history"][0]["reason"] == written["policy"]["reason"]
    assert cut_name in {d["PkgName"] for d in request["security-scan"]["details"]}

    assert len(webhook) < DOCUMENT_BYTES
    event = json.loads(webhook)
    assert cut_name in event["text"] and HOSTILE_NAME not in event["text"]


def test_the_dashboard_shows_a_failing_request_in_its_row_and_keeps_the_others(scanner_env, audits,
                                                                               azurite) -> None:
    store = ApprovalStore(audits.sas_url, scanner_env.short_id)
    good = meta("watch-good", status="failed", critical=["CVE-2026-1111"])
    broken_digest = "sha256:" + "cd" * 32
    broken = meta("watch-broken").model_copy(update={"image": f"{REPOSITORY}:2.0@{broken_digest}",
                                                     "image_digest": broken_digest})
    index = AuditIndex(audits.sas_url, scanner_env.short_id)
    state = fleet_state_of(load_config().settings)  # the dashboard lists the images' state (issue 24)
    for audit in (good, broken):
        index.record(audit, f"trivy-{scanner_env.short_id}/20261202-000000-{audit.audit_id}")
        state.record(audit, f"trivy-{scanner_env.short_id}/20261202-000000-{audit.audit_id}")
        assert ApprovalBook(store, None).after_audit(audit) == "created"
    good_id, broken_id = approval_id(REPOSITORY, DIGEST), approval_id(REPOSITORY, broken_digest)
    # The good request's history has a line the old code wrote (raw U+2028); the other's, bytes nothing reads.
    old = HistoryEntry(at="2026-12-02T10:00:00Z", by="dave", from_state="pending", to_state="pending",
                       reason="one\u2028two")
    audits.client.get_blob_client(store.history_name(good_id)).append_block(old.to_json_bytes() + b"\n")
    audits.client.get_blob_client(store.history_name(broken_id)).append_block(b"\x00\xff garbage\n")

    with ApiServer(make_api(azurite), KEY) as server, DevToolsBrowser(str(find_chromium())) as browser:
        tab = browser.new_tab(f"{server.base_url}/api/dashboard?code={KEY}")
        tab.wait_for("document.body.dataset.state && document.body.dataset.state !== 'loading'")
        assert tab.evaluate("document.body.dataset.state") == "ready"
        assert tab.evaluate("document.getElementById('message').hidden") is True
        assert tab.evaluate("document.querySelectorAll('#images tr[data-image]').length") == 2
        rows = tab.evaluate("[...document.querySelectorAll('#approvals tr')].map(tr => [tr.dataset.approvalId, "
                            "tr.dataset.error || '', tr.querySelector('[data-field=result]').textContent])")
        assert {row[0]: row[1] for row in rows} == {good_id: "", broken_id: "true"}
        failure = next(text for row_id, _, text in rows if row_id == broken_id)
        assert "could not load this request" in failure and "503" in failure and "history" in failure
        history = tab.evaluate(f"[...document.querySelectorAll('#approvals tr[data-approval-id=\"{good_id}\"] "
                               "[data-field=history] li')].map(li => li.textContent)")
        assert len(history) == 2 and "one\u2028two" in history[1]
