"""Rescans as the DB learns, and dedup: against real trivy, the registry and
Azurite, with DBs the tests write (one more advisory in the refreshed one)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.config import load_config
from scanner_core.functions import get_audit, monitor_handlers
from scanner_core.monitor import ImageRecord, due_for_rescan, scan_fingerprint
from scanner_core.monitor.fingerprint import ScanIdentity, fingerprint_document
from scanner_core.queue import build_message
from tests.conftest import REPO_ROOT, Audits
from tests.support.images import SAMPLE_ADVISORIES
from tests.support.monitor import QueuedMessage, TrivySpy
from tests.support.trivy_db import Advisory, build_trivy_db
from tests.test_http_api import http, make_api
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture

DAY1 = datetime(2026, 11, 1, 6, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)
NEW_ADVISORY = Advisory(
    vulnerability_id="CVE-2099-0100",
    package="ca-certificates",
    fixed_version="20240226-r0",
    severity="CRITICAL",
    title="ca-certificates: a distrusted root still trusted",
    description="A root certificate distrusted by its owner is still in the bundle.",
)


def write_db(cache: Path, updated_at: datetime, *, refreshed: bool = False) -> Path:
    advisories = (*SAMPLE_ADVISORIES, NEW_ADVISORY) if refreshed else SAMPLE_ADVISORIES
    build_trivy_db(cache, advisories, updated_at=updated_at, next_update=updated_at + timedelta(days=1))
    return cache


def scan_through_watch(monitor: Monitor, audits: Audits, repo: str, tag: str) -> tuple[str, dict]:
    """Push, one watch run, the queued message through the queue trigger: (digest, meta)."""
    digest = monitor.push(repo, tag)
    monitor.configure([{"repository": f"{monitor.registry.address}/{repo}"}])
    monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
    (message,) = monitor.queue.take()
    assert monitor.queue.deliver(message, REPO_ROOT) == []
    return digest, meta_of(monitor, audits, message.payload["image-scan-id"])


def meta_of(monitor: Monitor, audits: Audits, audit_id: str) -> dict:
    (name,) = [n for n in audits.names() if n.endswith(f"-{audit_id}/meta")]
    return audits.json(name)


def finding_ids(meta: dict) -> set[str]:
    return {finding["VulnerabilityID"] for finding in meta["details"]}


def test_a_rescan_after_a_db_refresh_selects_the_image_and_finds_the_new_cve(monitor: Monitor, audits, tmp_path):
    cache = write_db(tmp_path / "cache", DAY1)
    monitor.env.set(TRIVY_CACHE_DIR=str(cache))
    digest, first = scan_through_watch(monitor, audits, "rescan/app", "1.0")
    assert "CVE-2099-0100" not in finding_ids(first) and first["trivy-db-updated-at"] == "2026-11-01T06:00:00Z"

    monitor.env.set(RESCAN_MAX_AGE_HOURS="0")
    assert monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT).enqueued == []  # same DB: nothing to learn

    write_db(cache, DAY2, refreshed=True)  # the DB learns of CVE-2099-0100
    monitor.env.unset("RESCAN_MAX_AGE_HOURS")  # default 24 h: the scan is minutes old
    assert monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT).enqueued == []
    monitor.env.set(RESCAN_MAX_AGE_HOURS="0")
    result = monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT)
    assert (result.images, result.current_db) == (1, "2026-11-02T06:00:00Z")
    (message,) = monitor.queue.take()
    assert {k: message.payload[k] for k in ("image-full-name", "tag", "trigger")} == {
        "image-full-name": f"{monitor.registry.address}/rescan/app@{digest}", "tag": "1.0", "trigger": "rescan"}

    assert monitor.queue.deliver(message, REPO_ROOT) == []
    second = meta_of(monitor, audits, message.payload["image-scan-id"])
    assert "CVE-2099-0100" in finding_ids(second) and "reused-from" not in second
    assert (second["vulnerabilities"]["critical"], first["vulnerabilities"]["critical"]) == (2, 1)
    assert (second["trigger"], second["image"]) == ("rescan", f"{monitor.registry.address}/rescan/app:1.0@{digest}")
    assert second["trivy-db-updated-at"] == "2026-11-02T06:00:00Z"
    assert second["previous-audit-id"] == first["audit-id"] and "CVE-2099-0100" in second["changes"]["new"]
    assert monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT).enqueued == []  # scanned with the current DB


def approval_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The GETs of approval request documents the storage SDK sends from now on (the way
    ``bench/scan_requests.py`` lists a scan's requests)."""
    from azure.core.pipeline.transport import RequestsTransport

    reads: list[str] = []
    send = RequestsTransport.send

    def counted(self, request, **kwargs):  # type: ignore[no-untyped-def]
        if request.method == "GET" and "/approvals/requests/" in request.url:
            reads.append(request.url.split("?", 1)[0])
        return send(self, request, **kwargs)

    monkeypatch.setattr(RequestsTransport, "send", counted)
    return reads


