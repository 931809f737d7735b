"""The monitor's follow-up of each audit, end to end: real trivy scans of an image
in a real registry while the DB learns new advisories, Azurite, the queue's
delivery rules, and a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scanner_core.audit import AuditOutcome, ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.storage import NOTIFICATION_BLOB
from scanner_core.queue import Delivery, build_message, handle_delivery
from tests.support.monitor_dbs import NEW_CRITICAL, NEW_HIGH, WITHDRAWN, build_caches
from tests.support.ports import free_port
from tests.support.webhook import WebhookReceiver

FIRST_AT = datetime(2026, 11, 22, 8, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_caches(tmp_path_factory.mktemp("monitor-dbs"))


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def image(scanner_env, registry, pushed_sample) -> str:
    scanner_env.write_config(
        {
            "heartbeat-period": 60,
            "registries": [
                {
                    "address": registry.address,
                    "username": registry.username,
                    "password": registry.password,
                    "insecure": True,
                }
            ],
        }
    )
    return pushed_sample.reference


def scan(scanner_env, cache: Path, image: str, audit_id: str, at: datetime, **request: object) -> AuditOutcome:
    scanner_env.set(TRIVY_CACHE_DIR=str(cache))
    return Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=at, image=image, **request))  # type: ignore[arg-type]


def deliver(scanner_env, cache: Path, image: str, audit_id: str, at: datetime, dequeue_count: int = 1) -> None:
    """One delivery of a queue message, as the queue trigger handles it."""
    scanner_env.set(TRIVY_CACHE_DIR=str(cache))
    body = build_message(image, audit_id, created_at=at.timestamp()).model_dump_json(by_alias=True).encode()
    quarantined: list[str] = []
    handle_delivery(
        Delivery(body=body, message_id="m-1", dequeue_count=dequeue_count, inserted_at=at),
        Scanner(load_config()),
        max_dequeue_count=3,
        quarantine=quarantined.append,
    )
    assert quarantined == []


def test_a_rescan_with_a_db_that_learnt_records_the_changes_and_notifies_once(
    scanner_env, caches, image, pushed_sample, audits, receiver
):
    scanner_env.set(NOTIFY_WEBHOOK_URLS=receiver.url)

    first = scan(scanner_env, caches["first"], image, "first", FIRST_AT)
    assert first.succeeded, first.failure
    assert first.meta.previous_audit_id is None
    assert first.meta.changes.status_from is None and first.meta.changes.status_to == "failed"
    assert first.meta.changes.new == ["CVE-2099-0001", "CVE-2099-0003", "CVE-2099-0004"]  # critical, then high
    assert receiver.wait_for(1)  # a newly seen image that fails is news

    # The rescan of the same tag with the DB of two days later, delivered twice.
    later = FIRST_AT + timedelta(days=2)
    deliver(scanner_env, caches["learnt"], image, "rescan", later)
    deliver(scanner_env, caches["learnt"], image, "rescan", later, dequeue_count=2)
    [folder] = [n.rsplit("/", 1)[0] for n in audits.names() if n.endswith("-rescan/meta")]
    meta = audits.json(f"{folder}/meta")
    assert meta["previous-audit-id"] == "first"
    assert meta["changes"] == {
        "new": [NEW_CRITICAL.vulnerability_id, NEW_HIGH.vulnerability_id],
        "fixed": [WITHDRAWN],
        "status-from": "failed",
        "status-to": "failed",
    }
    assert meta["decision"] == "pending"
    assert meta["image-digest"] == pushed_sample.digest

    time.sleep(0.5)  # a second POST, if any, would have arrived by now
    requests = receiver.all()
    assert len(requests) == 2, [r.json()["audit-id"] for r in requests]
    event = requests[1].json()
    assert event["type"] == "trivy-scanner.audit-changed" and event["reasons"] == ["new-findings"]
    assert (event["audit-id"], event["previous-audit-id"], event["status"]) == ("rescan", "first", "failed")
    assert (event["repository"], event["tag"], event["digest"]) == (
        image.rsplit(":", 1)[0],
        "1.0",
        pushed_sample.digest,
    )
    assert event["new-findings"] == [
        {"id": "CVE-2099-0101", "package": "curl", "severity": "CRITICAL"},
        {"id": "CVE-2099-0100", "package": "zlib", "severity": "HIGH"},
    ]
    assert event["vulnerabilities"]["critical"] == 2 and event["links"]["audit"] == "/api/audits/rescan"
    assert event["links"]["previous"] == "/api/audits/first" and event["scanned-at"].endswith("Z")
    assert "CVE-2099-0101 (critical, curl)" in event["text"] and "Fixed: CVE-2099-0003" in event["text"]
    assert requests[1].headers["content-type"] == "application/json"
    marker = audits.json(f"{folder}/{NOTIFICATION_BLOB}")
    assert marker["state"] == "sent" and marker["deliveries"] == [
        {"webhook": 1, "host": "127.0.0.1", "delivered": True, "attempts": 1, "status": 204}
    ]
    # The webhook URL is a secret (Teams and Slack put their token in it): never in a blob.
    assert receiver.url.encode() not in audits.everything()


def test_a_rescan_with_the_same_findings_sends_nothing(scanner_env, caches, image, audits, receiver):
    first = scan(scanner_env, caches["first"], image, "a", FIRST_AT)
    scanner_env.set(NOTIFY_WEBHOOK_URLS=receiver.url)
    again = scan(scanner_env, caches["first"], image, "b", FIRST_AT + timedelta(hours=1))
    assert first.succeeded and again.succeeded
    assert again.meta.previous_audit_id == "a"
    assert again.meta.changes.model_dump(by_alias=True) == {
        "new": [],
        "fixed": [],
        "status-from": "failed",
        "status-to": "failed",
    }
    time.sleep(0.5)
    assert receiver.all() == []
    assert not any(n.endswith(NOTIFICATION_BLOB) for n in audits.names())


def test_status_becoming_failed_notifies_even_without_new_high_findings(scanner_env, caches, image, audits, receiver):
    scanner_env.set(NOTIFY_WEBHOOK_URLS=receiver.url, NOTIFY_MIN_SEVERITY="CRITICAL")
    passed = scan(scanner_env, caches["passing"], image, "passing", FIRST_AT)
    assert passed.meta.scan_status == "passed" and passed.meta.changes.new == []  # nothing critical
    failed = scan(scanner_env, caches["first"], image, "failing", FIRST_AT + timedelta(hours=1))
    assert failed.meta.changes.model_dump(by_alias=True) == {
        "new": ["CVE-2099-0001"],
        "fixed": [],
        "status-from": "passed",
        "status-to": "failed",
    }
    assert receiver.wait_for(1)
    [request] = receiver.all()
    assert request.json()["reasons"] == ["status-failed", "new-findings"]
    assert "is FAILED (was passed)" in request.json()["text"]


def test_receiver_down_the_audit_succeeds_and_the_notification_is_retried(scanner_env, caches, image, audits):
    with WebhookReceiver(statuses=[503, 502]) as flaky:  # overloaded twice, then it accepts
        dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
        scanner_env.set(NOTIFY_WEBHOOK_URLS=f"{flaky.url}, {dead}", NOTIFY_ATTEMPTS="3", NOTIFY_TIMEOUT="2")
        started = time.monotonic()
        outcome = scan(scanner_env, caches["first"], image, "down", FIRST_AT)
        took = time.monotonic() - started
        assert outcome.succeeded and outcome.meta_written, outcome.failure
        assert audits.json(f"{outcome.folder}/meta")["audit-result"] == "succeeded"
        assert [r.answered for r in flaky.all()] == [503, 502, 204]
    marker = audits.json(f"{outcome.folder}/{NOTIFICATION_BLOB}")
    assert marker["state"] == "failed"  # one of the two URLs never answered
    by_webhook = {d["webhook"]: d for d in marker["deliveries"]}
    assert by_webhook[1] == {"webhook": 1, "host": "127.0.0.1", "delivered": True, "attempts": 3, "status": 204}
    assert by_webhook[2]["delivered"] is False and by_webhook[2]["attempts"] == 3
    assert by_webhook[2]["error"] == "ConnectionError"
    print(f"scan with a 3-attempt notification to a dead receiver: {took:.1f} s")

    # A redelivery does not try again: at most once per audit.
    with WebhookReceiver() as later:
        scanner_env.set(NOTIFY_WEBHOOK_URLS=later.url)
        again = Scanner(load_config()).scan(
            ScanRequest(audit_id="down", requested_at=FIRST_AT, image=image), reuse_succeeded=True
        )
        assert again.succeeded
        time.sleep(0.3)
        assert later.all() == []


@pytest.mark.parametrize(
    ("auto_reject", "cache", "status", "decision"),
    [
        ("true", "first", "failed", "rejected"),
        ("true", "passing", "passed", "pending"),
        ("false", "first", "failed", "pending"),
    ],
)
def test_auto_reject_critical_decides(scanner_env, caches, sample_image, audits, auto_reject, cache, status, decision):
    scanner_env.set(TRIVY_AUTO_REJECT_CRITICAL=auto_reject)
    outcome = scan(
        scanner_env, caches[cache], "registry.example.com/team/app:1.0", "d", FIRST_AT, input_tar=sample_image.path
    )
    meta = audits.json(f"{outcome.folder}/meta")
    assert (meta["scan-status"], meta["decision"]) == (status, decision)


def test_a_failed_audit_has_no_decision_and_sends_nothing(scanner_env, registry, caches, audits, receiver):
    scanner_env.set(NOTIFY_WEBHOOK_URLS=receiver.url, TRIVY_AUTO_REJECT_CRITICAL="true")
    outcome = scan(scanner_env, caches["first"], f"{registry.address}/team/app:no-such-tag", "missing", FIRST_AT)
    meta = audits.json(f"{outcome.folder}/meta")
    assert meta["audit-result"] == "audit-failed"
    assert "decision" not in meta and "changes" not in meta
    time.sleep(0.3)
    assert receiver.all() == []


def test_bad_notification_settings_are_named(scanner_env):
    from scanner_core.errors import ConfigurationError

    secret_url = "ftp://hooks.example.com/services/T000/B000/s3cr3t"
    scanner_env.set(NOTIFY_WEBHOOK_URLS=secret_url, NOTIFY_MIN_SEVERITY="SEVERE")
    with pytest.raises(ConfigurationError) as raised:
        load_config()
    text = json.dumps(raised.value.problems)
    assert "NOTIFY_WEBHOOK_URLS: URL #1 must be an http:// or https:// URL" in text
    assert "NOTIFY_MIN_SEVERITY" in text and "CRITICAL" in text
    assert "s3cr3t" not in text


def test_changes_beyond_the_100_listed_details_come_from_the_stored_report(scanner_env, audits, tmp_path):
    """120 critical and high findings: the previous meta lists 100, so the comparison
    streams the previous audit's scan-result.json to see that CVE-2098-010296 is gone."""
    from tests.support.images import build_alpine_image, large_fixture
    from tests.support.trivy_db import Advisory, build_trivy_db

    packages, advisories = large_fixture(300, 1)
    gone = "CVE-2098-010296"  # high, sorts after the 100 most severe
    assert next(a for a in advisories if a.vulnerability_id == gone).severity == "HIGH"
    later = [a for a in advisories if a.vulnerability_id != gone]
    later.append(Advisory("CVE-2098-999999", packages[0].name, "9.9.9-r0", "HIGH", "new"))
    tarball = build_alpine_image(tmp_path / "big.tar", packages, repo_tag="big/app:1.0")
    before, after = tmp_path / "before", tmp_path / "after"
    build_trivy_db(before, advisories, next_update=datetime(2099, 1, 1, tzinfo=timezone.utc))
    build_trivy_db(after, later, next_update=datetime(2099, 1, 1, tzinfo=timezone.utc))

    first = scan(scanner_env, before, "big/app:1.0", "big-1", FIRST_AT, input_tar=tarball.path)
    assert len(first.meta.details) == 100 and first.meta.vulnerabilities["total"] == 300
    second = scan(scanner_env, after, "big/app:1.0", "big-2", FIRST_AT + timedelta(hours=1), input_tar=tarball.path)
    assert second.meta.previous_audit_id == "big-1"
    assert (second.meta.changes.new, second.meta.changes.fixed) == (["CVE-2098-999999"], [gone])


