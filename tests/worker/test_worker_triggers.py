"""Every kind of trigger through the real worker, over the deployment package, against
Azurite, the private registry and the package's own trivy: the host double builds each
``InvocationRequest`` as the Functions host does and reads the answer as the host would
(``output_data``, ``return_value``, ``result``)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, urlparse

import pytest

from tests.support.easy_auth import principal_headers
from tests.support.functions_host import output
from tests.support.monitor import TriggerQueue, image_pushed_event
from tests.support.registry import unreachable_address
from tests.test_db_refresh import PUBLISHED_UPDATED_AT, db_mirror  # noqa: F401 - the fixture
from tests.test_function_app import envelope, folder_of
from tests.test_monitor_rescan import DAY1, DAY2, finding_ids, meta_of, write_db
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture
from tests.worker.conftest import app_settings

INSERTED = datetime(2026, 11, 22, 9, 15, 0, 1234, tzinfo=timezone.utc)
NEW_CVE = "CVE-2099-0100"


@pytest.fixture
def worker(start_worker, scanner_env, azurite):
    """``worker()``: a worker started with this test's settings as they are now."""
    return lambda: start_worker(app_settings(scanner_env, azurite))


@pytest.fixture
def trigger_queue(scanner_env, azurite):
    queue = TriggerQueue(azurite.connection_string)
    scanner_env.set(SCAN_QUEUE_NAME=queue.name)
    yield queue
    queue.close()