def test_a_rescan_with_the_same_db_reuses_the_audit_without_running_trivy(
    monitor: Monitor, audits, tmp_path, trivy_executable, azurite, monkeypatch
):
    spy = TrivySpy(tmp_path, trivy_executable)
    old_db, new_db = write_db(tmp_path / "instance-a", DAY1), write_db(tmp_path / "instance-b", DAY2)
    monitor.env.set(TRIVY_PATH=str(spy.path), TRIVY_CACHE_DIR=str(old_db))
    digest, first = scan_through_watch(monitor, audits, "dedup/app", "4.2")
    assert len(spy.scans()) == 1

    # The timer runs on an instance with a newer DB; the scan lands on one that still has the old DB.
    monitor.env.set(TRIVY_CACHE_DIR=str(new_db), RESCAN_MAX_AGE_HOURS="0")
    assert len(monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT).enqueued) == 1
    (message,) = monitor.queue.take()
    monitor.env.set(TRIVY_CACHE_DIR=str(old_db))
    spy.reset()
    reads = approval_reads(monkeypatch)
    assert monitor.queue.deliver(message, REPO_ROOT) == []

    assert spy.scans() == []  # trivy did not scan
    # One wiring point (issue 22): the digest's approval request is read once for the dedup
    # answer, by the policy's accepted CVEs, and the approvals' book uses that read.
    assert len(reads) == 1, reads
    reused = meta_of(monitor, audits, message.payload["image-scan-id"])
    assert reused["reused-from"] == first["audit-id"]
    folder = first["trivy-audit-path"].rsplit("/", 1)[0]
    new_folder = next(n for n in audits.names() if n.endswith(f"-{reused['audit-id']}/meta")).rsplit("/", 1)[0]
    # Self-contained (issue 17): the earlier report copied server-side into the new folder.
    assert new_folder != folder and reused["trivy-audit-path"] == f"{new_folder}/scan-result.json"
    assert audits.read(reused["trivy-audit-path"]) == audits.read(first["trivy-audit-path"])
    for field in ("scan-status", "vulnerabilities", "details", "trivy-db-updated-at", "image-digest", "summary"):
        assert reused[field] == first[field]
    assert (reused["trigger"], reused["audit-result"]) == ("rescan", "succeeded")
    # The follow-up of a reused audit: compared with the previous audit of the image, from the earlier findings.
    assert reused["previous-audit-id"] == first["audit-id"]
    assert (reused["changes"]["new"], reused["changes"]["fixed"]) == ([], [])
    assert reused["decision"] == first["decision"] == "pending"
    # The earlier folder's report and inventory (issue 18) copied, no notification claim.
    assert [n for n in audits.names() if n.startswith(new_folder + "/")] == [
        f"{new_folder}/meta", f"{new_folder}/sbom.cdx.json", f"{new_folder}/scan-result.json"]
    assert reused["inventory-path"] == f"{new_folder}/sbom.cdx.json"

    # A lifecycle rule deletes the earlier folder: the reused audit still reads whole through the API.
    for name in [n for n in audits.all_names() if n.startswith(folder + "/")]:
        audits.client.delete_blob(name)
    api = make_api(azurite)
    served = json.loads(get_audit(http("GET", "x", route_params={"audit_id": reused["audit-id"]}), api).get_body())
    assert served["trivy-audit-path"] == reused["trivy-audit-path"]
    report = json.loads(audits.read(served["trivy-audit-path"]))
    assert {v["VulnerabilityID"] for r in report["Results"] for v in r.get("Vulnerabilities") or []} == finding_ids(
        first)

    # SCAN_DEDUP=false: the same request is scanned.
    monitor.env.set(SCAN_DEDUP="false")
    deliver_request(monitor, f"{monitor.registry.address}/dedup/app@{digest}", "no-dedup")
    assert len(spy.scans()) == 1 and "reused-from" not in meta_of(monitor, audits, "no-dedup")


def test_requests_by_tag_and_audits_whose_report_is_gone_are_scanned(monitor: Monitor, audits, tmp_path,
                                                                      trivy_executable):
    spy = TrivySpy(tmp_path, trivy_executable)
    monitor.env.set(TRIVY_PATH=str(spy.path), TRIVY_CACHE_DIR=str(write_db(tmp_path / "cache", DAY1)))
    digest, first = scan_through_watch(monitor, audits, "gone/app", "1.0")
    reference = f"{monitor.registry.address}/gone/app"

    deliver_request(monitor, f"{reference}:1.0", "by-tag")  # a tag may have moved: always scanned
    assert len(spy.scans()) == 2 and "reused-from" not in meta_of(monitor, audits, "by-tag")

    deliver_request(monitor, f"{reference}@{digest}", "by-digest")  # the latest audit is by-tag's: reused
    assert len(spy.scans()) == 2 and meta_of(monitor, audits, "by-digest")["reused-from"] == "by-tag"

    by_digest = meta_of(monitor, audits, "by-digest")  # the latest audit, with its own copy of the report
    assert by_digest["trivy-audit-path"].endswith("-by-digest/scan-result.json")
    audits.client.delete_blob(by_digest["trivy-audit-path"])  # retention removed the report
    deliver_request(monitor, f"{reference}@{digest}", "after-retention")
    assert len(spy.scans()) == 3 and "reused-from" not in meta_of(monitor, audits, "after-retention")


