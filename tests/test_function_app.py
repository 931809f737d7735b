"""The function app under the platform's rules, with real binding objects,
real trivy, Azurite and the private registry."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import BinaryBase64EncodePolicy, QueueClient

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import handlers as functions
from scanner_core.queue import build_message
from tests.conftest import REPO_ROOT

INSERTED = datetime(2026, 11, 22, 9, 15, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def function_metadata() -> dict[str, dict]:
    import function_app

    # get_functions() may be called once per app object.
    return {f.get_function_name(): json.loads(f.get_function_json()) for f in function_app.app.get_functions()}


def test_bindings_are_wired_from_settings(function_metadata):
    scan = {b["name"]: b for b in function_metadata["scan_request"]["bindings"]}
    assert scan["message"]["type"] == "queueTrigger"
    assert scan["message"]["queueName"] == "trivy-scan-requests"
    assert scan["message"]["connection"] == "AzureWebJobsStorage"
    assert scan["quarantine"] == {
        "direction": "OUT", "type": "queue", "name": "quarantine",
        "queueName": "trivy-scan-requests-poison", "connection": "AzureWebJobsStorage",
    }
    heartbeat = function_metadata["heartbeat"]["bindings"][0]
    assert (heartbeat["type"], heartbeat["schedule"]) == ("timerTrigger", "0 */5 * * * *")
    refresh = function_metadata["refresh_vulnerability_db"]["bindings"][0]
    assert (refresh["type"], refresh["schedule"]) == ("timerTrigger", "0 30 */6 * * *")
    routes = {
        name: next(b for b in meta["bindings"] if b["type"] == "httpTrigger")
        for name, meta in function_metadata.items() if name.startswith("api_")
    }
    assert {name: b["route"] for name, b in routes.items()} == {
        "api_request_scan_by_path": "images/{name}/{tag}/scan",
        "api_request_scan": "scans",
        "api_get_audit": "audits/{audit_id}",
        "api_security_summary": "security/summary",
        "api_image_verdict": "images/{name}/{tag}/verdict",
        "api_image_verdict_by_digest": "images/{name}/verdict",
        "api_image_history": "images/{name}/history",
        "api_fleet_images": "images",
        "api_dashboard": "dashboard",
        "api_metrics": "metrics",  # its own auth level: METRICS_ANONYMOUS (tests/test_metrics.py)
        "api_list_approvals": "approvals",
        "api_get_approval": "approvals/{approval_id}",
        "api_approval_security": "approvals/{approval_id}/security",
        "api_approve": "approvals/{approval_id}/approve",
        "api_reject": "approvals/{approval_id}/reject",
        "api_revoke_approval": "approvals/{approval_id}/revoke",
        "api_extend_deadline": "approvals/{approval_id}/extend",
        "api_policy_evaluate": "policy/evaluate",
        "api_admission_review": "admission/review",  # its own auth level: ADMISSION_AUTH (docs/admission.md)
        "api_admission_provider": "admission/provider",
        "api_vulnerability_images": "vulnerabilities/{id}/images",
        "api_package_images": "packages/{name}/images",
    }
    deadlines = function_metadata["approval_deadlines"]["bindings"][0]  # issue 25: at-risk deadlines
    assert (deadlines["type"], deadlines["schedule"]) == ("timerTrigger", "0 10 * * * *")
    assert "approval_digest" not in function_metadata  # DIGEST_SCHEDULE unset: no digest timer
    assert {b["authLevel"] for b in routes.values()} == {"FUNCTION"}


def test_host_json_agrees_with_the_code_and_the_platform_limits():
    host = json.loads((REPO_ROOT / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["maxDequeueCount"] == 3
    assert queues["messageEncoding"] == "none"
    function_timeout = _seconds(host["functionTimeout"])
    assert function_timeout <= 600  # Consumption's maximum
    # TRIVY_TIMEOUT's default (300 000 ms) kills trivy well before the function times out.
    from scanner_core.config import DEFAULT_TRIVY_TIMEOUT_MS

    assert function_timeout - DEFAULT_TRIVY_TIMEOUT_MS / 1000 >= 300
    # Measured (bench/bench_concurrency.py): ~1.5 scans per vCPU; 2 at once on a 1-vCPU plan.
    assert queues["batchSize"] + queues["newBatchThreshold"] == 2


def _seconds(text: str) -> int:
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


class Quarantine:
    """Collects what the function put on its poison-queue output binding."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def __call__(self, text: str) -> None:
        self.items.append(json.loads(text))


