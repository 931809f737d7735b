"""Images with Java archives through the scanner: the Java DB is kept apart from
scans (fetched once from a mirror in the local registry, swapped atomically),
every scan passes --skip-java-db-update, and an air-gapped scanner without a
Java DB says so (``java-db-missing``). Real trivy, registry and Azurite."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ScanFailed
from scanner_core.functions import handlers as functions
from scanner_core.heartbeat import build_heartbeat
from tests.conftest import REPO_ROOT
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image
from tests.support.java_db import build_java_db, publish_java_db
from tests.support.java_fixtures import EXPECTED_MAVEN, JAR_FILES, JAVA_DB_ROWS, MAVEN_ADVISORIES, maven_findings
from tests.support.registry import unreachable_address
from tests.support.trivy_db import build_trivy_db

JAVA_DB_UPDATED_AT = datetime(2026, 11, 19, 1, 0, tzinfo=timezone.utc)
REQUESTED = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def java_mirror(registry, tmp_path_factory) -> str:
    source = build_java_db(tmp_path_factory.mktemp("java-db-src"), JAVA_DB_ROWS, updated_at=JAVA_DB_UPDATED_AT,
                           next_update=datetime.now(timezone.utc) + timedelta(days=7))
    publish_java_db(registry.address, "mirror/trivy-java-db", "1", source,
                    username=registry.username, password=registry.password)
    return f"{registry.address}/mirror/trivy-java-db:1"


@pytest.fixture(scope="module")
def jar_image(registry, tmp_path_factory) -> str:
    tarball = build_alpine_image(tmp_path_factory.mktemp("jar-image") / "jar.tar", SAMPLE_PACKAGES,
                                 repo_tag="java/app:1.0", extra_files=JAR_FILES)
    registry.push_docker_archive(tarball.path, "java/app", "1.0")
    return f"{registry.address}/java/app:1.0"


@pytest.fixture
def java_env(scanner_env, registry, java_mirror, tmp_path):
    """A cache with the vulnerability DB (Maven advisories included) and no Java DB; updates allowed."""
    cache = tmp_path / "cache"
    build_trivy_db(cache, SAMPLE_ADVISORIES, maven_advisories=MAVEN_ADVISORIES,
                   updated_at=datetime.now(timezone.utc), next_update=datetime.now(timezone.utc) + timedelta(days=1))
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}
    ]})
    scanner_env.set(TRIVY_CACHE_DIR=str(cache), TRIVY_SKIP_DB_UPDATE="false", TRIVY_JAVA_DB_REPOSITORY=java_mirror)
    return scanner_env


def scan(image: str, audit_id: str = "java-1"):
    return Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED, image=image))


def test_the_java_db_is_fetched_once_then_jars_are_reported(java_env, jar_image, audits):
    cache = Path(java_env.values["TRIVY_CACHE_DIR"])
    assert not (cache / "java-db").exists()

    outcome = scan(jar_image)

    assert outcome.succeeded, outcome.meta.failure_description
    assert (cache / "java-db").is_symlink()  # downloaded aside and swapped in
    report = audits.json(outcome.meta.trivy_audit_path)
    assert maven_findings(report) == EXPECTED_MAVEN  # pom.properties and SHA-1-only JARs alike
    meta = audits.json(outcome.meta_path)
    # The fixture's Alpine findings (1 critical, 2 high, 1 medium, 1 low, 1 unknown) and the two Maven ones.
    assert meta["vulnerabilities"] == {"critical": 2, "high": 3, "medium": 1, "low": 1, "unknown": 1, "total": 8}
    assert {(d["PkgName"], d["VulnerabilityID"]) for d in meta["details"] if d["Target"] == "Java"} == {
        ("org.example:log-lib", "CVE-2099-1001"), ("com.acme:opaque-lib", "CVE-2099-1002")}
    assert meta["trivy-java-db-updated-at"] == "2026-11-19T01:00:00Z"
    assert meta["trivy-java-db-next-update"]
    heartbeat = build_heartbeat(Scanner(load_config()))
    assert heartbeat.trivy_java_db_updated_at == "2026-11-19T01:00:00Z"

    # A second scan finds the Java DB in place: nothing is downloaded again.
    before = (cache / "java-db").resolve()
    assert scan(jar_image, "java-2").succeeded
    assert (cache / "java-db").resolve() == before


def test_air_gapped_without_a_java_db_fails_jar_images_only(java_env, jar_image, pushed_sample, audits):
    java_env.set(TRIVY_SKIP_DB_UPDATE="true")
    cache = Path(java_env.values["TRIVY_CACHE_DIR"])

    outcome = scan(jar_image)

    assert outcome.meta.audit_result.value == "audit-failed"
    assert (outcome.meta.failure_reason, outcome.meta.failure_kind) == ("java-db-missing", "permanent")
    assert str(cache / "java-db") in outcome.meta.failure_description
    assert "trivy-java.db" in outcome.meta.failure_description
    assert not (cache / "java-db").exists()  # nothing was downloaded
    assert scan(pushed_sample.reference, "no-jars").succeeded  # an image without JARs never needs it

    # The air-gapped way: put the Java DB where the description says; scans work from then on.
    build_java_db(cache, JAVA_DB_ROWS)
    placed = scan(jar_image, "java-placed")
    assert placed.succeeded, placed.meta.failure_description
    assert maven_findings(audits.json(placed.meta.trivy_audit_path)) == EXPECTED_MAVEN


def test_concurrent_jar_scans_while_the_java_db_is_swapped(java_env, jar_image, audits):
    scanner = Scanner(load_config())
    scanner.java_database.refresh(force=True)
    outcomes, errors = [], []

    def scan_one(index: int) -> None:
        try:
            outcomes.append(scan(jar_image, f"concurrent-{index}"))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def swap_three_times() -> None:
        for _ in range(3):
            scanner.java_database.refresh(force=True)

    threads = [threading.Thread(target=scan_one, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=swap_three_times))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert errors == []
    assert len(outcomes) == 4
    for outcome in outcomes:
        assert outcome.succeeded, outcome.meta.failure_description
        assert maven_findings(audits.json(outcome.meta.trivy_audit_path)) == EXPECTED_MAVEN
    versions = list((Path(java_env.values["TRIVY_CACHE_DIR"]) / "java-db-versions").iterdir())
    assert len(versions) == 1  # old versions are removed after each swap


def test_a_failed_java_db_download_keeps_the_java_db_in_place(java_env, jar_image):
    scanner = Scanner(load_config())
    scanner.java_database.refresh(force=True)
    cache = Path(java_env.values["TRIVY_CACHE_DIR"])
    before = json.loads((cache / "java-db" / "metadata.json").read_text())

    java_env.set(TRIVY_JAVA_DB_REPOSITORY=f"{unreachable_address()}/mirror/trivy-java-db:1")
    with pytest.raises(ScanFailed) as failed:
        Scanner(load_config()).java_database.refresh(force=True)

    assert failed.value.reason == "db-unavailable" and "Java DB" in str(failed.value)
    assert json.loads((cache / "java-db" / "metadata.json").read_text()) == before
    assert scan(jar_image).succeeded


def test_the_refresh_timer_keeps_a_present_java_db_and_never_fetches_an_absent_one(java_env):
    cache = Path(java_env.values["TRIVY_CACHE_DIR"])
    functions.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    assert not (cache / "java-db").exists()  # fetched when a scan first needs it, not before

    build_java_db(cache, JAVA_DB_ROWS, updated_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                  next_update=datetime(2026, 1, 8, tzinfo=timezone.utc))  # placed by hand, and due
    functions.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    assert (cache / "java-db").is_symlink()  # the hand-placed one was adopted, then swapped for the mirror's
    assert json.loads((cache / "java-db" / "metadata.json").read_text())["UpdatedAt"] == "2026-11-19T01:00:00Z"


def test_concurrent_first_jar_scans_fetch_the_java_db_once(java_env, jar_image, audits, monkeypatch):
    from scanner_core.trivy.runner import Trivy

    downloads: list[str] = []
    original = Trivy.download_db

    def counting(self, *args, **kwargs):
        downloads.append(kwargs["kind"].name if kwargs.get("kind") else "vulnerability DB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trivy, "download_db", counting)
    outcomes: list = []
    threads = [threading.Thread(target=lambda i=i: outcomes.append(scan(jar_image, f"cold-{i}"))) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert [o.succeeded for o in outcomes] == [True, True, True]
    # One download: the scans that waited on the refresh lock found the Java DB there.
    assert downloads == ["Java DB"]
