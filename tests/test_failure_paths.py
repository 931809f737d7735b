"""Failure paths the review found: each must end as a recorded, correctly
classified failure, never as a lost message or a leaked secret."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import FailureKind
from scanner_core.functions import handlers as functions

from tests.conftest import REPO_ROOT

REQUESTED_AT = datetime(2026, 11, 22, 13, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def outage_registry() -> Iterator[str]:
    """A registry front that answers 503 to credentialed requests and 401 to anonymous ones:
    a private registry in an outage. docker-registry cannot be made to answer 5xx, so this
    stub stands in for it; trivy, the part under test, is real."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.headers.get("Authorization"):
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}'
            else:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="outage"')
                self.send_header("Content-Type", "application/json")
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_5xx_of_a_private_registry_is_transient_not_unauthorized(scanner_env, audits, outage_registry):
    scanner_env.write_config({"registries": [
        {"address": outage_registry, "username": "u", "password": "p4ss,with,commas", "insecure": True}]})
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id="outage", requested_at=REQUESTED_AT, image=f"{outage_registry}/team/app:1.0"),
        final_attempt=False)
    assert outcome.failure.kind is FailureKind.TRANSIENT, outcome.meta.failure_description
    assert outcome.meta.failure_reason == "registry-unreachable"
    assert "UNAVAILABLE" in outcome.meta.failure_description
    assert "p4ss,with,commas" not in outcome.meta.failure_description


def test_an_unrunnable_trivy_is_a_recorded_transient_failure(scanner_env, audits, sample_image, tmp_path):
    broken = tmp_path / "trivy"
    broken.write_bytes(b"\x7fELF-not-really")
    broken.chmod(0o755)
    scanner_env.set(TRIVY_PATH=str(broken))

    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id="broken", requested_at=REQUESTED_AT, input_tar=sample_image.path))
    assert outcome.failure.kind is FailureKind.TRANSIENT
    meta = audits.json(outcome.meta_path)
    assert (meta["audit-result"], meta["failure-reason"]) == ("audit-failed", "trivy-unusable")

    # The heartbeat still beats, without a trivy version: that is how an operator notices.
    functions.on_heartbeat(TimerRequest(past_due=False), functions.binding_settings(), REPO_ROOT)
    heartbeat = audits.json(f"trivy-{scanner_env.short_id}/trivy-{scanner_env.short_id}.meta")
    assert "trivy-version" not in heartbeat


def test_a_relative_trivy_path_works(scanner_env, audits, sample_image, trivy_executable, monkeypatch):
    monkeypatch.chdir(trivy_executable.parent)
    scanner_env.set(TRIVY_PATH=f".{os.sep}{trivy_executable.name}")
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id="relative", requested_at=REQUESTED_AT, input_tar=sample_image.path))
    assert outcome.succeeded, outcome.failure


@pytest.mark.parametrize("creation_time", [10_000_000_000, 10**20, -1])
def test_an_impossible_creation_time_is_quarantined(scanner_env, audits, creation_time):
    body = json.dumps({"headers": {"creation-time": creation_time, "payload-version": "1"},
                       "payload": {"image-scan-id": "t", "image-full-name": "alpine:3.19"}})
    quarantined: list[str] = []
    functions.on_scan_message(QueueMessage(id="m", body=body.encode(), dequeue_count=1), quarantined.append, REPO_ROOT)
    (record,) = [json.loads(text) for text in quarantined]
    assert record["reason"].startswith("headers.creation-time: ")
    assert audits.names() == []


def test_a_missing_trivy_on_the_last_attempt_records_why(scanner_env, audits, tmp_path):
    scanner_env.set(TRIVY_PATH=str(tmp_path / "absent" / "trivy"))
    scanner_env.set(RETRY_MAX_ATTEMPTS="3")
    body = json.dumps({"headers": {"creation-time": 1795300000, "payload-version": "1", "attempt": 3,
                                   "first-attempt-at": 1795300000},
                       "payload": {"image-scan-id": "no-trivy", "image-full-name": "registry.example.com/a:1"}})
    quarantined: list[str] = []
    # The request's last attempt (its headers), on a copy's first delivery.
    functions.on_scan_message(QueueMessage(id="m", body=body.encode(), dequeue_count=1), quarantined.append, REPO_ROOT,
                              lambda *_: pytest.fail("the last attempt must not be retried"))
    assert json.loads(quarantined[0])["failure-reason"] == "trivy-not-found"
    (meta_name,) = [name for name in audits.names() if name.endswith("no-trivy/meta")]
    assert audits.json(meta_name)["failure-reason"] == "trivy-not-found"


def _trivy_stderr(*attempts: str) -> str:
    """stderr in the form trivy 0.76 prints when it tried several times (as recorded from real runs)."""
    listed = " ".join(f"* remote error: GET http://r.example.com/v2/team/app/manifests/1.0: {a}" for a in attempts)
    return (
        "2026-11-22T10:00:00Z\tFATAL\tFatal error\trun error: image scan error: scan error: unable to initialize "
        'a scan service: unable to find the specified image "r.example.com/team/app:1.0" in ["remote"]: '
        f"{len(attempts)} errors occurred:\n\t{listed}\n"
    )


@pytest.mark.parametrize(
    ("attempts", "kind", "reason"),
    [
        (["UNAVAILABLE: service unavailable", "UNAUTHORIZED: authentication required"], "transient",
         "registry-unreachable"),
        (["MANIFEST_UNKNOWN: manifest unknown", "UNAUTHORIZED: authentication required"], "permanent", "not-found"),
        (["UNAUTHORIZED: authentication required", "UNAUTHORIZED: authentication required"], "permanent",
         "unauthorized"),
        (["DENIED: requested access to the resource is denied"], "permanent", "denied"),
        (["TOOMANYREQUESTS: rate limited", "UNAUTHORIZED: authentication required"], "transient", "rate-limited"),
        (["something nobody has seen before"], "transient", "trivy-error"),
    ],
)
def test_each_attempt_is_classified_and_any_transient_one_wins(attempts, kind, reason):
    from scanner_core.trivy import classify_trivy_failure

    failure = classify_trivy_failure(1, _trivy_stderr(*attempts))
    assert (failure.kind.value, failure.reason) == (kind, reason)


def test_a_local_permission_error_is_not_the_registrys_denied():
    from scanner_core.trivy import classify_trivy_failure

    stderr = "x\tFATAL\tFatal error\tinit error: open /tmp/trivy-cache/db/trivy.db: permission denied\n"
    failure = classify_trivy_failure(1, stderr)
    assert (failure.kind.value, failure.reason) == ("transient", "local-io")


def test_trivys_own_ssrf_refusal_is_a_permanent_registry_not_allowed():
    """Issue 23, item 11: trivy 0.76 refuses a redirect (or a token realm) to a private or
    link-local host itself; that was retried as a transient trivy-error for 31 minutes. The line
    is what trivy 0.76 printed for a registry whose blob GET answered 307 to 127.0.0.1."""
    from scanner_core.trivy import classify_trivy_failure

    stderr = ('x\tFATAL\tFatal error\trun error: image scan error: scan error: scan failed: failed analysis: unable '
              'to get the image ID: Get "http://127.0.0.1:38581/v2/team/app/blobs/sha256:8414": SSRF protection: '
              'redirect from "front.test" to private/link-local host "127.0.0.1" denied\n')
    failure = classify_trivy_failure(1, stderr)
    assert (failure.kind.value, failure.reason) == ("permanent", "registry-not-allowed")
