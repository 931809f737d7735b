"""Issue 25 end to end: the grace period seen through the admission route. An approved image is
allowed by an ``AdmissionReview`` (built by the API server's double, tests/support/admission.py);
the DB learns a new critical and the rescan puts the approval ``at-risk``: the review is still
allowed, with a ``warnings`` entry naming the image and the deadline; the deadline timer run past
the deadline revokes it and the next review is denied, ``status.message`` naming the CVE; a
re-approval accepting the finding allows again. Real registry, Azurite and trivy with test-built
DBs; the handlers in-process; each review counted by its decision. ``ADMISSION_VERDICT_TTL_SECONDS``
is shown both ways: a cached verdict hides the change for its TTL, and ``0`` turns the cache off so
each step is seen at once.
"""

from __future__ import annotations

import time

from azure.functions.timer import TimerRequest

from scanner_core.approvals import ApprovalStore, apply_deadlines, approval_id
from scanner_core.config import load_config
from scanner_core.follow_up import Notifier
from scanner_core.functions import ApiContext, approve, get_approval, image_verdict, monitor_handlers
from scanner_core.redact import Redactor
from scanner_core.storage import AzureBlobStore
from tests.conftest import REPO_ROOT, Audits
from tests.support.admission import admission_review, pod_manifest
from tests.support.easy_auth import principal_headers
from tests.test_admission import review
from tests.test_approval_grace import NEW_CVE, POLICY
from tests.test_approvals import call, critical_ids, decide
from tests.test_monitor_rescan import DAY1, DAY2, write_db
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture
from tests.test_telemetry import Exported, exported  # noqa: F401 - the fixture


def test_an_at_risk_image_is_admitted_with_a_warning_until_its_deadline_revokes_it(
        monitor: Monitor, audits: Audits, azurite, tmp_path, exported: Exported) -> None:  # noqa: F811
    cache = write_db(tmp_path / "cache", DAY1)
    (policy := tmp_path / "policy.yaml").write_text(POLICY)
    monitor.env.set(TRIVY_CACHE_DIR=str(cache), POLICY_PATH=str(policy), WEBSITE_AUTH_ENABLED="True",
                    ADMISSION_MODE="enforce", ADMISSION_VERDICT_TTL_SECONDS="0")
    repository = f"{monitor.registry.address}/admission-grace/app"
    monitor.configure([{"repository": repository}])
    digest = monitor.push("admission-grace/app", "1.0")  # its own repository: one registry serves the session
    monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
    (message,) = monitor.queue.take()
    assert monitor.queue.deliver(message, REPO_ROOT) == []
    ctx = ApiContext(config=load_config(), queue_connection=azurite.connection_string,
                     queue_name=monitor.queue.name, message_encoding="none")
    image = f"{repository}@{digest}"

    def admit() -> dict:
        status, answered = review(ctx, admission_review(pod_manifest([image]), uid="uid-grace"))
        assert status == 200 and answered["response"]["uid"] == "uid-grace", answered
        return answered["response"]

    # Scanned, not yet approved (policy default: review): denied.
    assert admit()["allowed"] is False

    # Approved (its known critical accepted): allowed, no warnings.
    ids = {"approval_id": approval_id(repository, digest)}
    _, request, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
    (known,) = critical_ids(request["security-scan"])
    alice = principal_headers("alice@contoso.com")
    status, _, _ = decide(approve, ctx, ids["approval_id"], headers["ETag"],
                          {"reason": "ok", "accept": [{"id": known, "until": "2099-01-31"}]}, alice)
    assert status == 200
    monitor.env.set(ADMISSION_VERDICT_TTL_SECONDS="300")  # cached from here for 5 minutes
    assert admit() == {"uid": "uid-grace", "allowed": True}

    # The DB learns a new critical: the rescan puts the approval at risk.
    write_db(cache, DAY2, refreshed=True)
    monitor.env.set(RESCAN_MAX_AGE_HOURS="0")
    monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT)
    (rescan,) = monitor.queue.take()
    assert monitor.queue.deliver(rescan, REPO_ROOT) == []
    assert admit() == {"uid": "uid-grace", "allowed": True}, "within the TTL the cached verdict answers"
    monitor.env.set(ADMISSION_VERDICT_TTL_SECONDS="0")  # off: every review looks the image up
    response = admit()
    _, verdict, _ = call(image_verdict, ctx, "GET", "v", route_params={"name": repository.replace("/", "%2F")},
                         params={"digest": digest})
    deadline = verdict["approval"]["deadline"]
    assert verdict["approval"]["state"] == "at-risk" and deadline.endswith("Z"), verdict
    assert response["allowed"] is True and "status" not in response, response
    (warning,) = response["warnings"]
    assert image in warning and deadline in warning and "at risk" in warning, warning

    # The deadline timer run past the deadline revokes it: the next review is denied naming the CVE.
    store = ApprovalStore(audits.sas_url, monitor.env.short_id)
    notifier = Notifier.from_settings(load_config().settings, AzureBlobStore(audits.sas_url, Redactor()))
    assert len(apply_deadlines(store, notifier, 0, time.time() + 8 * 86_400).revoked) == 1
    response = admit()
    assert response["allowed"] is False and response["status"]["code"] == 403, response
    assert image in response["status"]["message"] and NEW_CVE in response["status"]["message"]
    assert "revoked" in response["status"]["message"]

    # A re-approval accepting the finding allows again, without warnings.
    _, _, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
    status, _, _ = decide(approve, ctx, ids["approval_id"], headers["ETag"], {
        "reason": "accepted until 2.1", "accept": [{"id": known}, {"id": NEW_CVE}]}, alice)
    assert status == 200
    assert admit() == {"uid": "uid-grace", "allowed": True}

    # Each review counted once by its decision (trivy_scanner_admission_decisions, OpenTelemetry).
    counted = {p.attributes["decision"]: p.value for p in exported.points("trivy_scanner_admission_decisions")
               if p.attributes["mode"] == "enforce" and p.attributes["unscanned"] == "false"}
    assert counted == {"denied": 2, "allowed": 3, "warned": 1}, counted
