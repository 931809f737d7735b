"""Issue 23, item 1: an approval is per platform manifest, and an image index is allowed only
when every platform it offers is. Real trivy, the registry (an OCI index pushed with skopeo
whose arm64 image has a critical finding and whose amd64 image has none) and Azurite."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import approve, image_verdict
from scanner_core.monitor import MonitorStore
from tests.support.images import SAMPLE_PACKAGES
from tests.support.oci_images import build_oci_index, push_oci_index
from tests.test_approvals import decide
from tests.test_http_api import answer, http, make_api

REPOSITORY = "platforms/gate"
POLICY = "default: approve\nrules:\n  - {id: no-critical, action: reject, severity: {critical: '> 0'}}\n"


@pytest.fixture(scope="module")
def index(registry, tmp_path_factory):
    """amd64 without busybox (no critical finding), arm64 with it (CVE-2099-0001, critical)."""
    clean = tuple(p for p in SAMPLE_PACKAGES if p.name != "busybox")
    layout = build_oci_index(tmp_path_factory.mktemp("gate") / "index", ["linux/amd64", "linux/arm64"],
                             {"linux/amd64": clean, "linux/arm64": SAMPLE_PACKAGES})  # fmt: skip
    push_oci_index(registry, layout, REPOSITORY)
    return layout


@pytest.fixture
def env(scanner_env, registry, tmp_path):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}
    ]})
    (policy := tmp_path / "policy.yaml").write_text(POLICY)
    scanner_env.set(POLICY_PATH=str(policy))
    return scanner_env


def scan(image: str, audit_id: str, platform: str | None = None, hour: int = 12):
    requested = datetime(2026, 11, 22, hour, 0, tzinfo=timezone.utc)
    request = ScanRequest(audit_id=audit_id, requested_at=requested, image=image, platform=platform, trigger="request")
    outcome = Scanner(load_config()).scan(request)
    assert outcome.succeeded, outcome.meta.failure_description
    return outcome.meta


def verdict(api, registry, digest: str) -> dict:
    name = f"{registry.address}/{REPOSITORY}".replace("/", "%2F")
    return answer(image_verdict(http("GET", "v", route_params={"name": name}, params={"digest": digest}), api), 200)


def test_an_index_is_allowed_only_when_every_platform_is_approved(env, azurite, registry, index):
    amd64, arm64 = index.platform("linux/amd64").manifest_digest, index.platform("linux/arm64").manifest_digest
    reference = f"{registry.address}/{REPOSITORY}@{index.index_digest}"
    api = make_api(azurite)

    # The requester picks the clean platform of the index: its manifest is auto-approved, the index is not.
    first = scan(reference, "gate-amd64", platform="linux/amd64")
    assert (first.image_digest, first.platform_digest) == (index.index_digest, amd64)
    assert first.index_manifests == {amd64: "linux/amd64", arm64: "linux/arm64"}
    by_index = verdict(api, registry, index.index_digest)
    assert by_index["allowed"] is False and by_index["approval"]["state"] == "auto-approved"
    assert {p["platform"]: (p["approval"], p["allowed"]) for p in by_index["platforms"]} == {
        "linux/amd64": ("auto-approved", True), "linux/arm64": (None, False)}
    assert verdict(api, registry, amd64)["allowed"] is True  # a node that pulls amd64 by its manifest

    # The other platform, scanned later, gets its own request; it does not rewrite amd64's.
    second = scan(reference, "gate-arm64", platform="linux/arm64", hour=13)
    assert second.platform_digest == arm64 and second.vulnerabilities["critical"] >= 1
    by_index = verdict(api, registry, index.index_digest)
    assert by_index["allowed"] is False
    assert {p["platform"]: p["approval"] for p in by_index["platforms"]} == {
        "linux/amd64": "auto-approved", "linux/arm64": "auto-rejected"}
    assert verdict(api, registry, amd64)["allowed"] is True
    assert verdict(api, registry, arm64)["allowed"] is False

    # A reviewer approves arm64 too (accepting its status): now every platform is, and so the index.
    arm_request = verdict(api, registry, arm64)["approval"]
    status, decided, _ = decide(approve, api, arm_request["id"], arm_request["etag"],
                                {"reason": "the finding is not reachable in this image", "reviewer": "alice"})
    assert status == 200, decided
    assert decided["platform"] == "linux/arm64" and decided["index-digest"] == index.index_digest
    assert verdict(api, registry, index.index_digest)["allowed"] is True

    # Rescans follow each platform's manifest: the index's own record serves dedup only.
    store = MonitorStore(env.values["AZ_BLOB_STORAGE_SAS"], env.short_id)
    records = {record.digest: record for record in store.images()}
    assert {amd64, arm64, index.index_digest} <= set(records)
    assert records[index.index_digest].is_index and not records[amd64].is_index
    assert records[amd64].tag is None and records[amd64].inventory is not None


def test_every_pullable_entry_counts_and_none_can_forge_another():
    """A duplicated platform, an entry without one (a runtime may still pull it) and a digest
    carrying the row encoding's separators (issue 23 review)."""
    from scanner_core.registry.platform import pullable_entries
    from scanner_core.storage import AuditRow

    a, b, c, d = ("sha256:" + ch * 64 for ch in "abcd")
    offered = [("linux/amd64", a), ("linux/amd64", b), ("", c), ("unknown/unknown", d)]
    assert pullable_entries(offered) == {a: "linux/amd64", b: "linux/amd64", c: ""}
    with pytest.raises(ValueError, match="not a manifest digest"):
        pullable_entries([("linux/zzz", f"{a};linux/arm64={a}")])
    with pytest.raises(ValueError, match="more than 32"):
        pullable_entries([("linux/amd64", "sha256:" + f"{n:064x}") for n in range(33)])

    row = AuditRow("x", "trivy-x/f", 1, "succeeded", digest=d, platform_digest=a, platforms={a: "linux/a;b=c", c: ""})
    assert AuditRow.from_metadata("r", row.to_metadata()).approval_digests == {a: "linux/a;b=c", c: ""}
