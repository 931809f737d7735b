"""Fleet queries by CVE and by package (issue 24, item 3): real trivy scans of registry
images, the query tables in Azurite's real Table service, the routes' answers.

The vulnerability ids are this module's own (CVE-2099-77xx) and the repositories are
made per run, so the shared Azurite's tables hold no other test's rows for them."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.fleet_queries import (
    VULNERABILITY_TABLE, InstalledPackage, QueryTables, fleet_tables_connection, forget_image, images_with_package, parse_version_range,
    rebuild_queries,
)
from scanner_core.functions import package_images, vulnerability_images
from scanner_core.models import AuditMeta, AuditResult, Finding
from scanner_core.storage import AuditIndex
from tests.support.api_server import ApiServer
from tests.support.browser import Chromium, find_chromium
from tests.support.images import ApkPackage, build_alpine_image
from tests.support.trivy_db import Advisory, build_trivy_db
from tests.test_http_api import answer, error_of, http, make_api

CVE_A, CVE_B, CVE_SUPPRESSED = "CVE-2099-7701", "CVE-2099-7702", "CVE-2099-7703"
DAY1 = datetime(2026, 11, 1, 6, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)
AT = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
ONE = (ApkPackage("musl", "1.2.4-r1"), ApkPackage("zlib", "1.2.13-r1"), ApkPackage("busybox", "1.36.1-r2"))
TWO = (ApkPackage("musl", "1.2.4-r1"), ApkPackage("zlib", "1.2.13-r5"), ApkPackage("curl", "8.4.0-r0"))


def advisories(zlib_fixed: str) -> tuple[Advisory, ...]:
    return (Advisory(CVE_A, "zlib", zlib_fixed, "HIGH", "zlib: overflow"),
            Advisory(CVE_B, "curl", "8.4.0-r9", "MEDIUM", "curl: leak"),
            Advisory(CVE_SUPPRESSED, "busybox", "1.36.1-r9", "LOW", "busybox: suppressed by .trivyignore"))  # fmt: skip


@pytest.fixture(scope="module")
def fleet(registry, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Two images in the registry: ``one`` (zlib r1, busybox) and ``two`` (zlib r5, curl)."""
    run = uuid.uuid4().hex[:8]
    images = {}
    for name, packages in (("one", ONE), ("two", TWO)):
        tarball = build_alpine_image(tmp_path_factory.mktemp(f"fq-{name}") / "image.tar", packages,
                                     repo_tag=f"fq{run}/{name}:1.0")  # fmt: skip
        digest = registry.push_docker_archive(tarball.path, f"fq{run}/{name}", "1.0")
        images[name] = (f"{registry.address}/fq{run}/{name}", digest)
    return images


@pytest.fixture
def query_env(scanner_env, registry, azurite, tmp_path):
    scanner_env.write_config({"heartbeat-period": 60, "registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password,
         "insecure": True}]})  # fmt: skip
    ignore = tmp_path / ".trivyignore"
    ignore.write_text(f"{CVE_SUPPRESSED}\n")
    scanner_env.set(AzureWebJobsStorage=azurite.connection_string, TRIVY_IGNOREFILE=str(ignore))
    return scanner_env


def scan(env, cache: Path, image: tuple[str, str], audit_id: str, at: datetime, trigger: str) -> AuditMeta:
    env.set(TRIVY_CACHE_DIR=str(cache))
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=at, image=f"{image[0]}@{image[1]}",
                                                      tag="1.0", trigger=trigger))  # type: ignore[arg-type]
    assert outcome.succeeded, outcome.meta.failure_description
    return outcome.meta


def cve(api, vulnerability_id: str, status: int = 200, **params: str):
    request = http("GET", f"vulnerabilities/{vulnerability_id}/images", route_params={"id": vulnerability_id},
                   params=params)  # fmt: skip
    return answer(vulnerability_images(request, api), status)


