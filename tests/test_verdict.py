"""Counts, status, summary and details, from real trivy reports of the fixture."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.trivy import SEVERITIES
from scanner_core.verdict import ScanStatus, Thresholds, VulnerabilityCounts, decide_status, summary_line
from tests.support.images import (
    SAMPLE_ADVISORIES,
    SAMPLE_PACKAGES,
    build_alpine_image,
    expected_findings,
    large_fixture,
)
from tests.support.trivy_db import build_trivy_db

REQUESTED_AT = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)


def scan_sample(scanner_env, tarball, audit_id="verdict"):
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED_AT, input_tar=tarball))
    assert outcome.succeeded, outcome.failure
    return outcome


def test_counts_equal_a_hand_count_of_the_fixture(scanner_env, sample_image, audits):
    outcome = scan_sample(scanner_env, sample_image.path)
    hand = Counter(f.severity.lower() for f in expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES))
    meta = audits.json(outcome.meta_path)
    assert meta["vulnerabilities"] == {**{s.lower(): hand.get(s.lower(), 0) for s in SEVERITIES}, "total": 6}
    # ... and a reader reproduces them from scan-result.json with the documented rule.
    report = audits.json(meta["trivy-audit-path"])
    from_report = Counter(v["Severity"].lower() for r in report["Results"] for v in r.get("Vulnerabilities") or [])
    assert {k: v for k, v in meta["vulnerabilities"].items() if k != "total" and v} == dict(from_report)
    # 1 critical > threshold 0
    assert (meta["scan-status"], meta["critical-threshold"], meta["high-threshold"]) == ("failed", 0, 10)
    # alpine 3.18 (the fixture's OS) is past its end of life for trivy 0.76, which the summary says.
    assert meta["summary"] == "FAILED: 1 critical, 2 high, 1 medium, 1 low, 1 unknown vulnerabilities (end-of-life OS)"


def test_details_are_most_severe_first_with_trivys_field_names(scanner_env, sample_image, audits):
    meta = audits.json(scan_sample(scanner_env, sample_image.path).meta_path)
    details = meta["details"]
    assert [d["VulnerabilityID"] for d in details] == [
        "CVE-2099-0001", "CVE-2099-0003", "CVE-2099-0004", "CVE-2099-0002", "CVE-2099-0006", "CVE-2099-0007"]
    first = details[0]
    assert first == {
        "VulnerabilityID": "CVE-2099-0001", "PkgName": "busybox", "InstalledVersion": "1.36.1-r2",
        "FixedVersion": "1.36.1-r5", "Severity": "CRITICAL",
        "Title": "busybox: heap overflow in wget URL parsing", "Target": first["Target"],
    }
    assert "FixedVersion" not in details[3]  # CVE-2099-0002 has no fix


@pytest.mark.parametrize(
    ("critical", "high", "thresholds", "status"),
    [
        (0, 0, Thresholds(), ScanStatus.PASSED),
        (1, 0, Thresholds(), ScanStatus.FAILED),             # one above the default 0
        (1, 0, Thresholds(critical=1), ScanStatus.PASSED),   # equal to the threshold
        (2, 0, Thresholds(critical=1), ScanStatus.FAILED),   # one above
        (0, 10, Thresholds(), ScanStatus.PASSED),            # equal to the default 10
        (0, 11, Thresholds(), ScanStatus.WARNING),           # one above
        (5, 50, Thresholds(critical=5, high=50), ScanStatus.PASSED),
        (6, 51, Thresholds(critical=5, high=50), ScanStatus.FAILED),  # failed wins over warning
    ],
)
def test_threshold_edges(critical, high, thresholds, status):
    counts = VulnerabilityCounts(critical=critical, high=high, total=critical + high)
    assert decide_status(counts, thresholds) is status


def test_summary_lines():
    assert summary_line(ScanStatus.PASSED, VulnerabilityCounts()) == "PASSED: no vulnerabilities"
    assert summary_line(ScanStatus.PASSED, VulnerabilityCounts(medium=12, low=45, total=57)) == (
        "PASSED: 12 medium, 45 low vulnerabilities")
    assert summary_line(ScanStatus.WARNING, VulnerabilityCounts(high=1, total=1)) == "WARNING: 1 high vulnerability"


def test_thresholds_from_settings_decide_the_status(scanner_env, sample_image, audits):
    scanner_env.set(TRIVY_CRITICAL_THRESHOLD="1", TRIVY_HIGH_THRESHOLD="1")
    meta = audits.json(scan_sample(scanner_env, sample_image.path).meta_path)
    assert (meta["scan-status"], meta["summary"].split(":")[0]) == ("warning", "WARNING")  # 1 critical = 1; 2 high > 1


def test_invalid_thresholds_are_configuration_errors(scanner_env):
    from scanner_core.errors import ConfigurationError

    scanner_env.set(TRIVY_CRITICAL_THRESHOLD="-1", TRIVY_HIGH_THRESHOLD="ten")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "TRIVY_CRITICAL_THRESHOLD: Input should be greater than or equal to 0" in str(caught.value)
    assert "TRIVY_HIGH_THRESHOLD" in str(caught.value) and "'ten'" in str(caught.value)


def test_a_report_with_more_than_100_findings(scanner_env, audits, tmp_path):
    packages, advisories = large_fixture(60, 3)  # 180 findings, severities rotating
    cache = tmp_path / "cache"
    build_trivy_db(cache, advisories)
    tarball = build_alpine_image(tmp_path / "large.tar", packages, repo_tag="large/app:1")
    scanner_env.set(TRIVY_CACHE_DIR=str(cache))
    meta = audits.json(scan_sample(scanner_env, tarball.path, "many").meta_path)

    report = audits.json(meta["trivy-audit-path"])
    listed = [v for r in report["Results"] for v in r.get("Vulnerabilities") or []]
    assert meta["vulnerabilities"]["total"] == len(listed) == 180
    assert len(meta["details"]) == 100
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    keys = [(rank[d["Severity"]], d["VulnerabilityID"], d["PkgName"]) for d in meta["details"]]
    assert keys == sorted(keys)  # most severe first, then by id and package: a stable order
    # The 100 kept are the 100 most severe of the whole report.
    everything = sorted((rank[v["Severity"]], v["VulnerabilityID"], v["PkgName"]) for v in listed)
    assert keys == everything[:100]


def test_scan_options_reach_trivy(scanner_env, sample_image, audits):
    scanner_env.set(TRIVY_SEVERITY="CRITICAL,HIGH", TRIVY_IGNORE_UNFIXED="true")
    meta = audits.json(scan_sample(scanner_env, sample_image.path).meta_path)
    assert meta["vulnerabilities"] == {"critical": 1, "high": 2, "medium": 0, "low": 0, "unknown": 0, "total": 3}


def test_invalid_scan_options_name_the_allowed_values(scanner_env):
    from scanner_core.errors import ConfigurationError

    scanner_env.set(TRIVY_SEVERITY="CRITICAL,SEVERE", TRIVY_SCANNERS="vuln,rbac", SCAN_SBOM="spdx")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    text = str(caught.value)
    assert "TRIVY_SEVERITY.1" in text and "'CRITICAL', 'HIGH', 'MEDIUM', 'LOW' or 'UNKNOWN'" in text
    assert "TRIVY_SCANNERS.1" in text and "'vuln', 'secret', 'license' or 'misconfig'" in text
    assert "SCAN_SBOM" in text and "'none' or 'cyclonedx'" in text


def test_secret_scanner_and_sbom(scanner_env, audits, tmp_path):
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    tarball = build_alpine_image(tmp_path / "leaky.tar", SAMPLE_PACKAGES, extra_files={"app/.env": f"TOKEN={token}\n".encode()})
    scanner_env.set(TRIVY_SCANNERS="vuln,secret", SCAN_SBOM="cyclonedx")
    outcome = scan_sample(scanner_env, tarball.path, "leaky")
    meta = audits.json(outcome.meta_path)
    assert meta["secrets"] == 1
    assert meta["sbom-path"] == f"{outcome.folder}/sbom.cdx.json"
    sbom = audits.json(meta["sbom-path"])
    assert sbom["bomFormat"] == "CycloneDX"
    assert {c["name"] for c in sbom["components"] if c.get("type") == "library"} >= {p.name for p in SAMPLE_PACKAGES}
    assert audits.names() == sorted(f"{outcome.folder}/{n}" for n in ("meta", "scan-result.json", "sbom.cdx.json"))
