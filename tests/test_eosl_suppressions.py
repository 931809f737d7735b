"""End-of-life OSes, a stale DB, and suppressions that stay explainable: real
trivy reports, read by the scanner, recorded in meta (Azurite)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ConfigurationError
from scanner_core.heartbeat import build_heartbeat
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image
from tests.support.java_db import build_java_db
from tests.support.java_fixtures import JAR_FILES, JAVA_DB_ROWS, MAVEN_ADVISORIES
from tests.support.trivy_db import build_trivy_db

REQUESTED = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)

IGNORE_YAML = """\
vulnerabilities:
  - id: CVE-2099-0003
    statement: musl iconv is not reachable in this image
  - id: CVE-2099-1001
    expired_at: 2099-01-01
  - id: CVE-2099-0006
    expired_at: 2020-01-01
"""
OPENVEX = {
    "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.invalid/vex/app-1", "author": "app team",
    "timestamp": "2026-11-01T00:00:00Z", "version": 1,
    "statements": [{"vulnerability": {"name": "CVE-2099-1002"},
                    "products": [{"@id": "pkg:maven/com.acme/opaque-lib@1.0.0"}],
                    "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path"}],
}


def scan_tar(path: Path, audit_id: str = "e-1"):
    return Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED, input_tar=path))


def test_an_end_of_life_os_is_named_and_can_fail_the_image(scanner_env, sample_image, tmp_path, audits):
    outcome = scan_tar(sample_image.path)  # Alpine 3.18: past its end of life for trivy 0.76
    meta = audits.json(outcome.meta_path)
    assert meta["os"] == {"family": "alpine", "name": "3.18.4", "eosl": True}
    assert meta["summary"].endswith("vulnerabilities (end-of-life OS)")

    supported = build_alpine_image(tmp_path / "a322.tar", SAMPLE_PACKAGES, alpine_version="3.22.1")
    fresh = audits.json(scan_tar(supported.path, "e-2").meta_path)
    assert fresh["os"] == {"family": "alpine", "name": "3.22.1", "eosl": False}
    assert fresh["summary"] == "PASSED: no vulnerabilities"  # the fixture DB has no 3.22 advisories

    scanner_env.set(TRIVY_FAIL_ON_EOSL="true", TRIVY_CRITICAL_THRESHOLD="99", TRIVY_HIGH_THRESHOLD="99")
    failed = audits.json(scan_tar(sample_image.path, "e-3").meta_path)
    assert (failed["scan-status"], failed["summary"]) == (
        "failed", "FAILED: 1 critical, 2 high, 1 medium, 1 low, 1 unknown vulnerabilities (end-of-life OS)")
    assert scan_tar(supported.path, "e-4").meta.scan_status == "passed"


def test_a_db_past_next_update_is_stale_in_meta_and_heartbeat(scanner_env, sample_image):
    # The session's fixture DB says NextUpdate 2026-11-02: weeks ago.
    assert scan_tar(sample_image.path).meta.trivy_db_stale is True
    assert build_heartbeat(Scanner(load_config())).trivy_db_stale is True
    scanner_env.set(TRIVY_DB_STALE_AFTER_HOURS=str(24 * 365 * 10))
    assert scan_tar(sample_image.path, "e-2").meta.trivy_db_stale is False
    assert build_heartbeat(Scanner(load_config())).trivy_db_stale is False


@pytest.fixture
def jar_tarball(scanner_env, tmp_path) -> Path:
    """An air-gapped cache holding both DBs (placed by hand), and an image with JARs."""
    cache = tmp_path / "cache"
    build_trivy_db(cache, SAMPLE_ADVISORIES, maven_advisories=MAVEN_ADVISORIES)
    build_java_db(cache, JAVA_DB_ROWS)
    scanner_env.set(TRIVY_CACHE_DIR=str(cache))
    return build_alpine_image(tmp_path / "jar.tar", SAMPLE_PACKAGES, extra_files=JAR_FILES).path


def test_suppressed_findings_are_counted_apart_and_their_files_recorded(scanner_env, jar_tarball, tmp_path, audits):
    ignore = tmp_path / ".trivyignore.yaml"
    ignore.write_text(IGNORE_YAML)
    vex = tmp_path / "app.openvex.json"
    vex.write_text(json.dumps(OPENVEX))
    unsuppressed = audits.json(scan_tar(jar_tarball, "s-0").meta_path)
    assert "suppressed" not in unsuppressed and "suppressions" not in unsuppressed
    scanner_env.set(TRIVY_IGNOREFILE=str(ignore), TRIVY_VEX=str(vex))

    outcome = scan_tar(jar_tarball, "s-1")

    meta = audits.json(outcome.meta_path)
    assert unsuppressed["vulnerabilities"] == {"critical": 2, "high": 3, "medium": 1, "low": 1, "unknown": 1, "total": 8}
    # CVE-2099-0003 (high) and CVE-2099-1001 (critical) ignored, CVE-2099-1002 (high) not_affected;
    # CVE-2099-0006's expired_at has passed, so it counts again.
    assert meta["vulnerabilities"] == {"critical": 1, "high": 1, "medium": 1, "low": 1, "unknown": 1, "total": 5}
    assert meta["suppressed"] == {"critical": 1, "high": 2, "medium": 0, "low": 0, "unknown": 0, "total": 3}
    assert meta["suppressions"] == [
        {"setting": "TRIVY_IGNOREFILE", "file": str(ignore), "sha256": hashlib.sha256(ignore.read_bytes()).hexdigest()},
        {"setting": "TRIVY_VEX", "file": str(vex), "sha256": hashlib.sha256(vex.read_bytes()).hexdigest()},
    ]
    assert not {d["VulnerabilityID"] for d in meta["details"]} & {"CVE-2099-0003", "CVE-2099-1001", "CVE-2099-1002"}
    assert meta["summary"].startswith("FAILED: 1 critical, 1 high, 1 medium, 1 low, 1 unknown")
    report = audits.json(meta["trivy-audit-path"])  # the report keeps what was suppressed, and why
    listed = {(m["Finding"]["VulnerabilityID"], m["Status"]) for r in report["Results"]
              for m in r.get("ExperimentalModifiedFindings") or []}
    assert listed == {("CVE-2099-0003", "ignored"), ("CVE-2099-1001", "ignored"), ("CVE-2099-1002", "not_affected")}


def test_a_text_trivyignore_works_too(scanner_env, sample_image, tmp_path, audits):
    ignore = tmp_path / ".trivyignore"
    ignore.write_text("CVE-2099-0001\nCVE-2099-0004 exp:2020-01-01\n")
    scanner_env.set(TRIVY_IGNOREFILE=str(ignore))
    meta = audits.json(scan_tar(sample_image.path).meta_path)
    assert meta["vulnerabilities"]["critical"] == 0 and meta["vulnerabilities"]["high"] == 2
    assert meta["suppressed"]["critical"] == 1 and meta["suppressed"]["total"] == 1


def test_missing_or_broken_suppression_files(scanner_env, sample_image, tmp_path):
    scanner_env.set(TRIVY_IGNOREFILE=str(tmp_path / "nowhere.yaml"), TRIVY_VEX=f"{tmp_path}/a.json,{tmp_path}")
    with pytest.raises(ConfigurationError) as error:
        load_config()
    problems = "\n".join(error.value.problems)
    assert "TRIVY_IGNOREFILE" in problems and "nowhere.yaml" in problems
    assert "TRIVY_VEX" in problems and "a.json" in problems

    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    scanner_env.unset("TRIVY_IGNOREFILE")
    scanner_env.set(TRIVY_VEX=str(broken))
    outcome = scan_tar(sample_image.path)
    assert (outcome.meta.failure_reason, outcome.meta.failure_kind) == ("invalid-suppression-file", "permanent")
    assert "TRIVY_VEX" in outcome.meta.failure_description