@pytest.fixture
def registry_configured(scanner_env, registry, pushed_sample):
    scanner_env.write_config({"heartbeat-period": 60, "registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})  # fmt: skip
    return pushed_sample


def succeeded(response, pb) -> None:
    assert response.result.status == pb.StatusResult.Success, response.result.exception.message


def deliver(host, pb, body: str, *, message_id: str = "msg-1", dequeue_count: int = 1):
    response = host.queue_invocation("scan_request", body, message_id=message_id, dequeue_count=dequeue_count,
                                     inserted=INSERTED, pop_receipt=uuid.uuid4().hex)  # fmt: skip
    succeeded(response, pb)
    assert not response.HasField("return_value")  # the queue trigger has no $return
    return response


def http_answer(response, pb) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-cased names) and body of the worker's ``RpcHttp``."""
    succeeded(response, pb)
    http = response.return_value.http
    body = http.body
    data = body.bytes if body.WhichOneof("data") == "bytes" else getattr(body, body.WhichOneof("data") or "string")
    return int(http.status_code), {k.lower(): v for k, v in http.headers.items()}, (
        data.encode() if isinstance(data, str) else data)


# -- the queue trigger ----------------------------------------------------------------


def test_a_queued_scan_lands_in_blob_and_every_read_route_serves_it(
    worker, pb, scanner_env, registry, registry_configured, audits, trigger_queue
):
    host = worker()
    response = deliver(host, pb, envelope(registry_configured.reference))
    assert output(response, "quarantine") is None
    meta = audits.json(f"{folder_of(scanner_env, 'audit-7')}/meta")
    assert meta["audit-result"] == "succeeded" and meta["image-digest"] == registry_configured.digest
    assert meta["summary"].startswith("FAILED: 1 critical")

    status, headers, body = http_answer(
        host.http_invocation("api_get_audit", "GET", "/api/audits/audit-7", params={"audit_id": "audit-7"}), pb)
    # The worker writes Content-Type from the mimetype alone for non-text types (azure-functions http.py).
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == meta

    status, _, body = http_answer(host.http_invocation(
        "api_security_summary", "GET", "/api/security/summary", query={"limit": "5", "code": "key"}), pb)
    summary = json.loads(body)
    assert status == 200 and summary["failed"] == 1 and summary["audits"][0]["audit-id"] == "audit-7"

    # A registry host and a path in one route segment, percent-encoded; the host passes it on as is.
    name = quote(f"{registry.address}/team/app", safe="")
    status, _, body = http_answer(host.http_invocation(
        "api_image_verdict", "GET", f"/api/images/{name}/1.0/verdict", params={"name": name, "tag": "1.0"}), pb)
    verdict = json.loads(body)
    assert status == 200 and verdict["audit-id"] == "audit-7", verdict
    status, _, body = http_answer(host.http_invocation(
        "api_image_verdict_by_digest", "GET", f"/api/images/{name}/verdict", params={"name": name},
        query={"digest": registry_configured.digest}), pb)  # fmt: skip
    assert status == 200 and json.loads(body)["audit-id"] == "audit-7"
    status, _, body = http_answer(host.http_invocation(
        "api_image_history", "GET", f"/api/images/{name}/history", params={"name": name}), pb)
    assert status == 200 and [a["audit-id"] for a in json.loads(body)["audits"]] == ["audit-7"]
    # The fleet queries (issue 24): the scan's follow-up wrote the query tables (AzureWebJobsStorage).
    status, _, body = http_answer(host.http_invocation(
        "api_vulnerability_images", "GET", "/api/vulnerabilities/CVE-2099-0001/images",
        params={"id": "CVE-2099-0001"}, query={"limit": "100"}), pb)  # fmt: skip
    assert status == 200 and registry_configured.digest in {i["digest"] for i in json.loads(body)["images"]}
    status, _, body = http_answer(host.http_invocation(
        "api_package_images", "GET", "/api/packages/busybox/images", params={"name": "busybox"},
        query={"version": "<1.36.1-r5", "type": "apk"}), pb)  # fmt: skip
    assert status == 200 and registry_configured.digest in {i["digest"] for i in json.loads(body)["images"]}
    status, _, body = http_answer(host.http_invocation(
        "api_fleet_images", "GET", "/api/images", query={"repository": f"{registry.address}/team/app"}), pb)
    assert status == 200 and [i["audit-id"] for i in json.loads(body)["images"]] == ["audit-7"]
    status, _, body = http_answer(host.http_invocation(
        "api_get_audit", "GET", "/api/audits/nope", params={"audit_id": "nope"}), pb)
    assert status == 404 and json.loads(body)["error"]["code"] == "not-found"
    # The worker's log stream (everything the app and the SDKs logged) carries no secret.
    signature = parse_qs(urlparse(audits.sas_url).query)["sig"][0]
    assert host.logs and not [log.message for log in host.logs
                              if signature in log.message or registry.password in log.message]


def test_a_hostile_body_is_quarantined_through_the_output_binding(worker, pb, audits, trigger_queue):
    host = worker()
    response = deliver(host, pb, "{not json")
    quarantined = output(response, "quarantine")
    assert quarantined is not None and quarantined.WhichOneof("data") == "string"
    record = json.loads(quarantined.string)
    assert record["reason"].startswith("message: ") and record["failure-kind"] == "permanent"
    assert record["original-message"] == "{not json"
    assert audits.names() == []


def test_a_transient_failure_sends_a_copy_back_to_the_trigger_queue(worker, pb, scanner_env, audits, trigger_queue):
    address = unreachable_address()
    scanner_env.write_config({"registries": [{"address": address, "insecure": True}]})
    scanner_env.set(RETRY_BACKOFF_BASE_SECONDS="1", RETRY_BACKOFF_MAX_SECONDS="1", RETRY_MAX_ATTEMPTS="3")
    host = worker()
    response = deliver(host, pb, envelope(f"{address}/team/app:1.0"), dequeue_count=1)
    assert output(response, "quarantine") is None  # not poisoned: re-sent for later
    deadline = time.monotonic() + 20
    copies = []
    while not copies and time.monotonic() < deadline:
        time.sleep(0.5)
        copies = trigger_queue.take()
    (copy,) = copies
    assert copy.envelope["headers"]["attempt"] == 2 and copy.payload["image-scan-id"] == "audit-7"
    assert audits.names() == []  # no meta before the last attempt


# -- the timers ---------------------------------------------------------------------------


def test_the_heartbeat_timer_writes_the_heartbeat(worker, pb, scanner_env, audits):
    host = worker()
    succeeded(host.timer_invocation("heartbeat", past_due=True), pb)
    heartbeat = audits.json(f"trivy-{scanner_env.short_id}/trivy-{scanner_env.short_id}.meta")
    assert heartbeat["heartbeat-periodicity"] == 60 and abs(heartbeat["heartbeat"] - time.time()) < 120
    assert any("past due" in log.message for log in host.logs)  # the worker read IsPastDue


def test_the_db_refresh_timer_downloads_the_db_with_the_packaged_trivy(
    worker, pb, scanner_env, registry, db_mirror, tmp_path, audits  # noqa: F811
):
    cache = tmp_path / "fresh-cache"
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}
    ]})  # fmt: skip
    scanner_env.set(TRIVY_CACHE_DIR=str(cache), TRIVY_DB_REPOSITORY=db_mirror, TRIVY_SKIP_DB_UPDATE="false")
    host = worker()
    succeeded(host.timer_invocation("refresh_vulnerability_db"), pb)
    metadata = json.loads((cache / "db" / "metadata.json").read_text())
    assert metadata["UpdatedAt"] == PUBLISHED_UPDATED_AT.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_watch_then_scan_then_rescan_through_the_worker(worker, pb, monitor: Monitor, audits, tmp_path):  # noqa: F811
    cache = write_db(tmp_path / "cache", DAY1)
    monitor.env.set(TRIVY_CACHE_DIR=str(cache), RESCAN_MAX_AGE_HOURS="0", RESCAN_SERVER="auto")
    monitor.configure([{"repository": f"{monitor.registry.address}/worker/app", "tags": r"^\d+\.\d+$"}])
    digests = {monitor.push("worker/app", tag) for tag in ("1.0", "1.1")}
    host = worker()

    succeeded(host.timer_invocation("watch_repositories"), pb)
    watched = monitor.queue.take()
    assert {(m.payload["image-full-name"], m.payload["trigger"]) for m in watched} == {
        (monitor.ref("worker/app", digest), "watch") for digest in digests}
    for message in watched:
        deliver(host, pb, message.body, message_id=message.id)
        first = meta_of(monitor, audits, message.payload["image-scan-id"])
        assert first["audit-result"] == "succeeded" and NEW_CVE not in finding_ids(first)

    # The rescan timer sends both digests in one batch (issue 26); one invocation rescans them
    # from their inventories through a loopback server of the package's own trivy.
    write_db(cache, DAY2, refreshed=True)
    succeeded(host.timer_invocation("rescan_images"), pb)
    (batch,) = monitor.queue.take()
    assert batch.payload["trigger"] == "rescan" and len(batch.payload["rescans"]) == 2
    deliver(host, pb, batch.body, message_id=batch.id)
    assert monitor.queue.take() == []
    for item in batch.payload["rescans"]:
        meta = meta_of(monitor, audits, item["image-scan-id"])
        assert NEW_CVE in finding_ids(meta) and "rescanned-from" in meta and "rescan-fallback" not in meta


