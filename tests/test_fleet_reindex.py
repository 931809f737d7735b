"""Issue 24, item 5: ``python -m scanner_core reindex`` on a deployment that has only its
metas (no index, no fleet state: an upgrade in place) rebuilds the same answers, and
running it again changes nothing. Real trivy, the registry, Azurite (blob and table)."""

from __future__ import annotations

from datetime import datetime, timezone

from scanner_core.audit import ScanRequest
from scanner_core.cli import main
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import image_verdict, vulnerability_images
from scanner_core.storage import fleet_state_of
from tests.test_http_api import answer, http, make_api


def verdict_of(azurite, repository: str, tag: str) -> dict:
    document = answer(image_verdict(http("GET", "v", route_params={"name": repository.replace("/", "%2F"),
                                                                  "tag": tag}), make_api(azurite)), 200)
    document.pop("approval", None)  # its etag is the request's version, not the verdict's
    return document


def images_with(azurite, vulnerability_id: str) -> list[dict]:
    """The answer without ``since``/``since-audit``: reindex replays the metas 16 at a time, so
    "since which audit" is the first of the image's audits the pass happened to write."""
    images = answer(vulnerability_images(http("GET", "v", route_params={"id": vulnerability_id}),
                                         make_api(azurite)), 200)["images"]
    return [{k: v for k, v in image.items() if k not in ("since", "since-audit")} for image in images]


def test_reindex_rebuilds_the_state_from_metas_alone(scanner_env, azurite, audits, registry, pushed_sample, capsys):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}]})
    for audit_id, hour in (("older", 8), ("newer", 9)):
        requested = datetime(2026, 12, 2, hour, 0, tzinfo=timezone.utc)
        outcome = Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=requested,
                                                          image=pushed_sample.reference, trigger="request"))
        assert outcome.succeeded, outcome.meta.failure_description
    repository, tag = pushed_sample.reference.rsplit(":", 1)
    before = verdict_of(azurite, repository, tag)
    assert before["audit-id"] == "newer"
    affected = images_with(azurite, "CVE-2099-0001")  # the sample's busybox advisory (tests/support/images.py)
    assert [image["tag"] for image in affected] == [tag]

    # An upgrade in place: no audit index, and a fresh (empty) state table (the approvals stay).
    for blob in audits.all_names():
        if blob.split("/")[1] == "index":
            audits.client.delete_blob(blob)
    scanner_env.set(FLEET_TABLE_PREFIX="upgraded")
    assert images_with(azurite, "CVE-2099-0001") == []  # the query tables are named per prefix too: fresh, empty
    assert fleet_state_of(load_config().settings).get(repository, tag) is None
    capsys.readouterr()

    assert main(["reindex"]) == 0
    printed = capsys.readouterr().out
    assert "reindexed 2 audits" in printed and "approval states copied" in printed, printed
    after = verdict_of(azurite, repository, tag)
    assert after == before
    assert images_with(azurite, "CVE-2099-0001") == affected  # the query tables rebuilt from the stored report
    state = fleet_state_of(load_config().settings).get(repository, tag)
    # the approval copied over too, with when it last changed (the daily digest's "last 24 h")
    assert state is not None and state.approval_state is not None and state.approval_changed_at, printed

    assert main(["reindex"]) == 0  # idempotent: the same answers again
    assert verdict_of(azurite, repository, tag) == before
