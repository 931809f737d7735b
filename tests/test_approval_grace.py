"""Grace instead of instant revocation (issue 25, item 1), end to end with real parts: a
pushed image is scanned by the watch timer and approved; the DB learns a new critical and
the rescan puts the approval ``at-risk`` (still allowed, with a deadline, the finding and the
condition); the deadline timer sends ``approval-deadline-soon`` once; a suppression makes the
finding go away and clears it; without it the image is at risk again, and the timer run past
the deadline revokes it, after which ``/verdict`` refuses naming the CVE; a re-approval that
accepts the finding allows again. Every transition is one history entry and one signed
webhook event, also when the audit is delivered twice and the timer runs twice. Real
registry, Azurite, trivy and a verifying webhook receiver.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from azure.functions.timer import TimerRequest

from scanner_core.approvals import ApprovalStore, apply_deadlines, approval_id
from scanner_core.config import load_config
from scanner_core.follow_up import Notifier
from scanner_core.functions import ApiContext, approve, get_approval, image_verdict, monitor_handlers, on_deadlines
from scanner_core.functions import request_scan
from scanner_core.redact import Redactor
from scanner_core.storage import AzureBlobStore
from tests.conftest import REPO_ROOT, Audits
from tests.support.easy_auth import principal_headers
from tests.support.ports import wait_until
from tests.support.webhook import WebhookReceiver
from tests.test_approvals import call, critical_ids, decide
from tests.test_monitor_rescan import DAY1, DAY2, meta_of, write_db
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture

NEW_CVE = "CVE-2099-0100"
SECRET = "grace-webhook-secret-0123456789"
POLICY = """\
default: review
revocation:
  grace: 7d        # anything else: a week
  notice: 10d      # so the first timer run is already within the notice
  conditions:
    - {id: kev-due, kev: true, grace: kev-due-date}