class Retries:
    """Collects the requests the function re-sent for later, with their delays."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def __call__(self, text: str, delay: int) -> None:
        self.sent.append((text, delay))


def deliver(
    body: bytes | str, *, dequeue_count: int = 1, message_id: str = "msg-1", retries: Retries | None = None
) -> Quarantine:
    quarantine = Quarantine()
    message = QueueMessage(
        id=message_id,
        body=body.encode() if isinstance(body, str) else body,
        dequeue_count=dequeue_count,
        insertion_time=INSERTED,
    )
    functions.on_scan_message(message, quarantine, REPO_ROOT, retries if retries is not None else Retries())
    return quarantine


def envelope(image: str, audit_id: str = "audit-7", created: int = 1795300000) -> str:
    return build_message(image, audit_id, created_at=created).to_text()


def folder_of(env, audit_id: str, created: int = 1795300000) -> str:
    stamp = datetime.fromtimestamp(created, tz=timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"trivy-{env.short_id}/{stamp}-{audit_id}"


@pytest.fixture
def registry_configured(scanner_env, registry, pushed_sample):
    scanner_env.write_config({"heartbeat-period": 300, "registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    return pushed_sample


def test_envelope_message_is_scanned(scanner_env, registry_configured, audits):
    quarantine = deliver(envelope(registry_configured.reference))
    assert quarantine.items == []
    meta = audits.json(f"{folder_of(scanner_env, 'audit-7')}/meta")
    assert meta["audit-result"] == "succeeded"
    assert meta["image-digest"] == registry_configured.digest


def test_a_scanned_message_is_served_by_the_audit_endpoint(scanner_env, registry_configured, audits, azurite):
    from scanner_core.functions import ApiContext, get_audit, security_summary

    deliver(envelope(registry_configured.reference, "served-1"))
    api = ApiContext(config=load_config(), queue_connection=azurite.connection_string,
                     queue_name="unused", message_encoding="none")
    request = func.HttpRequest(method="GET", url="http://localhost/api/audits/served-1", body=b"",
                               route_params={"audit_id": "served-1"})
    response = get_audit(request, api)
    assert response.status_code == 200
    assert json.loads(response.get_body())["summary"].startswith("FAILED: 1 critical")
    summary = security_summary(func.HttpRequest(method="GET", url="http://localhost/api/security/summary", body=b""), api)
    document = json.loads(summary.get_body())
    assert document["failed"] == 1 and document["audits"][0]["audit-id"] == "served-1"


def test_bare_reference_takes_its_audit_id_from_the_message_id(scanner_env, registry_configured, audits):
    quarantine = deliver(registry_configured.reference, message_id="5f0c2a8e-1111-4f4f-9a9a-000000000001")
    assert quarantine.items == []
    stamp = INSERTED.strftime("%Y%m%d-%H%M%S")
    meta = audits.json(f"trivy-{scanner_env.short_id}/{stamp}-5f0c2a8e-1111-4f4f-9a9a-000000000001/meta")
    assert meta["audit-result"] == "succeeded"


def test_base64_encoded_message_is_scanned_too(scanner_env, registry_configured, audits):
    body = base64.b64encode(envelope(registry_configured.reference).encode())
    assert deliver(body).items == []
    assert audits.json(f"{folder_of(scanner_env, 'audit-7')}/meta")["audit-result"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "message"),
        (b'{"headers": {"creation-time": 1}, "payload": {"image-scan-id": "a"}}', "payload.image-full-name"),
        (b'{"headers": {"creation-time": 1, "payload-version": "9"}, '
         b'"payload": {"image-scan-id": "a", "image-full-name": "alpine"}}', "headers.payload-version"),
        (b"\xff\xfe binary", "message"),
        (b"this is not an image reference", "message"),
    ],
)
def test_bad_message_is_quarantined_at_once_with_its_reason(scanner_env, audits, body, field):
    quarantine = deliver(body)  # no exception: the platform must not retry it
    (record,) = quarantine.items
    assert record["reason"].startswith(f"{field}: ")
    assert record["failure-kind"] == "permanent"
    assert record["original-message"] == body.decode("utf-8", "replace")
    assert audits.names() == []  # no audit id is known, so no meta


def test_invalid_reference_in_envelope_is_quarantined_with_meta(scanner_env, audits):
    body = '{"headers": {"creation-time": 1795300000, "payload-version": "1"}, ' \
           '"payload": {"image-scan-id": "audit-7", "image-full-name": "team/App:1"}}'
    (record,) = deliver(body).items
    assert record["reason"].startswith("payload.image-full-name: ")
    assert "invalid repository name" in record["reason"]
    assert (record["audit-id"], record["failure-reason"]) == ("audit-7", "invalid-image")
    meta = audits.json(f"{folder_of(scanner_env, 'audit-7')}/meta")  # the audit id is known: readers learn why
    assert meta["audit-result"] == "audit-failed"
    assert meta["failure-description"] == record["reason"]


@pytest.mark.parametrize(("tag", "password", "reason"), [
    ("1.0", "wrong-password", "unauthorized"),
    ("no-such-tag", None, "not-found"),
])
def test_permanent_scan_failure_is_quarantined_with_meta(
    scanner_env, registry, registry_configured, audits, tag, password, reason
):
    if password:
        scanner_env.write_config({"registries": [
            {"address": registry.address, "username": registry.username, "password": password, "insecure": True}
        ]})
    image = f"{registry.address}/team/app:{tag}"
    (record,) = deliver(envelope(image)).items
    assert (record["failure-reason"], record["audit-id"]) == (reason, "audit-7")
    assert json.loads(record["original-message"])["payload"]["image-full-name"] == image
    meta = audits.json(f"{folder_of(scanner_env, 'audit-7')}/meta")
    assert (meta["audit-result"], meta["failure-reason"]) == ("audit-failed", reason)
    assert registry.password not in json.dumps(record) and "wrong-password" not in json.dumps(record)


def test_transient_failure_is_retried_with_backoff_and_meta_waits_for_the_last_attempt(scanner_env, audits):
    from tests.support.registry import unreachable_address

    address = unreachable_address()
    scanner_env.write_config({"registries": [{"address": address, "insecure": True}]})
    scanner_env.set(RETRY_BACKOFF_BASE_SECONDS="30", RETRY_BACKOFF_MAX_SECONDS="45", RETRY_MAX_ATTEMPTS="3")
    body = envelope(f"{address}/team/app:1.0")
    meta_path = f"{folder_of(scanner_env, 'audit-7')}/meta"

    delays = []
    for attempt in (1, 2):
        retries = Retries()
        assert deliver(body, retries=retries).items == []  # completes normally: no raise, no poison
        ((body, delay),) = retries.sent
        headers = json.loads(body)["headers"]
        assert headers["attempt"] == attempt + 1 and headers["creation-time"] == 1795300000
        delays.append(delay)
        assert audits.names() == []
    assert 30 <= delays[0] <= 33 and 45 <= delays[1] <= 49  # 30 s, then doubled but capped at 45 s (+ jitter)

    retries = Retries()
    (record,) = deliver(body, retries=retries).items  # attempt 3 of 3: meta, then quarantine with the count
    assert retries.sent == []
    meta = audits.json(meta_path)
    assert (meta["audit-result"], meta["failure-kind"], meta["failure-reason"]) == (
        "audit-failed", "transient", "registry-unreachable")
    assert (record["attempts"], record["failure-kind"], record["failure-reason"]) == (3, "transient", "registry-unreachable")
    assert record["reason"].startswith("gave up after 3 attempt(s) over ")
    assert "attempt" not in json.loads(record["original-message"])["headers"]  # re-queueable as a fresh request


def test_redelivered_message_reuses_the_same_folder(scanner_env, registry_configured, audits):
    body = envelope(registry_configured.reference)
    deliver(body, dequeue_count=1)
    first = audits.json(f"{folder_of(scanner_env, 'audit-7')}/meta")
    deliver(body, dequeue_count=2)  # e.g. its visibility ran out during a long scan
    second = audits.json(f"{folder_of(scanner_env, 'audit-7')}/meta")
    assert {name.rsplit("/", 1)[0] for name in audits.names()} == {folder_of(scanner_env, "audit-7")}
    assert second == first  # answered from the recorded audit, not scanned again


def test_function_returns_none(scanner_env, registry_configured):
    quarantine = Quarantine()
    message = QueueMessage(id="m", body=envelope(registry_configured.reference).encode(), dequeue_count=1,
                           insertion_time=INSERTED)
    assert functions.on_scan_message(message, quarantine, REPO_ROOT) is None


def test_heartbeat_is_written_and_refreshed(scanner_env, audits):
    name = f"trivy-{scanner_env.short_id}/trivy-{scanner_env.short_id}.meta"
    functions.on_heartbeat(TimerRequest(past_due=False), functions.binding_settings(), REPO_ROOT)
    first = audits.json(name)
    assert first["scanner-type"] == "trivy"
    assert first["scanner-id"] == scanner_env.scanner_id
    assert first["scanner-periodicity"] == "on-message"
    assert first["heartbeat-periodicity"] == 60  # heartbeat-period of the test's config file
    assert abs(first["heartbeat"] - time.time()) < 60
    assert first["trivy-db-updated-at"] == "2026-11-01T00:00:00Z"
    time.sleep(1.1)
    functions.on_heartbeat(TimerRequest(past_due=True), functions.binding_settings(), REPO_ROOT)
    assert audits.json(name)["heartbeat"] > first["heartbeat"]


def test_enqueued_message_runs_through_the_trigger(scanner_env, registry_configured, audits, azurite, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("SCAN_QUEUE_NAME", "enqueue-test")
    result = subprocess.run(
        [sys.executable, "-m", "scanner_core", "enqueue", registry_configured.reference, "--audit-id", "via-queue"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert azurite.connection_string not in result.stdout + result.stderr

    # Receive it as the host does with messageEncoding "none": the body verbatim.
    with QueueClient.from_connection_string(azurite.connection_string, "enqueue-test") as queue:
        received = queue.receive_message()
    message = QueueMessage(id=received.id, body=received.content.encode(), dequeue_count=received.dequeue_count,
                           insertion_time=received.inserted_on)
    quarantine = Quarantine()
    functions.on_scan_message(message, quarantine, REPO_ROOT)
    assert quarantine.items == []
    (meta_name,) = [n for n in audits.names() if n.endswith("-via-queue/meta")]
    assert audits.json(meta_name)["audit-result"] == "succeeded"


def test_base64_message_from_the_sdk_runs_through_the_trigger(scanner_env, registry_configured, audits, azurite):
    """Someone drops a message with the SDK's base64 policy: it still scans."""
    with QueueClient.from_connection_string(azurite.connection_string, "b64-test",
                                            message_encode_policy=BinaryBase64EncodePolicy()) as sender:
        sender.create_queue()
        sender.send_message(envelope(registry_configured.reference, "b64-audit").encode())
    with QueueClient.from_connection_string(azurite.connection_string, "b64-test") as queue:
        received = queue.receive_message()
    assert received.content != envelope(registry_configured.reference, "b64-audit")  # it is base64 on the wire
    message = QueueMessage(id=received.id, body=received.content.encode(), dequeue_count=1,
                           insertion_time=received.inserted_on)
    functions.on_scan_message(message, Quarantine(), REPO_ROOT)
    assert audits.json(f"{folder_of(scanner_env, 'b64-audit')}/meta")["audit-result"] == "succeeded"


