"""Multi-platform images and big images: the platform through the queue trigger,
the CLI and the HTTP API, ``platform-not-found``, both digests in meta, the
size check before pulling, and trivy's private scratch dir. Real trivy, the
registry (OCI indexes pushed with ``skopeo copy --all``) and Azurite."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from scanner_core import cli
from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import http_api
from scanner_core.queue import build_message
from scanner_core.trivy import classify_trivy_failure
from tests.support.images import SAMPLE_PACKAGES
from tests.support.oci_images import build_oci_index, push_oci_index
from tests.test_function_app import deliver, folder_of
from tests.test_scan_pipeline import blackhole  # noqa: F401 - a fixture
from tests.test_http_api import error_of, http, make_api, queued, scan_request_of

REQUESTED = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
Pushed = namedtuple("Pushed", "reference layout")


@pytest.fixture(scope="module")
def indexes(registry, tmp_path_factory) -> dict[str, Pushed]:
    root = tmp_path_factory.mktemp("indexes")
    made = {
        "two": ("platforms/two", build_oci_index(root / "two", ["linux/amd64", "linux/arm64"], SAMPLE_PACKAGES)),
        "arm": ("platforms/armonly", build_oci_index(root / "arm", ["linux/arm64"], SAMPLE_PACKAGES)),
        "big": ("platforms/big", build_oci_index(root / "big", ["linux/amd64"], SAMPLE_PACKAGES,
                                                 padding_bytes=3 * 1024 * 1024)),
    }
    for repository, layout in made.values():
        push_oci_index(registry, layout, repository)
    return {name: Pushed(f"{registry.address}/{repo}:{layout.tag}", layout) for name, (repo, layout) in made.items()}


@pytest.fixture
def env(scanner_env, registry):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}
    ]})
    return scanner_env


def scan(image: str, platform: str | None = None, audit_id: str = "p-1"):
    request = ScanRequest(audit_id=audit_id, requested_at=REQUESTED, image=image, platform=platform)
    return Scanner(load_config()).scan(request)


def test_queue_trigger_scans_the_requested_platform_and_records_both_digests(env, indexes, audits):
    two = indexes["two"]
    body = build_message(two.reference, "arm-audit", created_at=1795300000, platform="linux/arm64").to_text()
    assert json.loads(body)["payload"]["platform"] == "linux/arm64"

    assert deliver(body).items == []

    meta = audits.json(f"{folder_of(env, 'arm-audit')}/meta")
    arm = two.layout.platform("linux/arm64")
    assert meta["audit-result"] == "succeeded"
    assert (meta["platform"], meta["image-digest"], meta["platform-digest"]) == (
        "linux/arm64", two.layout.index_digest, arm.manifest_digest)
    assert meta["image-size"] == arm.compressed_size
    assert meta["scan-duration-ms"] > 0
    report = audits.json(meta["trivy-audit-path"])
    purls = {v["PkgIdentifier"]["PURL"] for r in report["Results"] for v in r.get("Vulnerabilities") or []}
    assert purls and all("arch=aarch64" in purl for purl in purls)


def test_without_a_platform_an_index_is_scanned_for_linux_amd64(env, indexes):
    two = indexes["two"]
    outcome = scan(two.reference)
    assert outcome.succeeded, outcome.meta.failure_description
    assert outcome.meta.platform is None
    assert outcome.meta.platform_digest == two.layout.platform("linux/amd64").manifest_digest


def test_a_missing_platform_fails_at_once_naming_what_the_index_offers(env, indexes, audits):
    arm = indexes["arm"]
    outcome = scan(arm.reference)  # the default, linux/amd64, is not there

    assert (outcome.meta.failure_reason, outcome.meta.failure_kind) == ("platform-not-found", "permanent")
    assert "linux/amd64" in outcome.meta.failure_description and "offers: linux/arm64" in outcome.meta.failure_description
    assert audits.json(outcome.meta_path)["failure-reason"] == "platform-not-found"

    env.set(TRIVY_PLATFORM="linux/arm64")  # a default platform for every request
    chosen = scan(arm.reference, audit_id="p-2")
    assert chosen.succeeded and chosen.meta.platform == "linux/arm64"
    s390 = scan(indexes["two"].reference, platform="linux/s390x", audit_id="p-3")
    assert (s390.meta.failure_reason, s390.meta.platform) == ("platform-not-found", "linux/s390x")
    assert "linux/amd64, linux/arm64" in s390.meta.failure_description


def test_an_invalid_platform_is_a_permanent_request_error(env, indexes, audits):
    body = json.loads(build_message(indexes["two"].reference, "bad-platform", created_at=1795300000).to_text())
    body["payload"]["platform"] = "ARM64"
    quarantine = deliver(json.dumps(body))
    assert [item["failure-reason"] for item in quarantine.items] == ["invalid-platform"]
    meta = audits.json(f"{folder_of(env, 'bad-platform')}/meta")
    assert "payload.platform" in meta["failure-description"] and "os/arch[/variant]" in meta["failure-description"]

    env.set(TRIVY_PLATFORM="amd64")
    with pytest.raises(Exception, match="TRIVY_PLATFORM"):
        load_config()


def test_http_api_and_cli_take_a_platform(env, azurite, indexes, audits, capsys):
    api = make_api(azurite)
    response = http_api.request_scan(
        http("POST", "scans", body={"image": indexes["two"].reference, "platform": "linux/arm64"}), api)
    assert response.status_code == 202 and json.loads(response.get_body())["platform"] == "linux/arm64"
    (message,) = queued(api)
    assert scan_request_of(message).platform == "linux/arm64"
    bad = http_api.request_scan(http("POST", "scans", body={"image": indexes["two"].reference, "platform": "x"}), api)
    assert error_of(bad, 400)["field"] == "platform"
    by_path = http_api.request_scan_by_path(http(
        "POST", "images/x/1.0/scan", route_params={"name": quote("team/app", safe=""), "tag": "1.0"},
        params={"platform": "linux/arm/v7"}), api)
    assert by_path.status_code == 202
    assert [scan_request_of(m).platform for m in queued(api)] == ["linux/arm/v7"]  # the first one is being received

    assert cli.main(["scan", indexes["arm"].reference, "--platform", "linux/arm64", "--audit-id", "cli-arm"]) == 0
    assert "platform: linux/arm64" in capsys.readouterr().out
    assert cli.main(["scan", indexes["arm"].reference, "--platform", "linux", "--audit-id", "cli-bad"]) == 1
    assert "--platform" in capsys.readouterr().err

    env.set(SCAN_QUEUE_CONNECTION="QUEUE_CONN", QUEUE_CONN=azurite.connection_string, SCAN_QUEUE_NAME=api.queue_name)
    assert cli.main(["enqueue", indexes["two"].reference, "--platform", "linux/arm64", "--audit-id", "q-arm"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["payload"]["platform"] == "linux/arm64"


def test_an_image_larger_than_max_image_size_fails_before_pulling(env, indexes):
    big = indexes["big"]
    env.set(MAX_IMAGE_SIZE_MB="2")
    outcome = scan(big.reference)
    assert (outcome.meta.failure_reason, outcome.meta.failure_kind) == ("image-too-large", "permanent")
    size = big.layout.platform("linux/amd64").compressed_size
    assert f"({size} bytes)" in outcome.meta.failure_description
    assert "MAX_IMAGE_SIZE_MB=2 MiB" in outcome.meta.failure_description
    assert outcome.meta.image_size == size

    env.set(MAX_IMAGE_SIZE_MB="4")
    assert scan(big.reference, audit_id="big-ok").succeeded


def test_an_image_larger_than_the_free_scratch_space_fails(env, indexes, monkeypatch, tmp_path):
    # The one stand-in: a filesystem with less free space than a 3 MiB image is not available to tests.
    scratch = tmp_path / "scratch"
    env.set(SCAN_SCRATCH_DIR=str(scratch))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1024 * 1024))
    outcome = scan(indexes["big"].reference)
    assert outcome.meta.failure_reason == "image-too-large"
    assert "1.0 MiB (1048576 bytes) free in the scratch dir" in outcome.meta.failure_description


def test_trivy_runs_in_a_private_scratch_dir_that_is_removed(env, indexes, tmp_path):
    scratch = tmp_path / "scratch"
    env.set(SCAN_SCRATCH_DIR=str(scratch))
    seen: list[str] = []
    from scanner_core.trivy import runner

    original = runner.run_with_deadline

    def spy(command, child_env, stderr, cwd, timeout_ms):
        seen.append(child_env["TMPDIR"])
        return original(command, child_env, stderr, cwd, timeout_ms)

    runner.run_with_deadline = spy
    try:
        assert scan(indexes["two"].reference).succeeded
    finally:
        runner.run_with_deadline = original
    assert seen and all(Path(tmp).parent == scratch for tmp in seen)
    assert list(scratch.iterdir()) == []


def test_no_space_left_is_disk_full_and_transient():
    stderr = ("2026-11-23T00:00:00Z\tFATAL\tFatal error\trun error: image scan error: failed to analyze layer: "
              "write /tmp/scratch/trivy-run-x/fanal-123: no space left on device\n")
    failure = classify_trivy_failure(1, stderr)
    assert (failure.reason, failure.kind.value) == ("disk-full", "transient")


def test_the_scratch_dir_is_emptied_after_a_timeout_kill(env, blackhole, tmp_path):  # noqa: F811
    scratch = tmp_path / "scratch"
    env.set(SCAN_SCRATCH_DIR=str(scratch), TRIVY_TIMEOUT="1500")
    env.write_config({"registries": [{"address": blackhole, "insecure": True}]})
    outcome = scan(f"{blackhole}/team/app:1.0")
    assert outcome.meta.failure_reason == "timeout"
    assert list(scratch.iterdir()) == []
