"""Issue 24, item 1: the current state of every image in Azure Table Storage, against
Azurite's real Table service (the OAuth one for the identity path), real trivy and the
registry for the scans that write it."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timezone

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import fleet_images, image_verdict
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.storage import (
    ORDERS,
    FleetState,
    digest_row,
    fleet_state_of,
    fleet_table,
    forget_tables,
    resolve_account_connection,
    table_key,
    tag_row,
)
from tests.support.azurite import Azurite
from tests.test_http_api import answer, http, make_api
from tests.test_identity_doubles import identity_env  # noqa: F401 - the managed identity double

DIGEST = "sha256:" + "ab" * 32
HOSTILE_REPOSITORY = "registry.example:5000/team-1/a.b__c/very/deep/path-x"  # `/`, `:` and `_` in one key


def meta(audit_id: str, requested_at: int, *, image: str = f"{HOSTILE_REPOSITORY}:1.0", critical: int = 0,
         result: AuditResult = AuditResult.SUCCEEDED) -> AuditMeta:
    succeeded = result is AuditResult.SUCCEEDED
    return AuditMeta(
        audit_id=audit_id, scanner_id="s", scanner_version="t", timestamp=requested_at + 5, requested_at=requested_at,
        audit_result=result, image=image, image_digest=DIGEST,
        scan_status=("failed" if critical else "passed") if succeeded else None,
        vulnerabilities={"critical": critical, "high": 0, "medium": 0, "low": 0, "unknown": 0, "total": critical}
        if succeeded else None,
        failure_reason=None if succeeded else "timeout",
    )


def fresh_state(connection_string: str) -> FleetState:
    connection = resolve_account_connection("FleetStateTest", {"FleetStateTest": connection_string})
    return FleetState(fleet_table(connection, f"t{uuid.uuid4().hex[:16]}"))


def test_an_older_audit_recorded_later_never_replaces_the_newer_state(azurite: Azurite):
    state = fresh_state(azurite.connection_string)
    assert state.record(meta("newer", 2_000, critical=3), "trivy-x/2000-newer")
    assert not state.record(meta("older", 1_000), "trivy-x/1000-older")  # out of order: ignored
    for found in (state.get(HOSTILE_REPOSITORY, "1.0"), state.get(HOSTILE_REPOSITORY, digest=DIGEST)):
        assert found is not None and (found.audit_id, found.critical, found.last_status) == ("newer", 3, "failed")
    # A newer audit that failed is the latest audit; the findings stay the last success's.
    assert state.record(meta("failed", 3_000, result=AuditResult.AUDIT_FAILED), "trivy-x/3000-failed")
    found = state.get(HOSTILE_REPOSITORY, "1.0", DIGEST)
    assert found is not None
    assert (found.audit_id, found.audit_result, found.failure_reason) == ("failed", "audit-failed", "timeout")
    assert (found.last_succeeded_audit_id, found.critical) == ("newer", 3)
    entity = state.table.get_entity(table_key(HOSTILE_REPOSITORY), tag_row("1.0"))
    assert "/" not in entity["PartitionKey"] and entity["RowKey"] == "t:1.0"
    # Past 2038 (unix seconds beyond 2**31): times are Int64 in the table.
    assert state.record(meta("2040", 2**31 + 100_000_000), "trivy-x/2040")
    assert state.get(HOSTILE_REPOSITORY, "1.0").requested_at == 2**31 + 100_000_000


def test_concurrent_writers_leave_the_newest_request(azurite: Azurite):
    """Eight audits of one image recorded at once: the ETag makes the losers re-read."""
    state = fresh_state(azurite.connection_string)
    times = [1_000 + 7 * n for n in (3, 7, 1, 6, 0, 5, 2, 4)]
    threads = [threading.Thread(target=state.record, args=(meta(f"a{t}", t, critical=t % 5), f"trivy-x/{t}"))
               for t in times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    newest = max(times)
    for key in (tag_row("1.0"), digest_row(DIGEST)):
        entity = state.table.get_entity(table_key(HOSTILE_REPOSITORY), key)
        assert (entity["audit_id"], entity["critical"]) == (f"a{newest}", newest % 5)


def test_the_state_is_written_through_the_identity(identity_env, oauth_azurite: Azurite,
                                                   monkeypatch: pytest.MonkeyPatch):
    """``<setting>__tableServiceUri`` and a managed identity's bearer token: no secret at all."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth_azurite.ca_bundle))
    forget_tables()
    connection = resolve_account_connection("Fleet", {"Fleet__tableServiceUri": oauth_azurite.table_endpoint,
                                                      "Fleet__credential": "managedidentity"})
    assert connection.uses_identity and not connection.secrets
    state = FleetState(fleet_table(connection, "fleetoauth"), 0)
    state.record(meta("by-identity", 5_000, critical=1), "trivy-x/5000-by-identity")
    found = state.get(HOSTILE_REPOSITORY, "1.0")
    assert found is not None and found.audit_id == "by-identity"