def package(api, name: str, status: int = 200, **params: str):
    encoded = quote(name, safe="")
    request = http("GET", f"packages/{encoded}/images", route_params={"name": encoded}, params=params)
    return answer(package_images(request, api), status)


def by_repository(document) -> dict[str, dict]:
    return {row["repository"].rsplit("/", 1)[1]: row for row in document["images"]}


def dashboard_search(api, **search: str) -> str:
    """The dashboard's DOM in headless Chromium after the search its URL asks for."""
    with ApiServer(api, "fleet-key") as server:
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in search.items())
        return Chromium(find_chromium()).dump_dom(f"{server.base_url}/api/dashboard?code=fleet-key&{query}")


def test_cve_and_package_queries_follow_scans_rescans_and_suppressions(query_env, azurite, audits, fleet, tmp_path):
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    build_trivy_db(day1, advisories("1.2.13-r9"), updated_at=DAY1, next_update=DAY1 + timedelta(days=365))
    build_trivy_db(day2, advisories("1.2.13-r3"), updated_at=DAY2, next_update=DAY2 + timedelta(days=365))
    first = scan(query_env, day1, fleet["one"], "fq-one", AT, "watch")
    second = scan(query_env, day1, fleet["two"], "fq-two", AT, "watch")
    assert first.inventory_path and second.inventory_path
    api = make_api(azurite)

    rows = by_repository(cve(api, CVE_A))
    assert set(rows) == {"one", "two"}
    assert rows["one"]["packages"] == [{"name": "zlib", "installed": "1.2.13-r1", "fixed": "1.2.13-r9",
                                        "severity": "HIGH", "target": rows["one"]["packages"][0]["target"]}]
    assert (rows["one"]["severity"], rows["one"]["since-audit"], rows["one"]["tag"]) == ("HIGH", "fq-one", "1.0")
    assert rows["two"]["digest"] == fleet["two"][1] and rows["two"]["approval"]["state"]
    assert set(by_repository(cve(api, CVE_B))) == {"two"}
    assert cve(api, CVE_SUPPRESSED)["images"] == []  # .trivyignore: not affected
    assert cve(api, CVE_A.lower())["vulnerability-id"] == CVE_A

    # Pages of one, with cursors bound to their query.
    page = cve(api, CVE_A, limit="1")
    assert len(page["images"]) == 1 and page["next-cursor"] and page["links"]["next"].startswith("/api/vulnerabilities/")
    rest = cve(api, CVE_A, limit="1", cursor=page["next-cursor"])
    assert len(rest["images"]) == 1 and rest["next-cursor"] is None
    assert {page["images"][0]["image"], rest["images"][0]["image"]} == {r["image"] for r in rows.values()}
    assert error_of(vulnerability_images(http("GET", "x", route_params={"id": CVE_B},
                    params={"cursor": page["next-cursor"]}), api), 400)["field"] == "cursor"  # fmt: skip
    assert cve(api, CVE_A, 400, cursor=page["next-cursor"][:-3] + "AAA")["error"]["field"] == "cursor"

    zlib = by_repository(package(api, "zlib"))
    assert {name: [v["version"] for v in row["versions"]] for name, row in zlib.items()} == {
        "one": ["1.2.13-r1"], "two": ["1.2.13-r5"]}
    assert zlib["one"]["versions"][0]["type"] == "apk"
    assert set(by_repository(package(api, "ZLIB", version="<1.2.13-r3"))) == {"one"}
    assert set(by_repository(package(api, "zlib", version=">=1.2.13-r2,<2", type="apk"))) == {"two"}
    assert package(api, "zlib", type="npm")["images"] == []
    assert set(by_repository(package(api, "curl"))) == {"two"}

    # The dashboard's search box, in Chromium: a link that searches on load.
    dom = dashboard_search(api, search="zlib", kind="package", version="<1.2.13-r3", type="apk")
    assert 'data-search="done"' in dom, dom
    assert re.findall(r'data-search-image="([^"]+)"', dom) == [f"{fleet['one'][0]}:1.0"]
    assert "apk zlib 1.2.13-r1" in dom

    # A dedup answer (same digest, same DB) changes nothing: the same findings, the same since.
    again = scan(query_env, day1, fleet["one"], "fq-one-again", AT + timedelta(hours=1), "watch")
    assert again.reused_from == "fq-one"
    assert by_repository(cve(api, CVE_A))["one"]["since-audit"] == "fq-one"

    # Day 2's DB fixes CVE-A in zlib r3: the inventory rescan of two takes it out of the answer.
    rescan = scan(query_env, day2, fleet["two"], "fq-two-rescan", AT + timedelta(days=1), "rescan")
    assert rescan.rescanned_from == "fq-two"
    rows = by_repository(cve(api, CVE_A))
    assert set(rows) == {"one"} and rows["one"]["since-audit"] == "fq-one"
    assert set(by_repository(cve(api, CVE_B))) == {"two"}
    assert set(by_repository(package(api, "zlib"))) == {"one", "two"}  # still installed

    # An image that leaves the fleet leaves the answers.
    tables = QueryTables(fleet_tables_connection(None), load_config().settings)
    assert forget_image(tables, f"{fleet['one'][0]}:1.0") > 0
    assert cve(api, CVE_A)["images"] == [] and set(by_repository(package(api, "zlib"))) == {"two"}

    # rebuild_queries (reindex's seam) brings an image back from its stored meta, report and inventory.
    assert forget_image(tables, f"{fleet['two'][0]}:1.0") > 0 and cve(api, CVE_B)["images"] == []
    index = AuditIndex(audits.sas_url, query_env.short_id)
    assert rebuild_queries(tables, rescan, index.read_chunks).result == "recorded"
    assert set(by_repository(cve(api, CVE_B))) == {"two"} and cve(api, CVE_A)["images"] == []
    assert set(by_repository(package(api, "zlib"))) == {"two"}