def test_two_deliveries_racing_on_one_audit_send_once_and_a_4xx_is_not_retried(scanner_env, audits):
    """The claim is Blob Storage's If-None-Match: *, so of two senders exactly one sends."""
    import threading

    from scanner_core.follow_up import Notifier
    from scanner_core.redact import Redactor
    from scanner_core.storage import AzureBlobStore

    store = AzureBlobStore(audits.sas_url, Redactor())
    event = {"audit-id": "race", "reasons": ["new-findings"], "text": "t"}
    with WebhookReceiver(statuses=[400]) as refusing:
        notifier = Notifier([refusing.url], store, attempts=3, backoff_multiplier=0.01)
        results: list[object] = []
        barrier = threading.Barrier(4)

        def send() -> None:
            barrier.wait()
            results.append(notifier.send_once("trivy-x/20261122-080000-race", event))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(result is not None for result in results) == 1
        [deliveries] = [result for result in results if result is not None]
        assert len(refusing.all()) == 1  # 400: retrying cannot help
    [delivery] = deliveries
    assert (delivery.delivered, delivery.attempts, delivery.status, delivery.error) == (False, 1, 400, "HTTP 400")
    assert audits.json(f"trivy-x/20261122-080000-race/{NOTIFICATION_BLOB}")["state"] == "failed"