def test_a_scan_writes_the_state_and_the_verdict_reads_it(scanner_env, azurite, registry, pushed_sample):
    """A real scan's state; the verdict answers from it, and the approval hook keeps it in step."""
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}]})
    requested = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id="fleet-1", requested_at=requested,
                                                      image=pushed_sample.reference, trigger="request"))
    assert outcome.succeeded, outcome.meta.failure_description
    settings = load_config().settings
    state = fleet_state_of(settings).get(outcome.meta.image.rsplit(":", 1)[0], digest=pushed_sample.digest)
    assert state is not None and state.audit_id == "fleet-1" and state.total == outcome.meta.vulnerabilities["total"]
    api = make_api(azurite)
    repository = state.repository
    verdict = answer(image_verdict(http("GET", "v", route_params={
        "name": repository.replace("/", "%2F"), "tag": state.tag}), api), 200)
    assert (verdict["audit-id"], verdict["scan-status"]) == ("fleet-1", outcome.meta.scan_status)
    assert verdict["vulnerabilities"] == outcome.meta.vulnerabilities
    # The image's approval request (created after the meta) is copied to the digest's state.
    approval = verdict["approval"]
    assert approval is not None and approval["state"] in ("pending", "approved", "rejected")
    found = fleet_state_of(settings).get(repository, digest=pushed_sample.digest)
    assert (found.approval_state, found.approval_id) == (approval["state"], approval["id"])
    # The scan wrote its rows in the sorted pages too (after the state), approval included.
    for order in ORDERS:
        page = answer(fleet_images(http("GET", "images", params={"sort": order}), api), 200)
        assert [(i["audit-id"], i["approval"]) for i in page["images"]] == [("fleet-1", approval["state"])], order
    # Nothing of the connection string reaches the table.
    entity = json.dumps(fleet_state_of(settings).table.get_entity(table_key(repository), tag_row(state.tag)))
    assert "AccountKey" not in entity and azurite.connection_string not in entity


def test_a_state_that_cannot_be_written_never_loses_the_audit(scanner_env, azurite, sample_image, caplog):
    """The tables refuse (a wrong account key: 403): the audit is stored, the failure logged, no secret."""
    wrong = azurite.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    scanner_env.set(FleetBroken=wrong, FLEET_TABLES_CONNECTION="FleetBroken")
    forget_tables()
    requested = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id="kept", requested_at=requested,
                                                      input_tar=sample_image.path, image="registry.example/a/b:1"))
    assert outcome.succeeded and outcome.meta_written
    assert "fleet state not updated" in caplog.text and "reindex" in caplog.text
    assert wrong.split("AccountKey=")[1].split(";")[0] not in caplog.text


def test_an_ask_within_the_day_costs_no_request_and_an_older_one_is_recorded(azurite: Azurite):
    """The verdict's hot path: ``get`` already read the entity, so a fresh ask needs no second read."""
    state = fresh_state(azurite.connection_string)
    now = 1_800_000_000
    assert state.record(meta("fresh", now - 3_600), "trivy-x/fresh")
    known = state.get(HOSTILE_REPOSITORY, "1.0")
    FleetState(table=None).asked(HOSTILE_REPOSITORY, "1.0", None, at=now, known=known)  # would fail on any request
    assert state.get(HOSTILE_REPOSITORY, "1.0").asked_at is None
    later = now + 2 * 86_400  # seen more than a day ago: recorded
    state.asked(HOSTILE_REPOSITORY, "1.0", None, at=later, known=state.get(HOSTILE_REPOSITORY, "1.0"))
    assert state.get(HOSTILE_REPOSITORY, "1.0").asked_at == later