@pytest.mark.parametrize(("route", "value", "params", "field"), [
    ("id", "CVE-20x-1", {}, "id"),
    ("id", "GHSA-zzzz-zzzz-zzzz", {}, "id"),
    ("id", "CVE-2099-7701", {"limit": "100000"}, "limit"),
    ("id", "CVE-2099-7701", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
    ("name", "log4j\x00core", {}, "name"),
    ("name", "x" * 300, {}, "name"),
    ("name", "log4j-core", {"version": "<<2"}, "version"),
    ("name", "log4j-core", {"type": "Maven/../x"}, "type"),
])  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(query_env, azurite, route, value, params, field):
    api = make_api(azurite)
    handler = vulnerability_images if route == "id" else package_images
    error = error_of(handler(http("GET", "x", route_params={route: quote(value, safe="")}, params=params), api), 400)
    assert error["field"] == field and error["message"]


def test_a_hostile_but_valid_name_is_answered(query_env, azurite):
    api = make_api(azurite)
    assert package(api, "@scope/pkg#1?x=%2F~7E")["images"] == []


def finding(vulnerability_id: str, version: str) -> Finding:
    return Finding(vulnerability_id=vulnerability_id, pkg_name="zlib", installed_version=version,
                   fixed_version="9", severity="HIGH")  # fmt: skip


def test_the_writer_writes_only_changes_and_never_lets_an_older_audit_win(query_env, azurite):
    tables = QueryTables(fleet_tables_connection(None), load_config().settings)
    image = f"registry.example/w{uuid.uuid4().hex[:8]}/app:1.0"

    def meta(audit_id: str, at: int) -> AuditMeta:
        return AuditMeta(audit_id=audit_id, scanner_id="s", scanner_version="1", timestamp=at, requested_at=at,
                         audit_result=AuditResult.SUCCEEDED, image=image, image_digest="sha256:" + "a" * 64)

    ids = [f"CVE-2099-78{n:02d}" for n in range(3)]
    first = tables.record(meta("w1", 100), lambda: [finding(i, "1") for i in ids], lambda: [])
    assert (first.result, first.written, first.deleted) == ("recorded", 3, 0)
    same = tables.record(meta("w2", 200), lambda: [finding(i, "1") for i in ids], lambda: [])
    assert (same.result, same.written, same.deleted) == ("recorded", 0, 0)
    fixed = tables.record(meta("w3", 300), lambda: [finding(ids[0], "1"), finding(ids[1], "2")], lambda: [])
    assert (fixed.written, fixed.deleted) == (1, 1)
    assert tables.record(meta("w0", 150), lambda: [], lambda: []).result == "older"
    assert tables.record(meta("w3", 300), lambda: [], lambda: []).result == "unchanged"
    rows = list(tables.tables[VULNERABILITY_TABLE].query_entities("PartitionKey eq @p", parameters={"p": ids[1]}))
    assert [(r["since-audit"], r["image"]) for r in rows] == [("w1", image)]
    assert list(tables.tables[VULNERABILITY_TABLE].query_entities("PartitionKey eq @p", parameters={"p": ids[2]})) == []
    # Named per scanner, as the fleet state is: another deployment on the same account sees none of it.
    other = QueryTables(tables.connection, load_config().settings.model_copy(update={"fleet_table_prefix": "other"}))
    assert other.tables[VULNERABILITY_TABLE].table_name.startswith("other")
    assert list(other.tables[VULNERABILITY_TABLE].query_entities("PartitionKey eq @p", parameters={"p": ids[1]})) == []


def test_bulk_writing_leaves_the_same_reverse_index_as_one_audit_at_a_time(query_env, azurite):
    """``record_new_images`` (the bench, a first reindex): the next audit of the same findings writes nothing."""
    tables = QueryTables(fleet_tables_connection(None), load_config().settings)
    base = f"registry.example/b{uuid.uuid4().hex[:8]}"
    metas = [AuditMeta(audit_id=f"b{n}", scanner_id="s", scanner_version="1", timestamp=100, requested_at=100,
                       audit_result=AuditResult.SUCCEEDED, image=f"{base}/app{n}:1.0") for n in range(3)]  # fmt: skip
    packages = [InstalledPackage(type="maven", name="log4j-core", version="2.14.1", group="org.apache.logging.log4j")]
    written = tables.record_new_images([(m, [finding("CVE-2099-7901", "1")], packages) for m in metas])
    assert written == 3 * (2 + 2 + 1)  # per image: two entities, their two reverse-index items, the ~image row
    mine = [f"{base}/app{n}:1.0" for n in range(3)]
    for name in ("log4j-core", "org.apache.logging.log4j:log4j-core", "LOG4J-CORE"):
        found = images_with_package(tables, name, 1000, None, versions=parse_version_range("<2.17.0"))
        assert [row["image"] for row in found.rows if row["image"] in mine] == mine, name
    assert [r for r in images_with_package(tables, "other.group:log4j-core", 1000, None).rows if r["image"] in mine] == []
    again = tables.record(metas[0].model_copy(update={"audit_id": "b0-again", "requested_at": 200}),
                          lambda: [finding("CVE-2099-7901", "1")], lambda: packages)  # fmt: skip
    assert (again.result, again.written, again.deleted) == ("recorded", 0, 0)


def test_version_ranges():
    assert "2.14.1" in parse_version_range("<2.17.0")
    assert "2.17.0" not in parse_version_range("<2.17.0")
    assert "1.5" in parse_version_range(">=1.0, <2") and "2.0" not in parse_version_range(">=1.0,<2")
    assert "2.36-9+deb12u4" in parse_version_range("<2.36-10")  # not PEP 440: natural order
    assert "1.2.13-r5" not in parse_version_range("<1.2.13-r3")
    with pytest.raises(ValueError, match="clause"):
        parse_version_range("~=1.0")