# -- Event Grid ----------------------------------------------------------------------------


def event_json(event) -> dict:
    """An Event Grid (schema) event as Event Grid delivers it and the host passes it on."""
    return {
        "id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
        "eventTime": event.event_time.isoformat().replace("+00:00", "Z"), "dataVersion": event.data_version,
        "metadataVersion": "1", "data": event.get_json(),
    }  # fmt: skip


def test_an_image_pushed_event_queues_a_scan_and_a_malformed_one_is_quarantined(
    worker, pb, monitor: Monitor, audits  # noqa: F811
):
    monitor.configure([])
    digest = monitor.push("pushed/app", "2.0")
    host = worker()
    event = image_pushed_event(monitor.registry.address, "pushed/app", digest, "2.0")
    response = host.event_grid_invocation("image_pushed", event_json(event))
    succeeded(response, pb)
    assert output(response, "quarantine") is None
    (queued,) = monitor.queue.take()
    assert (queued.payload["image-full-name"], queued.payload["tag"], queued.payload["trigger"]) == (
        monitor.ref("pushed/app", digest), "2.0", "event")

    malformed = image_pushed_event(monitor.registry.address, "pushed/app", digest, "2.0", data={"action": "push"})
    response = host.event_grid_invocation("image_pushed", event_json(malformed))
    succeeded(response, pb)
    record = json.loads(output(response, "quarantine").string)
    assert record["original-message"] and record["reason"]
    assert monitor.queue.take() == []


