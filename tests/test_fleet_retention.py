"""Issue 24, item 4: ``AUDIT_RETENTION_DAYS`` tags for the lifecycle rule only the audits no
image's current state names, so the rule (applied here as the documented policy says: delete
blobs tagged ``trivy-retention=expired``) never breaks a verdict. Real Azurite (blob tags, tables)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from azure.storage.blob import ContainerClient

from scanner_core.cli import main
from scanner_core.config import load_config
from scanner_core.functions import get_audit, image_verdict
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.storage import EXPIRED, RETENTION_TAG, AuditIndex, audit_folder, fleet_state_of
from tests.test_http_api import answer, http, make_api

DAY = 86_400
REPO = "registry.example/team/app"


def record(audits, short_id: str, audit_id: str, image: str, days_ago: float) -> str:
    requested = int(time.time() - days_ago * DAY)
    folder = audit_folder(short_id, datetime.fromtimestamp(requested, timezone.utc), audit_id)
    meta = AuditMeta(audit_id=audit_id, scanner_id="s", scanner_version="t", timestamp=requested + 1,
                     requested_at=requested, audit_result=AuditResult.SUCCEEDED, image=image,
                     image_digest="sha256:" + image[-3:].replace(".", "f").rjust(64, "0"), scan_status="passed",
                     vulnerabilities=dict.fromkeys(("critical", "high", "medium", "low", "unknown", "total"), 0),
                     trivy_audit_path=f"{folder}/scan-result.json")
    audits.client.upload_blob(f"{folder}/scan-result.json", b"{}", overwrite=True)
    audits.client.upload_blob(f"{folder}/meta", meta.to_json_bytes(), overwrite=True)
    settings = load_config().settings
    AuditIndex(settings.blob_container_url, short_id).record(meta, folder)
    fleet_state_of(settings).record(meta, folder)
    return folder


def test_expired_audits_are_tagged_and_the_latest_survive_the_rule(scanner_env, azurite, audits, capsys):
    short_id = scanner_env.short_id
    folders = {
        "x-old": record(audits, short_id, "x-old", f"{REPO}:1.0", 60),  # superseded by x-new: expires
        "x-new": record(audits, short_id, "x-new", f"{REPO}:1.0", 50),  # older than the retention, but latest
        "y-only": record(audits, short_id, "y-only", f"{REPO}:2.0", 70),  # the only audit of 2.0
        "z-recent": record(audits, short_id, "z-recent", f"{REPO}:1.0", 1),  # 1.0's latest now: x-new expires too
        "w-gone": record(audits, short_id, "w-gone", f"{REPO}:3.0", 100),  # left the fleet (TTL 90 days)
    }
    # Tagging needs the SAS's 't' permission (docs/operations.md#retention).
    tagging = azurite.container_sas_url(audits.name, permissions="racwdlt")
    scanner_env.set(AUDIT_RETENTION_DAYS="30", FLEET_IMAGE_TTL_DAYS="90", AZ_BLOB_STORAGE_SAS=tagging)
    capsys.readouterr()
    assert main(["expire"]) == 0
    assert "3 of 5 audit folders tagged" in capsys.readouterr().out

    with ContainerClient.from_container_url(tagging) as client:
        tagged = {name: client.get_blob_client(name).get_blob_tags() for name in audits.names()}
    expired = {name.split("/")[1] for name, tags in tagged.items() if tags.get(RETENTION_TAG) == EXPIRED}
    assert expired == {folders[a].split("/")[1] for a in ("x-old", "x-new", "w-gone")}

    # The lifecycle rule, as docs/operations.md#retention writes it: blobs tagged expired are deleted.
    for name, tags in tagged.items():
        if tags.get(RETENTION_TAG) == EXPIRED:
            audits.client.delete_blob(name)
    api = make_api(azurite)
    name = REPO.replace("/", "%2F")
    for tag, audit_id in (("1.0", "z-recent"), ("2.0", "y-only")):
        verdict = answer(image_verdict(http("GET", "v", route_params={"name": name, "tag": tag}), api), 200)
        assert verdict["audit-id"] == audit_id
        assert answer(get_audit(http("GET", "a", route_params={"audit_id": audit_id}), api), 200)["audit-id"] == audit_id
    # The expired audits left the index with their folders: a 404, not a link to nothing.
    assert get_audit(http("GET", "a", route_params={"audit_id": "x-old"}), api).status_code == 404
