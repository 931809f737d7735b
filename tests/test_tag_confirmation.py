"""Issue 23, item 2: a tag's verdict cannot be pointed at another digest.

A ``repo:tag@digest`` request records the tag only when the registry says the tag points at
that digest; an audit id is re-used only for the same image, and re-using one never deletes
another audit's rows. Real trivy, the registry and Azurite.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import image_verdict, request_scan, security_summary
from scanner_core.monitor import MonitorStore
from tests.support.images import SAMPLE_PACKAGES, build_alpine_image
from tests.test_http_api import answer, error_of, http, make_api, queued

REQUESTED = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def two_tags(registry, sample_image, tmp_path_factory) -> tuple[str, str, str]:
    """``tags/app``: 1.0 (the sample image) and 2.0 (another image): (repository, digest 1.0, digest 2.0)."""
    other = build_alpine_image(tmp_path_factory.mktemp("other") / "other.tar", SAMPLE_PACKAGES[:3])
    one = registry.push_docker_archive(sample_image.path, "tags/app", "1.0")
    two = registry.push_docker_archive(other.path, "tags/app", "2.0")
    assert one != two
    return f"{registry.address}/tags/app", one, two


@pytest.fixture
def env(scanner_env, registry):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}
    ]})
    return scanner_env


def scan(image: str, audit_id: str) -> dict:
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED, image=image))
    assert outcome.succeeded, outcome.meta.failure_description
    return json.loads(outcome.meta.to_json_bytes())


def test_a_tag_the_registry_does_not_confirm_is_not_recorded(env, azurite, two_tags):
    repository, one, two = two_tags
    confirmed = scan(f"{repository}:2.0@{two}", "tag-confirmed")
    assert confirmed["image"] == f"{repository}:2.0@{two}" and "tag-not-confirmed" not in confirmed

    forged = scan(f"{repository}:1.0@{two}", "tag-forged")  # 1.0 points at another digest
    assert forged["image"] == f"{repository}@{two}" and forged["tag-not-confirmed"] == "1.0"
    assert forged["image-digest"] == two
    # Nor does the image's record take the tag, which rescans would label their audits with.
    record = MonitorStore(env.values["AZ_BLOB_STORAGE_SAS"], env.short_id).latest(repository, two)
    assert record is not None and record.tag == "2.0"

    # The verdict of tag 1.0 knows no audit: the forged one is the digest's alone.
    api = make_api(azurite)
    name = repository.replace("/", "%2F")
    verdict = image_verdict(http("GET", "v", route_params={"name": name, "tag": "1.0"}), api)
    assert verdict.status_code == 404, verdict.get_body()
    confirmed_tag = answer(image_verdict(http("GET", "v", route_params={"name": name, "tag": "2.0"}), api), 200)
    assert confirmed_tag["audit-id"] == "tag-confirmed"


def test_an_audit_id_is_reused_only_for_the_same_image(env, azurite, two_tags):
    repository, one, _two = two_tags
    first = scan(f"{repository}:1.0", "reused-id")
    api = make_api(azurite)
    # The same image: re-scanned under the same id, as before.
    answer(request_scan(http("POST", "scans", body={"image": f"{repository}:1.0", "audit-id": "reused-id"}), api), 202)
    # Another image: 409, nothing queued.
    other = http("POST", "scans", body={"image": f"{repository}:2.0", "audit-id": "reused-id"})
    error = error_of(request_scan(other, api), 409)
    assert (error["code"], error["field"]) == ("audit-id-in-use", "audit-id") and "1.0" in error["message"]
    assert len(queued(api)) == 1

    # A message sent to the queue directly (not through the API) re-uses it anyway: the earlier
    # audit keeps its rows in the summary; the id's pointer follows the newer request.
    later = ScanRequest(audit_id="reused-id", requested_at=REQUESTED.replace(hour=13), image=f"{repository}:2.0")
    assert Scanner(load_config()).scan(later).succeeded
    rows = answer(security_summary(http("GET", "s", params={"limit": "1000"}), api), 200)["audits"]
    images = sorted(row["image"] for row in rows if row["audit-id"] == "reused-id")
    assert images == sorted([first["image"], f"{repository}:2.0"])
