"""The core end to end: real trivy, real Azurite, a real private registry."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scanner_core.audit import AuditOutcome, ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import FailureKind, RequestError
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, expected_findings

REQUESTED_AT = datetime(2026, 11, 22, 10, 30, 5, tzinfo=timezone.utc)


def scan(**request: object) -> AuditOutcome:
    request.setdefault("audit_id", "audit-1")
    request.setdefault("requested_at", REQUESTED_AT)
    final_attempt = bool(request.pop("final_attempt", True))
    return Scanner(load_config()).scan(ScanRequest(**request), final_attempt=final_attempt)  # type: ignore[arg-type]


def reported_findings(report: dict) -> set[tuple[str, str, str, str, str]]:
    return {
        (v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v.get("FixedVersion", ""), v["Severity"])
        for result in report.get("Results", [])
        for v in result.get("Vulnerabilities") or []
    }


EXPECTED = {tuple(f) for f in expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES)}


def test_tarball_scan_ships_report_then_meta(scanner_env, sample_image, audits):
    outcome = scan(input_tar=sample_image.path)

    assert outcome.succeeded, outcome.failure
    folder = f"trivy-{scanner_env.short_id}/20261122-103005-audit-1"
    assert outcome.folder == folder
    assert audits.names() == [f"{folder}/meta", f"{folder}/scan-result.json"]

    report = audits.json(f"{folder}/scan-result.json")
    assert reported_findings(report) == EXPECTED
    assert report["Metadata"]["OS"] == {"Family": "alpine", "Name": "3.18.4", "EOSL": True}

    meta = audits.json(f"{folder}/meta")
    assert meta["audit-id"] == "audit-1"
    assert meta["scanner-type"] == "trivy"
    assert meta["scanner-id"] == scanner_env.scanner_id
    assert meta["scanner-periodicity"] == "on-message"
    assert meta["audit-result"] == "succeeded"
    assert "failure-description" not in meta
    assert meta["trivy-version"] == "0.76.0"
    assert meta["trivy-audit-path"] == f"{folder}/scan-result.json"
    assert meta["image"] == "sample/app:1.0"  # read from the tarball's manifest
    assert meta["image-id"] == sample_image.config_digest
    assert meta["trivy-db-updated-at"] == "2026-11-01T00:00:00Z"
    assert meta["requested-at"] == int(REQUESTED_AT.timestamp())
    assert abs(meta["timestamp"] - time.time()) < 120


def test_report_blob_is_trivys_output_byte_for_byte(scanner_env, sample_image, audits, trivy_executable, tmp_path):
    """The uploaded report is the file trivy wrote, unchanged: compare with a bare run."""
    outcome = scan(input_tar=sample_image.path)
    uploaded = audits.read(outcome.meta.trivy_audit_path)

    bare = tmp_path / "bare.json"
    import shutil
    import subprocess

    cache = tmp_path / "bare-cache"  # a bare run writes trivy's layer cache: keep it off the shared one
    shutil.copytree(scanner_env.values["TRIVY_CACHE_DIR"], cache)

    subprocess.run(
        [str(trivy_executable), "image", "--format", "json", "--output", str(bare), "--cache-dir",
         str(cache), "--skip-db-update", "--offline-scan", "--no-progress",
         "--skip-version-check", "--disable-telemetry", "--input", str(sample_image.path)],
        check=True, capture_output=True, env={"PATH": os.defpath, "HOME": str(tmp_path)},
    )
    # Only the creation time and the tarball's path (ArtifactName) may differ between two runs.
    normalise = lambda doc: {k: v for k, v in doc.items() if k not in ("CreatedAt", "ArtifactName", "ReportID")}  # noqa: E731
    assert normalise(json.loads(uploaded)) == normalise(json.loads(bare.read_bytes()))
    assert uploaded.endswith(b"\n") == bare.read_bytes().endswith(b"\n")


def test_redelivered_request_writes_the_same_folder(scanner_env, sample_image, audits):
    first = scan(input_tar=sample_image.path, image="registry.example.com/team/app:1.0")
    second = scan(input_tar=sample_image.path, image="registry.example.com/team/app:1.0")
    assert first.folder == second.folder
    assert audits.names() == [f"{first.folder}/meta", f"{first.folder}/scan-result.json"]
    assert audits.json(f"{first.folder}/meta")["image"] == "registry.example.com/team/app:1.0"


def test_registry_scan_with_configured_credentials(scanner_env, registry, pushed_sample, audits):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    outcome = scan(image=pushed_sample.reference)

    assert outcome.succeeded, outcome.failure
    meta = audits.json(outcome.meta_path)
    assert meta["image"] == pushed_sample.reference
    assert meta["image-digest"] == pushed_sample.digest
    assert reported_findings(audits.json(meta["trivy-audit-path"])) == EXPECTED
    assert registry.password.encode() not in audits.everything()


@pytest.mark.parametrize("password", ["wrong-password", None])
def test_wrong_or_missing_credentials_are_a_permanent_unauthorized(
    scanner_env, registry, pushed_sample, audits, password, caplog
):
    entry = {"address": registry.address, "insecure": True}
    if password:
        entry |= {"username": registry.username, "password": password}
    scanner_env.write_config({"registries": [entry]})
    caplog.set_level(logging.DEBUG)

    outcome = scan(image=pushed_sample.reference)

    assert not outcome.succeeded
    assert outcome.failure.kind is FailureKind.PERMANENT
    meta = audits.json(outcome.meta_path)
    assert meta["audit-result"] == "audit-failed"
    assert meta["failure-reason"] == "unauthorized"
    assert meta["failure-kind"] == "permanent"
    assert "unauthorized" in meta["failure-description"]
    assert audits.names() == [outcome.meta_path]  # no report for a failed audit
    if password:
        assert password not in json.dumps(meta) and password not in caplog.text


def test_missing_tag_is_a_permanent_not_found(scanner_env, registry, pushed_sample, audits):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    outcome = scan(image=f"{registry.address}/team/app:no-such-tag")
    assert outcome.failure.kind is FailureKind.PERMANENT
    assert audits.json(outcome.meta_path)["failure-reason"] == "not-found"


def test_unreachable_registry_is_transient_and_meta_waits_for_the_last_attempt(scanner_env, audits):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens there
    scanner_env.write_config({"registries": [{"address": address, "insecure": True}]})

    early = scan(image=f"{address}/team/app:1.0", final_attempt=False)
    assert early.failure.kind is FailureKind.TRANSIENT and early.retry_may_help
    assert early.meta.failure_reason == "registry-unreachable"
    assert not early.meta_written and audits.names() == []

    last = scan(image=f"{address}/team/app:1.0", final_attempt=True)
    assert last.meta_written
    meta = audits.json(last.meta_path)
    assert (meta["audit-result"], meta["failure-kind"]) == ("audit-failed", "transient")
    assert "could not be reached" in meta["failure-description"]


@pytest.mark.parametrize("reference", ["--help", "Team/App:1.0", "app:bad tag", "app@sha256:123"])
def test_invalid_reference_fails_permanently_before_trivy(scanner_env, audits, reference):
    scanner_env.set(TRIVY_PATH="/nonexistent/trivy")  # proves trivy is never started for these
    outcome = scan(image=reference)
    assert outcome.failure.kind is FailureKind.PERMANENT
    meta = audits.json(outcome.meta_path)
    assert meta["failure-reason"] == "invalid-image"
    assert meta["failure-description"].startswith("image: ")


def test_unusable_audit_id_is_refused_before_anything_is_written(scanner_env, sample_image, audits):
    with pytest.raises(RequestError, match="audit-id: '../x' is not a valid audit id"):
        scan(input_tar=sample_image.path, audit_id="../x")
    assert audits.names() == []


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers: trivy hangs on it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_trivy_timeout_is_transient_and_leaves_no_process(scanner_env, audits, blackhole, tmp_path):
    marker_cache = tmp_path / "timeout-cache"
    import shutil

    shutil.copytree(scanner_env.values["TRIVY_CACHE_DIR"], marker_cache)
    scanner_env.set(TRIVY_TIMEOUT="1500", TRIVY_CACHE_DIR=str(marker_cache))
    scanner_env.write_config({"registries": [{"address": blackhole, "insecure": True}]})

    started = time.monotonic()
    outcome = scan(image=f"{blackhole}/team/app:1.0")
    elapsed = time.monotonic() - started

    assert outcome.failure.kind is FailureKind.TRANSIENT
    assert outcome.meta.failure_reason == "timeout"
    assert elapsed < 15
    assert _processes_mentioning(str(marker_cache)) == []


def test_wrapper_kills_a_trivy_that_ignores_its_own_timeout(scanner_env, audits, tmp_path):
    """A fake trivy, because the real one cannot be made to ignore SIGTERM and its own
    --timeout: it traps TERM and leaves a grandchild behind. Both must be gone."""
    fake = tmp_path / "stubborn-trivy"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo \'{"Version":"0.0.0-fake"}\'; exit 0; fi\n'
        "trap '' TERM\n"
        "sleep 3217 & sleep 3218\n"
    )
    fake.chmod(0o755)
    scanner_env.set(TRIVY_PATH=str(fake), TRIVY_TIMEOUT="1000")

    outcome = scan(image="registry.example.com/team/app:1.0")

    assert outcome.meta.failure_reason == "timeout"
    assert "TRIVY_TIMEOUT=1000 ms" in outcome.meta.failure_description
    assert _processes_mentioning("sleep\x003217") == []  # the grandchild
    assert _processes_mentioning("sleep\x003218") == []
