"""Issue 25's admission routes through the real worker (Python 3.13, the deployment package):
the double of the API server and Gatekeeper (tests/support/admission.py) posts an
``AdmissionReview`` and a ``ProviderRequest`` built from real manifests; the unscanned image is
denied and queued once with ``trigger: admission``; the queued scan runs through the queue
trigger; a reviewer approves it; the next review is allowed. Azurite, the registry, trivy."""

from __future__ import annotations

import json

from tests.support.admission import admission_review, body, cronjob_manifest, pod_manifest, provider_request
from tests.support.easy_auth import principal_headers
from tests.worker.test_worker_triggers import (  # noqa: F401 - fixtures
    deliver,
    http_answer,
    registry_configured,
    trigger_queue,
    worker,
)

JSON = {"Content-Type": "application/json"}


def test_an_unscanned_image_is_denied_queued_once_scanned_approved_then_allowed(
    worker, pb, scanner_env, registry_configured, trigger_queue  # noqa: F811
):
    scanner_env.set(WEBSITE_AUTH_ENABLED="True", APPROVER_ROLES="release-approvers", ADMISSION_VERDICT_TTL_SECONDS="0")
    host = worker()
    image = registry_configured.reference  # by tag: resolved to its digest through the registry
    pinned = f"{image.rsplit(':', 1)[0]}@{registry_configured.digest}"

    def review(manifest: str, uid: str) -> dict:
        status, headers, answered = http_answer(host.http_invocation(
            "api_admission_review", "POST", "/api/admission/review", headers=JSON,
            body=body(admission_review(manifest, uid=uid))), pb)  # fmt: skip
        assert status == 200 and headers["content-type"] == "application/json", answered
        document = json.loads(answered)
        assert (document["apiVersion"], document["kind"], document["response"]["uid"]) == (
            "admission.k8s.io/v1", "AdmissionReview", uid)
        return document["response"]

    for attempt in range(3):  # a rollout retrying: denied each time, queued once
        denied = review(pod_manifest([image]), f"uid-{attempt}")
        assert denied["allowed"] is False and image in denied["status"]["message"]
        assert "never been scanned; a scan was queued" in denied["status"]["message"], denied
    (message,) = trigger_queue.take()
    assert message.payload["trigger"] == "admission" and message.payload["image-full-name"] == pinned
    assert message.payload["tag"] == "1.0"
    deliver(host, pb, message.body, message_id=message.id)

    # Scanned, approval pending: the CronJob (init and ephemeral containers) is denied naming why.
    denied = review(cronjob_manifest([pinned], init=[image], ephemeral=[pinned]), "uid-pending")
    assert denied["allowed"] is False and "approval is pending" in denied["status"]["message"], denied

    status, _, listed = http_answer(host.http_invocation(
        "api_list_approvals", "GET", "/api/approvals", query={"status": "pending"}), pb)
    (row,) = json.loads(listed)["approvals"]
    status, headers, _ = http_answer(host.http_invocation(
        "api_get_approval", "GET", f"/api/approvals/{row['id']}", params={"approval_id": row["id"]}), pb)
    alice = principal_headers("alice@contoso.com", roles=["release-approvers"])
    status, _, approved = http_answer(host.http_invocation(
        "api_approve", "POST", f"/api/approvals/{row['id']}/approve", params={"approval_id": row["id"]},
        headers={**alice, **JSON, "If-Match": headers["etag"]},
        body=json.dumps({"reason": "reviewed for the rollout", "accept": []}).encode()), pb)  # fmt: skip
    assert status == 200, approved
    assert review(cronjob_manifest([pinned], init=[image], ephemeral=[pinned]), "uid-approved") == {
        "uid": "uid-approved", "allowed": True}

    status, _, answered = http_answer(host.http_invocation(
        "api_admission_provider", "POST", "/api/admission/provider", headers=JSON,
        body=body(provider_request([image, "not a reference"]))), pb)  # fmt: skip
    provider = json.loads(answered)
    assert status == 200 and provider["kind"] == "ProviderResponse" and provider["response"]["idempotent"] is True
    ok, bad = provider["response"]["items"]
    assert ok["key"] == image and ok["value"]["allowed"] is True and ok["value"]["approval"]["state"] == "approved"
    assert bad["key"] == "not a reference" and bad["error"]

    status, _, answered = http_answer(host.http_invocation(
        "api_admission_review", "POST", "/api/admission/review", headers=JSON,
        body=body({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}})), pb)  # fmt: skip
    assert status == 400 and json.loads(answered)["error"]["field"] == "request.uid"
    assert trigger_queue.take() == []


def test_client_certificate_auth_through_the_worker(worker, pb, scanner_env, registry_configured, trigger_queue):  # noqa: F811
    """``ADMISSION_AUTH=client-certificate``: the routes are indexed anonymous, and the certificate App
    Service forwards reaches the check through the worker's (lower-cased) headers."""
    from tests.test_admission import _certificate, _header
    from cryptography.hazmat.primitives import hashes

    cluster, _ = _certificate("gatekeeper")
    other, _ = _certificate("gatekeeper")
    scanner_env.set(ADMISSION_AUTH="client-certificate",
                    ADMISSION_CLIENT_CERT_THUMBPRINTS=cluster.fingerprint(hashes.SHA256()).hex())
    host = worker()
    (trigger,) = [json.loads(b) for b in host.functions["api_admission_review"].raw_bindings
                  if json.loads(b)["type"] == "httpTrigger"]
    assert trigger["authLevel"].lower() == "anonymous"
    document = body(admission_review(pod_manifest([registry_configured.reference]), uid="uid-mtls", dry_run=True))

    def send(**headers: str) -> tuple[int, dict]:
        status, _, answered = http_answer(host.http_invocation(
            "api_admission_review", "POST", "/api/admission/review", headers={**JSON, **headers}, body=document), pb)
        return status, json.loads(answered)

    status, answered = send(**{"X-ARR-ClientCert": _header(cluster)})
    assert status == 200 and answered["response"]["uid"] == "uid-mtls" and answered["response"]["allowed"] is False
    status, answered = send(**{"X-ARR-ClientCert": _header(other)})
    assert status == 403 and answered["error"]["field"] == "X-ARR-ClientCert"
    assert send()[0] == 401
    assert trigger_queue.take() == []  # dryRun, and refused callers: nothing queued
