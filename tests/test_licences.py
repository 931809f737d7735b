"""Licences (issue 15): the fixture recorded first against the bare trivy 0.76 CLI,
then through the scanner (meta's counts by category) and the policy.

What these tests pin down about trivy 0.76 (the scanner relies on each):

* ``--scanners license`` adds one result per package group with ``Class``
  ``license`` and no ``Type`` (``Target`` ``OS Packages``, ``Python``,
  ``Node.js``), each ``Licenses[]`` entry with ``PkgName``, ``Name`` (SPDX,
  normalised: ``AGPL-3.0`` becomes ``AGPL-3.0-only``), ``Category`` and
  ``Severity``.
* Categories: AGPL is ``forbidden``, GPL ``restricted``, MPL ``reciprocal``,
  MIT, Apache-2.0 and Zlib ``notice``, an unknown name (apk's ``curl``)
  ``unknown``; offline, with the test DB.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from tests.support.images import SAMPLE_PACKAGES, build_alpine_image
from tests.support.licence_fixtures import LICENCE_FILES

REQUESTED = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
FLAGS = ("--no-progress", "--skip-version-check", "--disable-telemetry", "--cache-backend", "memory")
EXPECTED = {
    ("OS Packages", "busybox", "GPL-2.0-only", "restricted"),
    ("OS Packages", "ca-certificates", "MPL-2.0", "reciprocal"),
    ("OS Packages", "curl", "curl", "unknown"),
    ("OS Packages", "libcrypto3", "Apache-2.0", "notice"),
    ("OS Packages", "musl", "MIT", "notice"),
    ("OS Packages", "zlib", "Zlib", "notice"),
    ("Node.js", "shared-lib", "GPL-3.0-only", "restricted"),
    ("Python", "copyleft-lib", "AGPL-3.0-only", "forbidden"),
    ("Python", "easy-lib", "MIT", "notice"),
}
COUNTS = {"forbidden": 1, "restricted": 2, "reciprocal": 1, "notice": 4, "permissive": 0, "unencumbered": 0,
          "unknown": 1}


@pytest.fixture(scope="module")
def licensed_image(tmp_path_factory):
    return build_alpine_image(tmp_path_factory.mktemp("licences") / "licensed.tar", SAMPLE_PACKAGES,
                              repo_tag="team/licensed:1.0", extra_files=LICENCE_FILES)  # fmt: skip


def test_the_fixture_against_bare_trivy(trivy_executable, trivy_cache, licensed_image):
    completed = subprocess.run(
        [str(trivy_executable), "image", *FLAGS, "--cache-dir", str(trivy_cache), "--skip-db-update",
         "--offline-scan", "--scanners", "vuln,license", "--format", "json", "--input", str(licensed_image.path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    licences = {(r["Target"], entry["PkgName"], entry["Name"], entry["Category"])
                for r in report["Results"] if r.get("Class") == "license" for entry in r["Licenses"]}  # fmt: skip
    assert licences == EXPECTED
    assert {r["Target"]: r.get("Type") for r in report["Results"] if r.get("Class") == "license"} == {
        "OS Packages": None, "Node.js": None, "Python": None}
    assert {r["Target"]: r["Type"] for r in report["Results"] if r.get("Class") == "lang-pkgs"} == {
        "Node.js": "node-pkg", "Python": "python-pkg"}


def scan(audit_id, licensed_image):
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED,
                                                      input_tar=licensed_image.path))  # fmt: skip
    assert outcome.succeeded, outcome.failure
    return outcome


def test_meta_counts_licences_by_category_and_the_policy_rejects_on_them(scanner_env, audits, licensed_image,
                                                                         tmp_path):  # fmt: skip
    without = audits.json(scan("no-licences", licensed_image).meta_path)
    assert "licenses" not in without  # the license scanner is not on by default

    scanner_env.set(TRIVY_SCANNERS="vuln,license")
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"default": "approve", "rules": [
        {"id": "no-agpl", "action": "reject", "licenses": {"forbidden": "> 0"}},
    ]}))
    scanner_env.set(POLICY_PATH=str(policy))
    meta = audits.json(scan("licences", licensed_image).meta_path)
    assert meta["licenses"] == COUNTS
    report = audits.json(meta["trivy-audit-path"])  # reproducible from the report
    assert sum(len(r.get("Licenses") or []) for r in report["Results"]) == sum(COUNTS.values())
    assert meta["vulnerabilities"]["total"] == 6  # the vulnerabilities are as without licences
    assert meta["policy"] == {"action": "reject", "rule": "no-agpl",
                              "reason": "rule no-agpl: 1 forbidden licence (AGPL-3.0-only in copyleft-lib)"}

    # Package names and types reach the licensed packages too (trivy lists no others).
    policy.write_text(json.dumps({"rules": [
        {"id": "restricted", "action": "review", "licenses": {"restricted": ">= 3"}},
        {"id": "python", "action": "reject", "packages": "copyleft-*", "package-types": "python-pkg"},
    ]}))
    meta = audits.json(scan("licences-2", licensed_image).meta_path)
    assert meta["policy"]["reason"] == "rule python: package copyleft-lib (python-pkg) matches copyleft-*, type python-pkg"
    policy.write_text(json.dumps({"rules": [{"id": "gpl", "action": "reject", "packages": "*",
                                             "package-types": ["node-pkg"]}]}))  # fmt: skip
    meta = audits.json(scan("licences-3", licensed_image).meta_path)
    assert meta["policy"]["reason"] == "rule gpl: package shared-lib (node-pkg) matches *, type node-pkg"


# trivy 0.76 scans misconfigurations of an image offline: ``--scanners misconfig`` checks IaC files in
# its layers (here a Dockerfile) and ``--image-config-scanners misconfig`` its config, both with the
# checks embedded in trivy (``--skip-check-update``: no checks-bundle download is tried).
DOCKERFILE = {"app/Dockerfile": b"FROM alpine\nUSER root\nRUN apk add curl\n"}
MISCONFIG_CHECKS = {
    ("config", "DS-0002", "HIGH"), ("config", "DS-0026", "LOW"),  # the image's config
    ("app/Dockerfile", "DS-0001", "MEDIUM"), ("app/Dockerfile", "DS-0002", "HIGH"),
    ("app/Dockerfile", "DS-0025", "HIGH"), ("app/Dockerfile", "DS-0026", "LOW"),
}


@pytest.fixture(scope="module")
def dockerfile_image(tmp_path_factory):
    return build_alpine_image(tmp_path_factory.mktemp("misconfig") / "dockerfile.tar", SAMPLE_PACKAGES,
                              repo_tag="team/misconfig:1.0", extra_files=DOCKERFILE)  # fmt: skip


def test_misconfigurations_against_bare_trivy_offline(trivy_executable, trivy_cache, dockerfile_image):
    completed = subprocess.run(
        [str(trivy_executable), "image", *FLAGS, "--cache-dir", str(trivy_cache), "--skip-db-update",
         "--offline-scan", "--skip-check-update", "--scanners", "vuln,misconfig", "--image-config-scanners",
         "misconfig", "--format", "json", "--input", str(dockerfile_image.path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "Downloading the checks bundle" not in completed.stderr
    report = json.loads(completed.stdout)
    found = {("config" if r["Target"] == str(dockerfile_image.path) else r["Target"], m["ID"], m["Severity"])
             for r in report["Results"] for m in r.get("Misconfigurations") or [] if m["Status"] == "FAIL"}
    assert found == MISCONFIG_CHECKS


def test_misconfigurations_through_the_scanner(scanner_env, audits, dockerfile_image):
    scanner_env.set(TRIVY_SCANNERS="vuln,misconfig")
    meta = audits.json(Scanner(load_config()).scan(ScanRequest(
        audit_id="misconfig", requested_at=REQUESTED, input_tar=dockerfile_image.path)).meta_path)
    assert meta["misconfigurations"] == {"critical": 0, "high": 3, "medium": 1, "low": 2, "unknown": 0, "total": 6}
    assert meta["vulnerabilities"]["total"] == 6 and "licenses" not in meta