# -- the HTTP routes that write ----------------------------------------------------------------


def test_the_scan_routes_and_the_dashboard_answer_through_the_worker(
    worker, pb, registry, registry_configured, trigger_queue
):
    host = worker()
    status, headers, body = http_answer(host.http_invocation(
        "api_request_scan", "POST", "/api/scans", headers={"Content-Type": "application/json"},
        body=json.dumps({"image": registry_configured.reference, "audit-id": "posted-1"}).encode()), pb)  # fmt: skip
    assert status == 202 and headers["location"] == "/api/audits/posted-1", body
    name = quote(f"{registry.address}/team/app", safe="")
    status, headers, body = http_answer(host.http_invocation(
        "api_request_scan_by_path", "POST", f"/api/images/{name}/1.0/scan", params={"name": name, "tag": "1.0"},
        query={"audit-id": "by-path-1"}), pb)  # fmt: skip
    assert status == 202 and json.loads(body)["audit-id"] == "by-path-1"
    queued = {m.payload["image-scan-id"]: m.payload["image-full-name"] for m in trigger_queue.take()}
    assert queued == {"posted-1": registry_configured.reference, "by-path-1": f"{registry.address}/team/app:1.0"}

    status, _, body = http_answer(host.http_invocation(
        "api_request_scan", "POST", "/api/scans", body=b'{"image": "x", "extra": 1}'), pb)
    assert status == 400 and json.loads(body)["error"]["field"] == "extra"
    status, headers, _ = http_answer(host.http_invocation("api_request_scan", "GET", "/api/scans"), pb)
    assert status == 405 and headers["allow"] == "POST"

    status, headers, body = http_answer(host.http_invocation("api_dashboard", "GET", "/api/dashboard",
                                                             query={"code": "key"}), pb)  # fmt: skip
    assert status == 200 and headers["content-type"].startswith("text/html")
    policy = headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; script-src 'sha256-") and "connect-src 'self'" in policy
    assert headers["referrer-policy"] == "no-referrer" and b"<html" in body.lower()


def test_every_http_function_answers_through_the_worker(worker, pb):
    """Routes added later are converted both ways too (an answer, whatever its status)."""
    host = worker()
    http_functions = [name for name in host.functions
                      if any(json.loads(b)["type"] == "httpTrigger" for b in host.functions[name].raw_bindings)]
    assert len(http_functions) >= 8
    for name in http_functions:
        status, _, _ = http_answer(host.http_invocation(name, "GET", f"/api/{name}", params={}), pb)
        assert 200 <= status < 600, name


