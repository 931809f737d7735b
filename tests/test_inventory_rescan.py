"""Inventory rescans (issue 18): a rescan of a digest matches the CycloneDX inventory its
image scan stored (``trivy sbom``), with no registry request, and finds exactly what a full
image rescan finds on the same DB. Real trivy, a registry with an access log, Azurite."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.models import AuditMeta
from scanner_core.monitor import MonitorStore
from scanner_core.queue import Delivery, batch_message, handle_message
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, build_alpine_image
from tests.support.java_db import build_java_db
from tests.support.monitor import TrivySpy
from tests.support.java_fixtures import JAR_FILES, JAVA_DB_ROWS, MAVEN_ADVISORIES, OPAQUE_JAR
from tests.support.registry import Registry
from tests.support.trivy_db import Advisory, MavenAdvisory, build_trivy_db
from tests.support.trivy_server import TrivyServer

DAY1 = datetime(2026, 11, 1, 6, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)
REQUESTED = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
GITHUB_TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"  # a planted secret: trivy's secret scanner finds it
# What the DB learns on day 2: an OS CVE with a fix, an OS CVE with none, and a CVE of the JAR
# that trivy names only by its SHA-1 (no pom.properties).
LEARNT_OS = (
    Advisory("CVE-2099-0300", "zlib", "1.2.13-r9", "HIGH", "zlib: learnt on day 2"),
    Advisory("CVE-2099-0301", "busybox", None, "MEDIUM", "busybox: no fix yet"),
)
LEARNT_MAVEN = (
    MavenAdvisory("CVE-2099-1300", OPAQUE_JAR.name, (">=1.0.0, <1.0.9",), ("1.0.9",), "CRITICAL",
                  "opaque-lib: learnt on day 2"),
)
SERVER_TOKEN = "srv-token-" + "4d1c8e07b9a2"
_REQUEST_LINE = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) /')


@pytest.fixture(scope="module")
def counting_registry(tmp_path_factory):
    with Registry(tmp_path_factory.mktemp("inventory-registry"), access_log=True) as registry:
        yield registry


@pytest.fixture(scope="module")
def jar_image(counting_registry, tmp_path_factory) -> tuple[str, str]:
    tarball = build_alpine_image(tmp_path_factory.mktemp("inv-image") / "app.tar", SAMPLE_PACKAGES,
                                 repo_tag="inv/app:1.0",
                                 extra_files={**JAR_FILES, "app/.env": f"GITHUB_TOKEN={GITHUB_TOKEN}\n".encode()})
    digest = counting_registry.push_docker_archive(tarball.path, "inv/app", "1.0")
    return f"{counting_registry.address}/inv/app", digest


def requests_served(registry: Registry) -> int:
    return sum(1 for line in registry.log_path.read_text(errors="replace").splitlines() if _REQUEST_LINE.search(line))


def write_db(cache: Path, day: datetime, *, learnt: bool) -> None:
    build_trivy_db(cache, SAMPLE_ADVISORIES + (LEARNT_OS if learnt else ()),
                   maven_advisories=MAVEN_ADVISORIES + (LEARNT_MAVEN if learnt else ()),
                   updated_at=day, next_update=day + timedelta(days=365))
    build_java_db(cache, JAVA_DB_ROWS)


@pytest.fixture
def inventory_env(scanner_env, counting_registry, tmp_path):
    cache = tmp_path / "cache"
    write_db(cache, DAY1, learnt=False)
    scanner_env.write_config({"heartbeat-period": 60, "registries": [
        {"address": counting_registry.address, "username": counting_registry.username,
         "password": counting_registry.password, "insecure": True}]})
    scanner_env.set(TRIVY_CACHE_DIR=str(cache), TRIVY_SKIP_DB_UPDATE="true", TRIVY_SCANNERS="vuln,secret")
    return scanner_env, cache


def scan(image: str, audit_id: str, trigger: str, **settings: str):
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id=audit_id, requested_at=REQUESTED, image=image, tag="1.0", trigger=trigger))
    assert outcome.succeeded, outcome.meta.failure_description
    return outcome


def findings(audits, meta) -> set[tuple[str, str, str, str, str]]:
    report = audits.json(meta.trivy_audit_path)
    return {(v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v.get("FixedVersion", ""), v["Severity"])
            for result in report.get("Results", []) for v in result.get("Vulnerabilities") or []}


def test_an_inventory_rescan_finds_what_an_image_rescan_finds_without_a_registry_request(
    inventory_env, counting_registry, jar_image, audits
):
    env, cache = inventory_env
    repository, digest = jar_image
    first = scan(f"{repository}@{digest}", "inv-first", "watch").meta
    assert first.inventory_path == f"{first.trivy_audit_path.rsplit('/', 1)[0]}/sbom.cdx.json"
    assert audits.json(first.inventory_path)["bomFormat"] == "CycloneDX"
    assert first.secrets == 1 and first.rescan_fallback is None
    store = MonitorStore(audits.sas_url, load_config().settings.scanner_short_id)
    record = store.latest(repository, digest)
    assert (record.inventory, record.inventory_audit, record.secrets) == (first.inventory_path, "inv-first", 1)

    write_db(cache, DAY2, learnt=True)
    before = requests_served(counting_registry)
    rescan = scan(f"{repository}@{digest}", "inv-rescan", "rescan").meta
    assert requests_served(counting_registry) == before  # not a manifest, not a token, not a layer
    # The rescan's folder keeps its own copy of the inventory (a lifecycle rule may delete the first
    # folder); the record points at it, and still names the image scan that made it (and its secrets).
    rescan_folder = rescan.trivy_audit_path.rsplit("/", 1)[0]
    assert rescan.inventory_path == f"{rescan_folder}/sbom.cdx.json"
    assert audits.read(rescan.inventory_path) == audits.read(first.inventory_path)
    latest = store.latest(repository, digest)
    assert (latest.audit_id, latest.inventory, latest.inventory_audit) == ("inv-rescan", rescan.inventory_path, "inv-first")

    env.set(RESCAN_FROM="image")
    full = scan(f"{repository}@{digest}", "full-rescan", "rescan").meta
    assert requests_served(counting_registry) > before  # the log does count this scan's pulls

    learnt = {"CVE-2099-0300", "CVE-2099-0301", "CVE-2099-1300"}
    assert learnt <= {f[0] for f in findings(audits, full)}
    assert findings(audits, rescan) == findings(audits, full)
    assert {f[0] for f in findings(audits, rescan)} - {f[0] for f in findings(audits, first)} == learnt
    # Same verdict and details as any scan of the image on this DB; the meta says where it came from.
    for field in ("vulnerabilities", "scan_status", "summary", "image_digest", "os", "trivy_db_updated_at"):
        assert getattr(rescan, field) == getattr(full, field), field
    assert [(d.vulnerability_id, d.pkg_name) for d in rescan.details] == [
        (d.vulnerability_id, d.pkg_name) for d in full.details]
    assert rescan.trivy_db_updated_at == "2026-11-02T06:00:00Z"
    assert (rescan.rescanned_from, rescan.rescan_fallback) == ("inv-first", None)
    assert (rescan.secrets, rescan.secrets_from) == (1, "inv-first")  # carried over from the image scan
    # changes list what reaches NOTIFY_MIN_SEVERITY (HIGH by default): not the medium one.
    assert rescan.previous_audit_id == "inv-first" and set(rescan.changes.new) == learnt - {"CVE-2099-0301"}
    assert rescan.decision == full.decision
    meta_blob = json.loads(audits.read(f"{rescan.trivy_audit_path.rsplit('/', 1)[0]}/meta"))
    assert meta_blob["rescanned-from"] == "inv-first" and meta_blob["audit-result"] == "succeeded"
    # RESCAN_FROM=image: no inventory is kept (nothing would read it) and the record says so.
    assert full.rescanned_from is None and full.inventory_path is None
    assert store.latest(repository, digest).inventory is None


def test_an_inventory_rescan_survives_a_lifecycle_rule_deleting_older_folders(
    inventory_env, counting_registry, jar_image, audits
):
    """Issue 17's rule inside issue 18's rescans: after the image scan's folder is deleted, the
    next inventory rescan matches the copy the previous rescan keeps, still with no registry request."""
    env, cache = inventory_env
    env.set(SCAN_DEDUP="false")
    repository, digest = jar_image
    first = scan(f"{repository}@{digest}", "life-first", "watch").meta
    write_db(cache, DAY2, learnt=True)
    rescan = scan(f"{repository}@{digest}", "life-rescan", "rescan").meta
    first_folder = first.trivy_audit_path.rsplit("/", 1)[0]
    for name in [n for n in audits.all_names() if n.startswith(f"{first_folder}/")]:
        audits.client.delete_blob(name)  # what a "delete folders older than N days" rule does
    before = requests_served(counting_registry)
    again = scan(f"{repository}@{digest}", "life-again", "rescan").meta
    assert requests_served(counting_registry) == before
    assert (again.rescanned_from, again.rescan_fallback, again.secrets_from) == ("life-first", None, "life-first")
    assert findings(audits, again) == findings(audits, rescan)
    assert again.inventory_path == f"{again.trivy_audit_path.rsplit('/', 1)[0]}/sbom.cdx.json"


def test_rescans_fall_back_to_the_image_and_say_why(inventory_env, counting_registry, jar_image, audits):
    env, cache = inventory_env
    repository, digest = jar_image
    by_digest = f"{repository}@{digest}"
    env.set(SCAN_DEDUP="false")  # every request below is scanned, none answered from another
    assert scan(by_digest, "fb-first-scan", "rescan").meta.rescan_fallback == "first-scan"

    write_db(cache, DAY2, learnt=True)
    assert scan(f"{repository}:1.0", "fb-by-tag", "rescan").meta.rescan_fallback == "requested-by-tag"

    first = scan(by_digest, "fb-image", "watch").meta
    inventory = audits.json(first.inventory_path)
    inventory["metadata"]["tools"]["components"][0]["version"] = "0.1.0"  # an inventory of another trivy
    audits.client.upload_blob(first.inventory_path, json.dumps(inventory).encode(), overwrite=True)
    before = requests_served(counting_registry)
    other = scan(by_digest, "fb-other-trivy", "rescan").meta
    assert other.rescan_fallback == "inventory-from-trivy-0.1.0" and other.rescanned_from is None
    assert requests_served(counting_registry) > before

    audits.client.delete_blob(other.inventory_path)  # retention removed the inventory
    gone = scan(by_digest, "fb-gone", "rescan").meta
    assert gone.rescan_fallback == "inventory-missing" and "CVE-2099-1300" in {d.vulnerability_id for d in gone.details}


def test_an_inventory_rescan_through_a_trivy_server_finds_what_standalone_and_image_rescans_find(
    inventory_env, jar_image, audits, trivy_executable, tmp_path
):
    """Issue 26: the same findings from ``trivy sbom`` standalone, through ``TRIVY_SERVER`` and
    through a batch's loopback server, and from ``trivy image`` of the image, after a DB update."""
    env, cache = inventory_env
    env.set(SCAN_DEDUP="false")  # every rescan below runs trivy (same DB: dedup would answer)
    repository, digest = jar_image
    by_digest = f"{repository}@{digest}"
    first = scan(by_digest, "srv-first", "watch").meta
    write_db(cache, DAY2, learnt=True)

    env.set(RESCAN_SERVER="off")
    standalone = scan(by_digest, "srv-standalone", "rescan").meta
    with TrivyServer(trivy_executable, tmp_path / "server", cache, token=SERVER_TOKEN) as server:
        env.set(TRIVY_SERVER=server.url, TRIVY_SERVER_TOKEN=SERVER_TOKEN)
        served = scan(by_digest, "srv-served", "rescan").meta
    assert served.trivy_server == server.url and served.rescanned_from == "srv-first"
    env.unset("TRIVY_SERVER", "TRIVY_SERVER_TOKEN")
    env.set(RESCAN_SERVER="auto")

    batch = batch_message([(by_digest, f"srv-batch-{n}", "1.0") for n in (1, 2)], REQUESTED.timestamp())
    quarantined: list[str] = []
    spy = TrivySpy(tmp_path, trivy_executable)
    env.set(TRIVY_PATH=str(spy.path))
    handle_message(Delivery(batch.to_text().encode(), "srv-batch", 1), Scanner(load_config()), max_dequeue_count=3,
                   quarantine=quarantined.append)
    (listen,) = [line.split()[2] for line in spy.invocations() if line.startswith("server ")]
    assert quarantined == [] and listen.startswith("127.0.0.1:")
    assert [f"--server http://{listen} " in line for line in spy.invocations() if line.startswith("sbom ")] == [
        True, True]  # both rescans of the batch asked it
    batched = [the_meta(audits, f"srv-batch-{n}") for n in (1, 2)]

    env.set(RESCAN_FROM="image")
    full = scan(by_digest, "srv-full", "rescan").meta
    learnt = {"CVE-2099-0300", "CVE-2099-0301", "CVE-2099-1300"}
    assert learnt <= {f[0] for f in findings(audits, full)} and not learnt & {f[0] for f in findings(audits, first)}
    for meta in (standalone, served, *batched):
        assert meta.rescanned_from == "srv-first" and meta.rescan_fallback is None
        assert findings(audits, meta) == findings(audits, full), meta.audit_id
        assert (meta.vulnerabilities, meta.scan_status, meta.trivy_db_updated_at) == (
            full.vulnerabilities, full.scan_status, full.trivy_db_updated_at)
    assert SERVER_TOKEN.encode() not in audits.everything()


def the_meta(audits, audit_id: str) -> AuditMeta:
    (name,) = [n for n in audits.names() if n.endswith(f"-{audit_id}/meta")]
    return AuditMeta.model_validate_json(audits.read(name))