WEBHOOK_SECRET = "whsec-0123456789abcdef0123456789abcdef"


def test_every_event_is_signed_and_a_verifying_receiver_refuses_tampering_and_replays(
    scanner_env, caches, image, audits
):
    import requests

    with WebhookReceiver(secret=WEBHOOK_SECRET.encode()) as verifying:
        scanner_env.set(NOTIFY_WEBHOOK_URLS=verifying.url, NOTIFY_WEBHOOK_SECRET=WEBHOOK_SECRET)
        outcome = scan(scanner_env, caches["first"], image, "signed", FIRST_AT)
        assert outcome.succeeded and verifying.wait_for(1)
        [event] = verifying.all()
        assert (event.verified, event.answered) == (True, 204)
        assert event.headers["x-signature-256"].startswith("sha256=") and event.headers["x-signature-timestamp"]
        assert audits.json(f"{outcome.folder}/{NOTIFICATION_BLOB}")["state"] == "sent"

        signed = {"X-Signature-256": event.headers["x-signature-256"],
                  "X-Signature-Timestamp": event.headers["x-signature-timestamp"], "Content-Type": "application/json"}
        tampered = event.body.replace(b'"status-to": "failed"', b'"status-to": "passed"')
        assert tampered != event.body
        assert requests.post(verifying.url, data=tampered, headers=signed, timeout=5).status_code == 401
        from scanner_core.follow_up.signing import signature_headers

        old = signature_headers(WEBHOOK_SECRET, event.body, int(time.time()) - 3600)  # a replay an hour later
        assert requests.post(verifying.url, data=event.body, headers=old, timeout=5).status_code == 401
        assert [r.verified for r in verifying.all()] == [True, False, False]
    assert WEBHOOK_SECRET not in json.dumps([audits.read(n).decode("utf-8", "replace") for n in audits.all_names()])


def test_a_short_webhook_secret_is_named_never_quoted(scanner_env):
    from scanner_core.errors import ConfigurationError

    scanner_env.set(NOTIFY_WEBHOOK_SECRET="tooshort-s3cr3t")
    with pytest.raises(ConfigurationError) as raised:
        load_config()
    text = json.dumps(raised.value.problems)
    assert "NOTIFY_WEBHOOK_SECRET" in text and "16" in text and "s3cr3t" not in text