def test_an_approval_is_decided_gated_graphed_and_dry_run_through_the_worker(
    worker, pb, scanner_env, registry, registry_configured, trigger_queue
):
    """Issue 15's and 19's routes through the worker: an API scan creates the digest's
    approval request, a reviewer with App Service's principal headers approves it with
    ``If-Match`` (a stale version is 409), ``/verdict`` says allowed, the metrics show the
    state, and the policy's dry run answers; headers and bodies as the worker returns them."""
    scanner_env.set(WEBSITE_AUTH_ENABLED="True", APPROVER_ROLES="release-approvers")
    host = worker()
    status, _, _ = http_answer(host.http_invocation(
        "api_request_scan", "POST", "/api/scans", headers={"Content-Type": "application/json"},
        body=json.dumps({"image": registry_configured.reference, "audit-id": "gated-1"}).encode()), pb)  # fmt: skip
    assert status == 202
    (queued,) = trigger_queue.take()
    assert queued.payload["trigger"] == "request"
    deliver(host, pb, queued.body, message_id=queued.id)

    status, _, body = http_answer(host.http_invocation(
        "api_list_approvals", "GET", "/api/approvals", query={"status": "pending"}), pb)
    assert status == 200, body
    (row,) = json.loads(body)["approvals"]
    ids = {"approval_id": row["id"]}
    status, headers, body = http_answer(host.http_invocation(
        "api_get_approval", "GET", f"/api/approvals/{row['id']}", params=ids), pb)
    assert status == 200 and headers["etag"] == json.loads(body)["etag"]
    seen = headers["etag"]

    alice = principal_headers("alice@contoso.com", roles=["release-approvers"])
    decision = json.dumps({"reason": "accepted for the test", "accept": []}).encode()
    status, headers, body = http_answer(host.http_invocation(
        "api_approve", "POST", f"/api/approvals/{row['id']}/approve", params=ids,
        headers={**alice, "If-Match": seen, "Content-Type": "application/json"}, body=decision), pb)  # fmt: skip
    approved = json.loads(body)
    assert status == 200, approved
    assert (approved["state"], approved["decided-by"]) == ("approved", "alice@contoso.com")
    assert headers["etag"] != seen
    status, headers, body = http_answer(host.http_invocation(
        "api_reject", "POST", f"/api/approvals/{row['id']}/reject", params=ids,
        headers={**alice, "If-Match": seen}, body=json.dumps({"reason": "stale"}).encode()), pb)  # fmt: skip
    assert status == 409 and json.loads(body)["error"]["code"] == "stale-version"
    eve = principal_headers("eve@contoso.com", roles=["readers"])
    status, _, body = http_answer(host.http_invocation(
        "api_reject", "POST", f"/api/approvals/{row['id']}/reject", params=ids,
        headers={**eve, "If-Match": approved["etag"]}, body=json.dumps({"reason": "no"}).encode()), pb)  # fmt: skip
    assert status == 403, body

    name = quote(f"{registry.address}/team/app", safe="")
    status, _, body = http_answer(host.http_invocation(
        "api_image_verdict_by_digest", "GET", f"/api/images/{name}/verdict", params={"name": name},
        query={"digest": registry_configured.digest}), pb)  # fmt: skip
    verdict = json.loads(body)
    assert status == 200 and verdict["allowed"] is True and verdict["approval"]["state"] == "approved", verdict

    status, headers, body = http_answer(host.http_invocation("api_metrics", "GET", "/api/metrics"), pb)
    assert status == 200 and headers["content-type"].startswith("text/plain"), headers
    assert any(line.startswith("trivy_scanner_image_approval{") and 'state="approved"' in line
               for line in body.decode().splitlines()), body.decode()[:2000]

    status, _, body = http_answer(host.http_invocation(
        "api_policy_evaluate", "POST", "/api/policy/evaluate", headers={"Content-Type": "application/json"},
        body=json.dumps({"audit-id": "gated-1"}).encode()), pb)  # fmt: skip
    dry_run = json.loads(body)
    assert status == 200 and dry_run["audit-id"] == "gated-1" and dry_run["decision"]["action"], dry_run

    # Issue 25: a reviewer revokes at once through the worker; the deadline timer runs under it.
    status, _, body = http_answer(host.http_invocation(
        "api_revoke_approval", "POST", f"/api/approvals/{row['id']}/revoke", params=ids,
        headers={**alice, "If-Match": approved["etag"]}, body=json.dumps({"reason": "exploited"}).encode()), pb)
    assert status == 200 and json.loads(body)["state"] == "revoked", body
    succeeded(host.timer_invocation("approval_deadlines"), pb)