"""


def _verdict(ctx: ApiContext, repository: str, digest: str) -> dict[str, Any]:
    status, verdict, _ = call(image_verdict, ctx, "GET", "v", route_params={"name": repository.replace("/", "%2F")},
                              params={"digest": digest})
    assert status == 200, verdict
    return verdict


def _events(receiver: WebhookReceiver) -> Counter[str]:
    return Counter(r.json().get("event") for r in receiver.all() if r.json().get("event", "").startswith("approval-"))


def _arrived(receiver: WebhookReceiver, kind: str) -> int:
    wait_until(lambda: _events(receiver)[kind] >= 1, timeout=10)
    return _events(receiver)[kind]


def test_a_new_cve_starts_a_grace_period_that_ends_in_a_revocation_only_at_its_deadline(
        monitor: Monitor, audits: Audits, azurite, tmp_path) -> None:  # noqa: F811
    cache = write_db(tmp_path / "cache", DAY1)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with WebhookReceiver(secret=SECRET.encode()) as receiver:
        monitor.env.set(TRIVY_CACHE_DIR=str(cache), NOTIFY_WEBHOOK_URLS=receiver.url, NOTIFY_WEBHOOK_SECRET=SECRET,
                        POLICY_PATH=str(policy), WEBSITE_AUTH_ENABLED="True")
        monitor.configure([{"repository": f"{monitor.registry.address}/grace/app"}])
        digest = monitor.push("grace/app", "2.0")
        monitor_handlers.on_watch(TimerRequest(), REPO_ROOT)
        (message,) = monitor.queue.take()
        assert monitor.queue.deliver(message, REPO_ROOT) == []
        repository = f"{monitor.registry.address}/grace/app"
        ids = {"approval_id": approval_id(repository, digest)}
        ctx = ApiContext(config=load_config(), queue_connection=azurite.connection_string,
                         queue_name=monitor.queue.name, message_encoding="none")
        store = ApprovalStore(audits.sas_url, monitor.env.short_id)

        # An approved image (its known critical accepted) is allowed.
        _, request, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
        (known,) = critical_ids(request["security-scan"])
        alice = principal_headers("alice@contoso.com")
        status, approved, _ = decide(approve, ctx, ids["approval_id"], headers["ETag"],
                                     {"reason": "ok", "accept": [{"id": known, "until": "2099-01-31"}]}, alice)
        assert status == 200 and _verdict(ctx, repository, digest)["allowed"] is True

        # The DB learns a new critical: the rescan (delivered twice) puts it at risk, still allowed.
        write_db(cache, DAY2, refreshed=True)
        monitor.env.set(RESCAN_MAX_AGE_HOURS="0")
        monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT)
        (rescan,) = monitor.queue.take()
        assert monitor.queue.deliver(rescan, REPO_ROOT) == []
        assert monitor.queue.deliver(rescan, REPO_ROOT) == []
        verdict = _verdict(ctx, repository, digest)
        assert verdict["allowed"] is True and verdict["approval"]["state"] == "at-risk", verdict
        risk = verdict["approval"]["at-risk"]
        assert risk["findings"] == [NEW_CVE] and risk["rule"] == "default" and NEW_CVE in risk["reason"]
        deadline = verdict["approval"]["deadline"]
        assert deadline == risk["deadline"] and deadline.endswith("Z")
        assert 6.9 * 86_400 < _unix(deadline) - time.time() <= 7 * 86_400
        assert _arrived(receiver, "approval-at-risk") == 1

        # The timer, run twice: one approval-deadline-soon (the notice is 10 days), no revocation.
        on_deadlines(TimerRequest(), REPO_ROOT)
        on_deadlines(TimerRequest(), REPO_ROOT)
        assert _arrived(receiver, "approval-deadline-soon") == 1
        assert _verdict(ctx, repository, digest)["allowed"] is True

        # A suppression takes the finding away: a requested scan clears the risk.
        ignore = tmp_path / ".trivyignore"
        ignore.write_text(f"{NEW_CVE}\n")
        monitor.env.set(TRIVY_IGNOREFILE=str(ignore))
        _scan_now(ctx, monitor, f"{repository}@{digest}")
        assert _verdict(ctx, repository, digest)["approval"]["state"] == "approved"
        assert _arrived(receiver, "approval-at-risk-cleared") == 1

        # Without it the finding is back: at risk again; the timer past the deadline revokes, once.
        ignore.write_text("")
        _scan_now(ctx, monitor, f"{repository}@{digest}")
        assert _verdict(ctx, repository, digest)["approval"]["state"] == "at-risk"
        notifier = Notifier.from_settings(load_config().settings, AzureBlobStore(audits.sas_url, Redactor()))
        later = time.time() + 8 * 86_400
        assert len(apply_deadlines(store, notifier, 0, later).revoked) == 1
        assert apply_deadlines(store, notifier, 0, later).revoked == []
        verdict = _verdict(ctx, repository, digest)
        assert verdict["allowed"] is False and verdict["approval"]["state"] == "revoked"
        assert NEW_CVE in verdict["approval"]["reason"] and "deadline" in verdict["approval"]["reason"]
        assert _arrived(receiver, "approval-revoked") == 1

        # A re-approval accepting the finding allows again.
        _, now, headers = call(get_approval, ctx, "GET", "x", route_params=ids)
        status, again, _ = decide(approve, ctx, ids["approval_id"], headers["ETag"], {
            "reason": "patched in 2.1, accepted", "accept": [{"id": known}, {"id": NEW_CVE}]}, alice)
        assert status == 200 and _verdict(ctx, repository, digest)["allowed"] is True

        _, final, _ = call(get_approval, ctx, "GET", "x", route_params=ids)
        moves = [(h.get("from"), h["to"]) for h in final["history"]]
        assert moves == [(None, "pending"), ("pending", "approved"), ("approved", "at-risk"),
                         ("at-risk", "at-risk"), ("at-risk", "approved"), ("approved", "at-risk"),
                         ("at-risk", "revoked"), ("revoked", "approved")], moves
        assert final["history"][2]["deadline"] == deadline and final["history"][2]["audit-id"] == \
            meta_of(monitor, audits, rescan.payload["image-scan-id"])["audit-id"]
        time.sleep(0.5)  # nothing more arrives
        assert sum(_events(receiver).values()) == 5 and all(r.verified for r in receiver.all()), _events(receiver)


def _scan_now(ctx: ApiContext, monitor: Monitor, image: str) -> None:
    status, queued, _ = call(request_scan, ctx, "POST", "scans", body={"image": image})
    assert status == 202, queued
    (message,) = monitor.queue.take()
    assert monitor.queue.deliver(message, REPO_ROOT) == []


def _unix(iso: str) -> float:
    from datetime import datetime, timezone

    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
