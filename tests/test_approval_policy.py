"""Where the approvals and the policy meet (issue 15): the findings an approval
accepts apply to the policy's evaluation of the digest's later audits until their
date, so a rescan does not revoke what a reviewer accepted, and does once the
acceptance has expired. Real trivy, registry and Azurite."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from scanner_core.approvals import ApprovalStore, Decision, Reviewer, approval_id, decide_request
from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.models import AcceptedRisk
from scanner_core.storage import image_identity
from tests.test_policy import REQUESTED, write_policy


def _scan(reference: str, audit_id: str, trigger: str, audits) -> dict:
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id=audit_id, requested_at=REQUESTED, image=reference, trigger=trigger)
    )
    assert outcome.succeeded, outcome.failure
    return audits.json(outcome.meta_path)


def test_an_approvals_accepted_cves_apply_to_later_audits_until_their_date(
    scanner_env, registry, pushed_sample, audits, tmp_path
):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    write_policy(scanner_env, tmp_path, {"default": "approve", "rules": [
        {"id": "no-critical", "action": "reject", "severity": {"critical": "> 0"}}]})
    reference = pushed_sample.reference.rsplit(":", 1)[0] + f"@{pushed_sample.digest}"

    first = _scan(reference, "gate-first", "request", audits)
    assert first["policy"]["action"] == "reject" and first["policy"]["rule"] == "no-critical"
    criticals = sorted({f["VulnerabilityID"] for f in first["details"] if f["Severity"] == "CRITICAL"})
    assert criticals, "the fixture image has a critical finding"
    repository, _, digest = image_identity(first["image"], first["image-digest"])
    store = ApprovalStore(audits.sas_url, scanner_env.short_id)
    request, etag = store.get(approval_id(repository, digest))
    assert request.state == "auto-rejected" and request.decided_by == "rule no-critical"

    until = date.today() + timedelta(days=30)
    accept = [AcceptedRisk(id=cve, until=until, justification="not reachable") for cve in criticals]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    decide_request(store, request.id, Decision("approve", Reviewer("alice", False), "until 1.4.4", accept), etag, now)

    # A rescan of the digest: the accepted criticals are out of the policy's counts, the approval holds.
    later = _scan(reference, "gate-rescan", "rescan", audits)
    assert later["policy"]["action"] == "approve", later["policy"]
    held, etag = store.get(request.id)
    assert held.state == "approved" and held.latest_audit_id == "gate-rescan"

    # Past its date the acceptance no longer applies: the policy rejects and says so, the approval is revoked.
    expired = [risk.model_copy(update={"until": date.today() - timedelta(days=1)}) for risk in accept]
    store.replace(held.model_copy(update={"accepted": expired}), etag, None, held.state)
    last = _scan(reference, "gate-expired", "rescan", audits)
    assert last["policy"]["action"] == "reject" and "expired" in last["policy"]["reason"], last["policy"]
    revoked, _ = store.get(request.id)
    assert revoked.state == "revoked" and "gate-expired" in revoked.reason