def deliver_request(monitor: Monitor, image: str, audit_id: str) -> None:
    body = build_message(image, audit_id, created_at=datetime.now(timezone.utc).timestamp()).to_text()
    assert monitor.queue.deliver(QueuedMessage(f"m-{audit_id}", body, None), REPO_ROOT) == []


# -- the rules, on their own ---------------------------------------------------------------


def record(**values) -> ImageRecord:
    defaults = dict(repository="r.example/app", digest="sha256:" + "c" * 64, audit_id="a", folder="f",
                    requested_at=0, scanned_at=0, seen_at=0, db_updated_at="2026-11-01T06:00:00Z")
    return ImageRecord(**{**defaults, **values})


def test_due_for_rescan_needs_recent_use_an_old_scan_and_an_older_db():
    now = DAY2.timestamp() + 3600
    old_scan, recent = now - 25 * 3600, now - 2 * 86_400
    due = due_for_rescan(
        [
            record(audit_id="due", scanned_at=int(old_scan), seen_at=int(recent)),
            record(audit_id="fresh-scan", scanned_at=int(now - 3600), seen_at=int(recent)),
            record(audit_id="not-seen-for-31-days", scanned_at=int(old_scan), seen_at=int(now - 31 * 86_400)),
            record(audit_id="current-db", scanned_at=int(old_scan), seen_at=int(recent),
                   db_updated_at="2026-11-02T06:00:00Z"),
        ],
        now=now, current_db=DAY2, max_age_hours=24, window_days=30,
    )
    assert [r.audit_id for r in due] == ["due"]


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"TRIVY_SEVERITY": "CRITICAL,HIGH"}, False),
        ({"TRIVY_IGNORE_UNFIXED": "true"}, False),
        ({"TRIVY_CRITICAL_THRESHOLD": "3"}, False),
        ({"TRIVY_TIMEOUT": "1000"}, True),
        ({"LOG_FORMAT": "json"}, True),
    ],
)
def test_the_fingerprint_follows_what_changes_a_result(scanner_env, change, same):
    identity = ScanIdentity("r.example/app", "sha256:" + "d" * 64, "0.76.0", "2026-11-01T06:00:00Z")
    before = scan_fingerprint(load_config(), identity)
    scanner_env.set(**change)
    assert (scan_fingerprint(load_config(), identity) == before) is same


def test_the_fingerprint_follows_the_db_and_suppression_files(scanner_env, tmp_path):
    config = load_config()
    identity = ScanIdentity("r.example/app", "sha256:" + "d" * 64, "0.76.0", "2026-11-01T06:00:00Z")
    newer_db = ScanIdentity("r.example/app", "sha256:" + "d" * 64, "0.76.0", "2026-11-02T06:00:00Z")
    assert scan_fingerprint(config, identity) != scan_fingerprint(config, newer_db)
    # Issue 8's TRIVY_IGNOREFILE: a setting naming a file whose content counts.
    ignorefile = tmp_path / ".trivyignore"
    ignorefile.write_text("CVE-2099-0001\n")
    with_file = config.model_copy(update={"settings": config.settings.model_copy(
        update={"trivy_ignorefile": str(ignorefile)})})
    first = scan_fingerprint(with_file, identity)
    assert first != scan_fingerprint(config, identity)
    ignorefile.write_text("CVE-2099-0001\nCVE-2099-0003\n")
    assert scan_fingerprint(with_file, identity) != first
    assert "sig=" not in json.dumps(fingerprint_document(with_file, identity))  # no secret, not even hashed


def test_the_choice_reads_the_fleet_state_not_the_monitor_records(monitor: Monitor, audits, tmp_path):
    """Issue 24: an image whose monitor record is gone is still due when its state says so."""
    cache = write_db(tmp_path / "cache", DAY1)
    monitor.env.set(TRIVY_CACHE_DIR=str(cache))
    digest, _ = scan_through_watch(monitor, audits, "state/app", "2.0")
    records = [name for name in audits.all_names() if "/monitor/images/" in name]
    assert records  # the old path's input: without it, nothing would be due
    for name in records:
        audits.client.delete_blob(name)
    write_db(cache, DAY2, refreshed=True)
    monitor.env.set(RESCAN_MAX_AGE_HOURS="0")
    result = monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT)
    assert [image for image, _ in result.enqueued] == [f"{monitor.registry.address}/state/app@{digest}"]
    monitor.env.set(RESCAN_WINDOW_DAYS="0.00001")  # wanted ~1 s ago at most: out of the window once it passes
    time.sleep(1.1)
    assert monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT).enqueued == []