def test_concurrent_scans_share_one_cache(scanner_env, registry_configured, sample_image, audits):
    """Several invocations at once on one instance, one trivy cache: none fails."""
    config = load_config()
    outcomes: dict[int, object] = {}

    def run(index: int) -> None:
        scanner = Scanner(config)
        if index % 2:
            request = ScanRequest(audit_id=f"c-{index}", requested_at=INSERTED, image=registry_configured.reference)
        else:
            request = ScanRequest(audit_id=f"c-{index}", requested_at=INSERTED, input_tar=sample_image.path)
        outcomes[index] = scanner.scan(request)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = {i: o.meta.failure_description for i, o in outcomes.items() if not o.succeeded}
    assert len(outcomes) == 6 and failures == {}
    assert not list(Path(scanner_env.values["TRIVY_CACHE_DIR"]).glob("fanal/*.db"))  # no shared layer-cache lock


def test_the_light_binding_reader_says_what_the_settings_model_says(monkeypatch):
    """functions/bindings.py reads the binding names without pydantic (cold start, issue 18):
    the same values and the same error as FunctionSettings."""
    from scanner_core.errors import ConfigurationError
    from scanner_core.functions.bindings import binding_names
    from scanner_core.functions.settings import load_function_settings

    monkeypatch.setenv("SCAN_QUEUE_NAME", "scans-a")
    monkeypatch.setenv("WATCH_SCHEDULE", "0 */5 * * * *")
    monkeypatch.setenv("RESCAN_SCHEDULE", "")
    light, full = binding_names(), load_function_settings()
    for field in ("queue_name", "queue_connection", "heartbeat_schedule", "db_refresh_schedule", "watch_schedule",
                  "rescan_schedule", "poison_queue_name"):
        assert getattr(light, field) == getattr(full, field), field
    monkeypatch.setenv("SCAN_QUEUE_NAME", "Bad_Name")
    with pytest.raises(ConfigurationError) as light_error:
        binding_names()
    with pytest.raises(ConfigurationError) as full_error:
        load_function_settings()
    assert str(light_error.value) == str(full_error.value)
