"""The JAR, Java DB, multi-platform and suppression fixtures, checked with the bare
trivy 0.76 CLI against the real registry (no scanner code involved).

What these tests pin down about trivy 0.76 (the scanner relies on each):

* ``--download-java-db-only --java-db-repository <repo>:1`` fetches the
  trivy-java-db artifact into ``<cache>/java-db/{trivy-java.db,metadata.json}``.
* With ``--skip-java-db-update`` and no Java DB, an image *with* JARs fails
  (``The first run cannot skip downloading Java DB`` then FATAL ``... Unable to
  initialize the Java DB: Java DB update failed: '--skip-java-db-update' cannot
  be specified on the first run``); an image without JARs scans.
* A JAR with ``pom.properties`` and one known only by its SHA-1 are both
  reported as ``group:artifact`` with the GHSA Maven advisories.
* ``--platform`` picks an index's child; a missing one fails with
  ``no child with platform <p> in index <ref>``; without ``--platform`` trivy
  wants ``linux/amd64``. ``Metadata.RepoDigests`` holds the *index* digest.
* ``Metadata.OS`` is ``{"Family", "Name", "EOSL"}``.
* ``--ignorefile`` / ``--vex`` drop findings from ``Vulnerabilities``; with
  ``--show-suppressed`` they are listed in ``Results[].ExperimentalModifiedFindings``
  (``Status`` ``ignored`` / ``not_affected``, ``Source`` the file as given, the
  whole ``Finding``). Entries past ``expired_at`` (YAML) or ``exp:`` (text) no
  longer suppress.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image
from tests.support.java_db import build_java_db, publish_java_db
from tests.support.java_fixtures import (
    EXPECTED_MAVEN,
    JAR_FILES,
    JAVA_DB_ROWS,
    MAVEN_ADVISORIES,
    maven_findings,
)
from tests.support.oci_images import build_oci_index, push_oci_index
from tests.support.registry import Registry
from tests.support.trivy_db import build_trivy_db

FLAGS = ("--no-progress", "--skip-version-check", "--disable-telemetry", "--cache-backend", "memory")


@pytest.fixture(scope="module")
def java_world(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> dict:
    root = tmp_path_factory.mktemp("java-world")
    build_trivy_db(root / "cache", SAMPLE_ADVISORIES, maven_advisories=MAVEN_ADVISORIES)
    source = build_java_db(root / "java-src", JAVA_DB_ROWS)
    publish_java_db(registry.address, "aquasec/trivy-java-db", "1", source,
                    username=registry.username, password=registry.password)
    jar_image = build_alpine_image(root / "jar.tar", SAMPLE_PACKAGES, repo_tag="team/jar:1.0", extra_files=JAR_FILES)
    registry.push_docker_archive(jar_image.path, "fixtures/jar", "1.0")
    two = build_oci_index(root / "two", ["linux/amd64", "linux/arm64"], SAMPLE_PACKAGES)
    arm = build_oci_index(root / "arm", ["linux/arm64"], SAMPLE_PACKAGES)
    return {
        "root": root, "cache": root / "cache",
        "two": two, "two_digest": push_oci_index(registry, two, "fixtures/multi"),
        "arm": arm, "arm_digest": push_oci_index(registry, arm, "fixtures/armonly"),
    }


def run_trivy(trivy: Path, registry: Registry, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
           "TRIVY_USERNAME": registry.username, "TRIVY_PASSWORD": registry.password}
    return subprocess.run([str(trivy), *args], env=env, capture_output=True, text=True, timeout=180, check=False)


def scan(trivy: Path, registry: Registry, cache: Path, out: Path, image: str, extra: Sequence[str] = ()) -> tuple:
    result = run_trivy(trivy, registry, out.parent, "image", "--cache-dir", str(cache), "--skip-db-update",
                       "--skip-java-db-update", *FLAGS, "-f", "json", "-o", str(out), *extra,
                       "--image-src", "remote", "--", f"{registry.address}/{image}")
    report = json.loads(out.read_text()) if result.returncode == 0 else None
    return result, report


def test_java_db_is_downloaded_from_the_registry_and_names_both_jars(
    java_world: dict, registry: Registry, trivy_executable: Path, tmp_path: Path
) -> None:
    cache = java_world["cache"]
    missing, _ = scan(trivy_executable, registry, cache, tmp_path / "r0.json", "fixtures/jar:1.0")
    assert missing.returncode == 1
    assert "The first run cannot skip downloading Java DB" in missing.stderr
    assert ("Unable to initialize the Java DB: Java DB update failed: "
            "'--skip-java-db-update' cannot be specified on the first run") in missing.stderr
    # An image without Java archives never opens the Java DB.
    plain, report = scan(trivy_executable, registry, cache, tmp_path / "p.json", "fixtures/multi:1.0")
    assert plain.returncode == 0 and report["Results"][0]["Vulnerabilities"]

    download = run_trivy(trivy_executable, registry, tmp_path, "image", "--download-java-db-only", "--cache-dir",
                         str(cache), "--java-db-repository", f"{registry.address}/aquasec/trivy-java-db:1", *FLAGS)
    assert download.returncode == 0, download.stderr
    metadata = json.loads((cache / "java-db" / "metadata.json").read_text())
    assert metadata["Version"] == 1 and (cache / "java-db" / "trivy-java.db").is_file()

    result, report = scan(trivy_executable, registry, cache, tmp_path / "r1.json", "fixtures/jar:1.0")
    assert result.returncode == 0, result.stderr
    assert maven_findings(report) == EXPECTED_MAVEN
    paths = {v["PkgName"]: v["PkgPath"] for r in report["Results"] for v in r.get("Vulnerabilities") or []
             if r["Type"] == "jar"}
    assert paths == {"org.example:log-lib": "app/lib/log-lib-2.14.1.jar", "com.acme:opaque-lib": "app/lib/opaque.jar"}
    assert report["Metadata"]["OS"] == {"Family": "alpine", "Name": "3.18.4", "EOSL": True}


def test_platforms_of_an_index(java_world: dict, registry: Registry, trivy_executable: Path, tmp_path: Path) -> None:
    cache = java_world["cache"]
    two, arm = java_world["two"], java_world["arm"]
    assert java_world["two_digest"] == two.index_digest  # skopeo --preserve-digests kept the index's bytes

    for platform in ("linux/amd64", "linux/arm64"):
        result, report = scan(trivy_executable, registry, cache, tmp_path / "m.json", "fixtures/multi:1.0",
                              ["--platform", platform])
        assert result.returncode == 0, result.stderr
        assert report["Metadata"]["RepoDigests"] == [f"{registry.address}/fixtures/multi@{two.index_digest}"]
        arch = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}[platform]
        assert f"arch={arch}" in report["Results"][0]["Vulnerabilities"][0]["PkgIdentifier"]["PURL"]

    default, _ = scan(trivy_executable, registry, cache, tmp_path / "a.json", "fixtures/armonly:1.0")
    assert default.returncode == 1
    assert f"no child with platform linux/amd64 in index {registry.address}/fixtures/armonly:1.0" in default.stderr
    chosen, report = scan(trivy_executable, registry, cache, tmp_path / "b.json", "fixtures/armonly:1.0",
                          ["--platform", "linux/arm64"])
    assert chosen.returncode == 0 and report["Metadata"]["RepoDigests"][0].endswith(arm.index_digest)
    absent, _ = scan(trivy_executable, registry, cache, tmp_path / "c.json", "fixtures/multi:1.0",
                     ["--platform", "linux/s390x"])
    assert absent.returncode == 1 and "no child with platform linux/s390x in index" in absent.stderr


def test_suppressions_are_listed_with_show_suppressed(
    java_world: dict, registry: Registry, trivy_executable: Path, tmp_path: Path
) -> None:
    cache = java_world["cache"]
    (cache / "java-db").exists() or pytest.fail("run after the Java DB download test (module order)")
    ignore = tmp_path / ".trivyignore.yaml"
    ignore.write_text(
        "vulnerabilities:\n"
        "  - id: CVE-2099-0003\n    statement: musl iconv is not used\n"
        "  - id: CVE-2099-1001\n    expired_at: 2099-01-01\n"
        "  - id: CVE-2099-0006\n    expired_at: 2020-01-01\n"
    )
    vex = tmp_path / "app.openvex.json"
    vex.write_text(json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://example.invalid/vex/1", "author": "team",
        "timestamp": "2026-11-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": "CVE-2099-1002"},
                        "products": [{"@id": "pkg:maven/com.acme/opaque-lib@1.0.0"}],
                        "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path"}],
    }))
    result, report = scan(trivy_executable, registry, cache, tmp_path / "s.json", "fixtures/jar:1.0",
                          ["--ignorefile", str(ignore), "--vex", str(vex), "--show-suppressed"])
    assert result.returncode == 0, result.stderr
    listed = {v["VulnerabilityID"] for r in report["Results"] for v in r.get("Vulnerabilities") or []}
    modified = {(m["Finding"]["VulnerabilityID"], m["Status"], Path(m["Source"]).name, m["Finding"]["Severity"])
                for r in report["Results"] for m in r.get("ExperimentalModifiedFindings") or []}
    assert modified == {
        ("CVE-2099-0003", "ignored", ".trivyignore.yaml", "HIGH"),
        ("CVE-2099-1001", "ignored", ".trivyignore.yaml", "CRITICAL"),
        ("CVE-2099-1002", "not_affected", "app.openvex.json", "HIGH"),
    }
    assert "CVE-2099-0006" in listed  # its expired_at has passed
    assert not listed & {"CVE-2099-0003", "CVE-2099-1001", "CVE-2099-1002"}

    text_ignore = tmp_path / ".trivyignore"
    text_ignore.write_text("CVE-2099-0001\n# triaged\nCVE-2099-0004 exp:2020-01-01\n")
    result, report = scan(trivy_executable, registry, cache, tmp_path / "t.json", "fixtures/jar:1.0",
                          ["--ignorefile", str(text_ignore)])
    listed = {v["VulnerabilityID"] for r in report["Results"] for v in r.get("Vulnerabilities") or []}
    assert "CVE-2099-0001" not in listed and "CVE-2099-0004" in listed
    assert all(not r.get("ExperimentalModifiedFindings") for r in report["Results"])  # not without --show-suppressed
