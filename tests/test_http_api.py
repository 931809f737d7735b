"""The HTTP API with real requests objects, real Azurite (queue and blobs), real
trivy scans and a real registry."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from scanner_core.audit import AuditOutcome, ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import (
    ApiContext,
    get_audit,
    request_scan,
    request_scan_by_path,
    security_summary,
    serve,
)
from scanner_core.queue import QueueEncoding, request_from_message
from scanner_core.storage import AuditIndex, audit_folder
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, expected_findings
from tests.test_audit_index import expected_category, folder_of, record_many, synthetic_meta

BASE_URL = "http://localhost:7071/api"


def make_api(azurite, encoding: QueueEncoding = "none") -> ApiContext:
    return ApiContext(
        config=load_config(),
        queue_connection=azurite.connection_string,
        queue_name=f"scans-{uuid.uuid4().hex[:12]}",
        message_encoding=encoding,
    )


@pytest.fixture
def api(scanner_env, azurite) -> ApiContext:
    return make_api(azurite)


def http(
    method: str,
    route: str,
    *,
    route_params: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    body: bytes | dict[str, Any] = b"",
) -> func.HttpRequest:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    query = "?" + "&".join(f"{k}={v}" for k, v in (params or {}).items()) if params else ""
    return func.HttpRequest(
        method=method,
        url=f"{BASE_URL}/{route}{query}",
        headers={"content-type": "application/json"} if data else {},
        params=params or {},
        route_params=route_params or {},
        body=data,
    )


def answer(response: func.HttpResponse, status: int) -> dict[str, Any]:
    document = json.loads(response.get_body())
    assert response.status_code == status, document
    assert response.mimetype == "application/json"
    return document


def error_of(response: func.HttpResponse, status: int) -> dict[str, Any]:
    document = answer(response, status)
    assert set(document) == {"error"} and set(document["error"]) == {"code", "field", "message"}
    return document["error"]


def queued(api: ApiContext) -> list[Any]:
    """Every message on the API's queue, read back with the plain SDK (no decoding)."""
    with QueueClient.from_connection_string(api.queue_connection, api.queue_name) as client:
        try:
            return list(client.receive_messages(max_messages=32, visibility_timeout=60))
        except ResourceNotFoundError:
            return []


def scan_request_of(message: Any) -> ScanRequest:
    return request_from_message(message.content.encode("utf-8"), message.id, message.inserted_on)


# -- requesting scans --------------------------------------------------------


@pytest.mark.parametrize("encoding", ["none", "base64"])
def test_path_form_queues_a_valid_message_and_says_where_results_land(scanner_env, azurite, encoding):
    api = make_api(azurite, encoding)
    before = int(time.time())
    response = request_scan_by_path(
        http(
            "POST",
            "images/redis/7.2-alpine/scan",
            route_params={"name": "redis", "tag": "7.2-alpine"},
            params={"audit-id": "manual-1", "code": "a-function-key"},
        ),
        api,
    )

    body = answer(response, 202)
    assert body["audit-id"] == "manual-1" and body["image"] == "redis:7.2-alpine" and body["status"] == "queued"
    assert body["queue"] == api.queue_name
    assert response.headers["Location"] == body["links"]["audit"] == "/api/audits/manual-1"

    [message] = queued(api)
    assert message.id == body["message-id"]
    if encoding == "base64":
        assert json.loads(base64.b64decode(message.content))["payload"]["image-scan-id"] == "manual-1"
    else:
        assert json.loads(message.content)["payload"]["image-full-name"] == "redis:7.2-alpine"
    request = scan_request_of(message)
    assert (request.audit_id, request.image) == ("manual-1", "redis:7.2-alpine")
    assert before <= request.requested_at.timestamp() <= time.time()
    assert body["requested-at"] == request.requested_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    folder = audit_folder(scanner_env.short_id, request.requested_at, "manual-1")
    assert body["results"] == {"folder": folder, "meta": f"{folder}/meta", "report": f"{folder}/scan-result.json"}


@pytest.mark.parametrize(
    ("name", "tag", "image"),
    [
        ("library%2Fredis", "7.2-alpine", "library/redis:7.2-alpine"),
        ("myacr.azurecr.io%2Fteam%2Fapp", "1.0", "myacr.azurecr.io/team/app:1.0"),
        ("redis", "sha256:" + "a" * 64, "redis@sha256:" + "a" * 64),
    ],
)
def test_path_form_takes_an_encoded_name_or_a_digest(api, name, tag, image):
    body = answer(request_scan_by_path(http("POST", "x", route_params={"name": name, "tag": tag}), api), 202)
    assert body["image"] == image
    assert scan_request_of(queued(api)[0]).image == image


def test_json_form_takes_a_full_reference_and_defaults_the_audit_id(api):
    image = "registry.example.com:5443/team/app:1.0@sha256:" + "b" * 64
    body = answer(request_scan(http("POST", "scans", body={"image": image}), api), 202)

    assert uuid.UUID(body["audit-id"])
    [message] = queued(api)
    request = scan_request_of(message)
    assert (request.audit_id, request.image) == (body["audit-id"], image)


@pytest.mark.parametrize(
    ("handler", "route_params", "body", "field", "says"),
    [
        ("json", {}, {"image": "Team/App:1.0"}, "image", "lowercase"),
        ("json", {}, {"image": "app@sha256:123"}, "image", "invalid digest"),
        ("json", {}, {"image": "--help"}, "image", "must not start with '-'"),
        ("json", {}, {"image": "redis:7", "audit-id": "../x"}, "audit-id", "[A-Za-z0-9._-]"),
        ("path", {"name": "Team", "tag": "1.0"}, b"", "name", "lowercase"),
        ("path", {"name": "redis:7", "tag": "1.0"}, b"", "name", "the tag goes in the {tag} segment"),
        ("path", {"name": "redis", "tag": "bad tag"}, b"", "tag", "white space"),
        ("path", {"name": "redis", "tag": ".hidden"}, b"", "tag", "invalid tag"),
    ],
)
def test_a_malformed_reference_is_a_400_naming_the_field(api, handler, route_params, body, field, says):
    request = http("POST", "scans", route_params=route_params, body=body)
    response = (request_scan if handler == "json" else request_scan_by_path)(request, api)
    error = error_of(response, 400)
    assert (error["code"], error["field"]) == ("invalid-field", field)
    assert says in error["message"]
    assert queued(api) == []


@pytest.mark.parametrize(
    ("body", "code", "field", "says"),
    [
        (b"", "invalid-json", None, "body is empty"),
        (b"{not json", "invalid-json", None, "not valid JSON"),
        (b"\xff\xfe", "invalid-json", None, "not valid JSON"),
        (b'["redis:7"]', "invalid-json", None, "must be a JSON object"),
        (b'{"audit-id": "x"}', "missing-field", "image", "is required"),
        (b'{"image": 5}', "invalid-field", "image", "must be a string"),
        (b'{"image": "redis:7", "audit-id": 12}', "invalid-field", "audit-id", "must be a string"),
        (b'{"image": "redis:7", "imageName": "x"}', "unknown-field", "imageName", "allowed fields: image, audit-id"),
    ],
)
def test_wrong_json_is_a_400(api, body, code, field, says):
    error = error_of(request_scan(http("POST", "scans", body=body), api), 400)
    assert (error["code"], error["field"]) == (code, field)
    assert says in error["message"]
    assert queued(api) == []


def test_a_wrong_method_is_a_405_with_allow(api):
    response = request_scan(http("GET", "scans"), api)
    assert error_of(response, 405)["code"] == "method-not-allowed"
    assert response.headers["Allow"] == "POST"
    assert error_of(get_audit(http("DELETE", "audits/x", route_params={"audit_id": "x"}), api), 405)


def test_an_unusable_queue_is_a_503_without_its_secret(api, azurite):
    bad = f"{azurite.queue_endpoint}/{api.queue_name}?sv=2021-08-06&sp=a&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
    broken = ApiContext(api.config, bad, api.queue_name, "none")
    response = request_scan(http("POST", "scans", body={"image": "redis:7"}), broken)
    error = error_of(response, 503)
    assert error["code"] == "queue-unavailable"
    assert b"c2VjcmV0" not in response.get_body()


def test_serve_builds_the_context_from_the_app_settings(scanner_env, azurite, tmp_path):
    """As the function app runs it: queue and encoding from the app settings and host.json."""
    (tmp_path / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"queues": {"messageEncoding": "base64"}}})
    )
    queue_name = f"scans-{uuid.uuid4().hex[:12]}"
    scanner_env.set(
        SCAN_QUEUE_CONNECTION="ScanQueueStorage", ScanQueueStorage=azurite.connection_string, SCAN_QUEUE_NAME=queue_name
    )
    body = answer(serve(request_scan, http("POST", "scans", body={"image": "redis:7"}), tmp_path), 202)

    api = make_api(azurite)
    [message] = queued(ApiContext(api.config, azurite.connection_string, queue_name, "base64"))
    assert json.loads(base64.b64decode(message.content))["payload"]["image-scan-id"] == body["audit-id"]


def test_serve_answers_a_bad_configuration_with_a_500_naming_the_setting(scanner_env, tmp_path):
    scanner_env.unset("SCANNER_IDENTIFIER")
    response = serve(get_audit, http("GET", "audits/a", route_params={"audit_id": "a"}), tmp_path)
    error = error_of(response, 500)
    assert error["code"] == "configuration-error" and "SCANNER_IDENTIFIER" in error["message"]
    assert b"sig=" not in response.get_body()


# -- reading audits ----------------------------------------------------------


def scan_and_index(api: ApiContext, request: ScanRequest) -> AuditOutcome:
    """The core's scan: it records the audit in the index right after its meta."""
    outcome = Scanner(load_config()).scan(request)
    assert outcome.meta_written
    return outcome


def test_audit_of_a_real_tarball_scan(api, audits, sample_image):
    outcome = scan_and_index(
        api, ScanRequest(audit_id="tarball-1", requested_at=datetime.now(timezone.utc), input_tar=sample_image.path)
    )
    assert outcome.succeeded, outcome.failure

    response = get_audit(http("GET", "audits/tarball-1", route_params={"audit_id": "tarball-1"}), api)
    meta = answer(response, 200)
    assert response.get_body() == audits.read(outcome.meta_path)  # verbatim, as the core wrote it
    assert meta["audit-id"] == "tarball-1" and meta["audit-result"] == "succeeded"
    assert meta["vulnerabilities"] == outcome.meta.vulnerabilities
    assert meta["vulnerabilities"]["total"] == len(expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES))
    assert (meta["scan-status"], meta["summary"]) == (outcome.meta.scan_status, outcome.meta.summary)


def test_request_scan_then_queue_then_scan_then_audit(api, scanner_env, registry, pushed_sample, audits):
    """The whole loop: what the 202 promised is where the scan of its message lands."""
    scanner_env.write_config(
        {
            "registries": [
                {
                    "address": registry.address,
                    "username": registry.username,
                    "password": registry.password,
                    "insecure": True,
                }
            ]
        }
    )
    promised = answer(request_scan(http("POST", "scans", body={"image": pushed_sample.reference}), api), 202)

    outcome = scan_and_index(api, scan_request_of(queued(api)[0]))

    assert outcome.succeeded, outcome.failure
    assert outcome.folder == promised["results"]["folder"]
    results = audits.names()
    # The folder also keeps the image's inventory for rescans (issue 18, RESCAN_FROM=inventory).
    inventory = f"{promised['results']['folder']}/sbom.cdx.json"
    assert results == [promised["results"]["meta"], inventory, promised["results"]["report"]]
    audit_id = promised["audit-id"]
    meta = answer(get_audit(http("GET", promised["links"]["audit"], route_params={"audit_id": audit_id}), api), 200)
    assert meta["image"] == pushed_sample.reference and meta["image-digest"] == pushed_sample.digest
    assert meta["trivy-audit-path"] == promised["results"]["report"]


def test_unknown_audit_is_404_and_invalid_id_is_400(api):
    error = error_of(get_audit(http("GET", "audits/nope", route_params={"audit_id": "nope"}), api), 404)
    assert (error["code"], error["field"]) == ("not-found", "audit-id")
    assert "'nope'" in error["message"]

    error = error_of(get_audit(http("GET", "audits/x", route_params={"audit_id": "bad id!"}), api), 400)
    assert (error["code"], error["field"]) == ("invalid-field", "audit-id")
    assert "[A-Za-z0-9._-]" in error["message"]


def test_storage_refusing_is_a_503_without_the_sas(scanner_env, azurite, audits):
    sas = audits.sas_url
    scanner_env.set(AZ_BLOB_STORAGE_SAS=sas.replace("sig=", "sig=AAAA"))
    api = make_api(azurite)
    response = get_audit(http("GET", "audits/a", route_params={"audit_id": "a"}), api)
    error = error_of(response, 503)
    assert error["code"] == "storage-unavailable" and "HTTP 403" in error["message"]
    assert b"sig=" not in response.get_body()


# -- the summary -------------------------------------------------------------


def summary_pages(api: ApiContext, limit: int, **params: str) -> list[dict[str, Any]]:
    pages, cursor = [], None
    while True:
        query = {"limit": str(limit), **params} | ({"cursor": cursor} if cursor else {})
        page = answer(security_summary(http("GET", "security/summary", params=query), api), 200)
        pages.append(page)
        cursor = page["next-cursor"]
        if cursor is None:
            assert page["links"]["next"] is None
            return pages
        assert page["links"]["next"].startswith("/api/security/summary?limit=")


def test_summary_pages_through_synthetic_and_real_audits(api, audits, scanner_env, sample_image):
    synthetic = [synthetic_meta(i) for i in range(250)]  # 250 images (one tag each)
    with api.audit_index() as index:
        record_many(index, synthetic, scanner_env.short_id)
    record_states(api, synthetic, scanner_env.short_id)
    real = [
        scan_and_index(
            api,
            ScanRequest(
                audit_id=f"real-{n}",
                requested_at=datetime.now(timezone.utc),
                input_tar=sample_image.path,
                image=f"registry.example.com/team/app:{n}",
            ),
        )
        for n in (1, 2)
    ]

    pages = summary_pages(api, 100)

    assert [len(p["audits"]) for p in pages] == [100, 100, 52]
    rows = [row for page in pages for row in page["audits"]]
    ids = [row["audit-id"] for row in rows]
    assert len(set(ids)) == len(ids) == 252
    assert set(ids) == {m.audit_id for m in synthetic} | {"real-1", "real-2"}
    keys = [(row["requested-at"], row["audit-id"]) for row in rows]
    assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)  # newest first

    expected = Counter(expected_category(m) for m in synthetic) + Counter(o.meta.scan_status for o in real)
    first = pages[0]
    assert {k: first[k] for k in ("total", "passed", "warning", "failed", "audit-failed")} == {
        "total": 252,
        **{c: expected[c] for c in ("passed", "warning", "failed", "audit-failed")},
    }
    assert all("total" not in p for p in pages[1:])  # totals: first page only, unless asked for

    newest = {row["audit-id"]: row for row in first["audits"][:2]}
    for outcome in real:
        row = newest[outcome.meta.audit_id]
        assert row["image"] == outcome.meta.image
        assert (row["scan-status"], row["vulnerabilities"], row["summary"]) == (
            outcome.meta.scan_status,
            outcome.meta.vulnerabilities,
            outcome.meta.summary,
        )
        assert row["meta"] == outcome.meta_path
        assert row["scanned-at"] == datetime.fromtimestamp(outcome.meta.timestamp, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        assert (
            answer(get_audit(http("GET", row["links"]["audit"], route_params={"audit_id": row["audit-id"]}), api), 200)[
                "audit-id"
            ]
            == row["audit-id"]
        )
    failed = next(row for row in rows if row["audit-result"] == "audit-failed")
    assert failed["scan-status"] is None and failed["failure-reason"] == "not-found"

    with_totals = summary_pages(api, 100, totals="true")
    assert all(p["total"] == 252 for p in with_totals)


def record_states(api: ApiContext, metas: list, short_id: str) -> None:
    """The images' state, as the ship stage writes it after each meta."""
    state = api.fleet_state()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda meta: state.record(meta, folder_of(meta, short_id)), metas))


def test_summary_totals_count_each_image_once_from_the_snapshot(api, scanner_env, monkeypatch):
    """Issue 24: the totals are the fleet's images by their latest audit (one point read of the
    fleet snapshot), not every audit the index ever recorded (the old path walked it)."""
    image = "registry.example.com/team/api:1.0"
    metas = [synthetic_meta(i, audit_id=f"api-{i}", image=image, requested_at=1_790_000_000 + n * 60)
             for n, i in enumerate((6, 1, 2))]  # audit-failed, then warning, then the latest: failed
    other = synthetic_meta(3, audit_id="other", image="registry.example.com/team/web:2.0")  # passed
    with api.audit_index() as index:
        record_many(index, [*metas, other], scanner_env.short_id)
    record_states(api, [*metas, other], scanner_env.short_id)
    monkeypatch.setattr(AuditIndex, "totals", lambda self: pytest.fail("the summary walked the audit index"))
    monkeypatch.setattr(AuditIndex, "rows", lambda self: pytest.fail("the summary walked the audit index"))

    first = answer(security_summary(http("GET", "security/summary"), api), 200)

    assert {k: first[k] for k in ("total", "passed", "warning", "failed", "audit-failed")} == {
        "total": 2, "passed": 1, "warning": 0, "failed": 1, "audit-failed": 0}
    assert first["totals-at"].endswith("Z") and len(first["audits"]) == 4  # the page still lists audits
    state = api.fleet_state()
    state.record(synthetic_meta(8, audit_id="web-2", image="registry.example.com/team/web:3.0",
                                requested_at=1_790_001_000), "trivy-x/web-2")
    again = answer(security_summary(http("GET", "security/summary"), api), 200)
    assert again["total"] == 2  # the stored snapshot, until the heartbeat timer takes the next


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"limit": "0"}, "limit", "1 to 1000"),
        ({"limit": "ten"}, "limit", "1 to 1000"),
        ({"limit": "1001"}, "limit", "1 to 1000"),
        ({"cursor": "garbage"}, "cursor", "next-cursor"),
        ({"totals": "maybe"}, "totals", "true or false"),
    ],
)
def test_summary_refuses_bad_parameters(api, params, field, says):
    error = error_of(security_summary(http("GET", "security/summary", params=params), api), 400)
    assert (error["code"], error["field"]) == ("invalid-field", field)
    assert says in error["message"]


def test_summary_of_an_empty_index(api):
    page = answer(security_summary(http("GET", "security/summary", params={"code": "key"}), api), 200)
    assert page.pop("totals-at").endswith("Z")
    assert page == {
        "total": 0,
        "passed": 0,
        "warning": 0,
        "failed": 0,
        "audit-failed": 0,
        "audits": [],
        "limit": 50,
        "next-cursor": None,
        "links": {"next": None},
    }


def test_summary_timings_with_2000_audits(api, scanner_env, capsys):
    """Figures only (printed); no timing asserts."""
    with api.audit_index() as index:
        started = time.perf_counter()
        record_many(index, [synthetic_meta(i) for i in range(2000)], scanner_env.short_id)
        record_seconds = time.perf_counter() - started

    def timed(**params: str) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        page = answer(security_summary(http("GET", "security/summary", params=params), api), 200)
        return time.perf_counter() - started, page

    first_seconds, first = timed(limit="50")
    later_seconds, _ = timed(limit="50", cursor=first["next-cursor"])
    forced_seconds, _ = timed(limit="50", cursor=first["next-cursor"], totals="true")
    started = time.perf_counter()
    answer(get_audit(http("GET", "audits/x", route_params={"audit_id": "synthetic-01000"}), api), 404)
    lookup_seconds = time.perf_counter() - started  # the pointer exists, the synthetic meta does not
    assert first["total"] == 0  # the fleet's images (their state); the index's 2,000 audits are history
    with capsys.disabled():
        print(
            f"\n[summary endpoint, 2000 audits, Azurite] first page of 50 with totals: {first_seconds * 1000:.0f} ms; "
            f"next page: {later_seconds * 1000:.0f} ms; next page with totals=true: {forced_seconds * 1000:.0f} ms; "
            f"audit lookup (HEAD + GET): {lookup_seconds * 1000:.0f} ms; "
            f"recording 2000 (16 threads): {record_seconds:.1f} s"
        )


def test_the_path_route_applies_the_allowlist_to_the_whole_reference(api, scanner_env):
    """Issue 23, item 8: a {tag} of "80/latest" turned {name} into a registry host."""
    scanner_env.set(ALLOWED_REGISTRIES="docker.io,registry.example.com")
    params = {"name": "169.254.169.254", "tag": "80%2Flatest"}
    error = error_of(request_scan_by_path(http("POST", "x", route_params=params), api), 400)
    assert (error["code"], error["field"]) == ("invalid-field", "tag") and "no '/'" in error["message"]
    params = {"name": "registry.example.org%2Fteam%2Fapp", "tag": "1.0"}
    error = error_of(request_scan_by_path(http("POST", "x", route_params=params), api), 400)
    assert (error["code"], error["field"]) == ("registry-not-allowed", "name")
    assert queued(api) == []


@pytest.mark.parametrize("route", ["scans", "approve", "evaluate"])
def test_a_deeply_nested_body_is_a_400_on_every_json_route(api, route):
    """Issue 23, item 10: 100,000 '[' made json.loads raise RecursionError (a 500)."""
    from scanner_core.functions import approve, evaluate_policy

    body = b"[" * 100_000 + b"]" * 100_000
    request = func.HttpRequest(method="POST", url=f"{BASE_URL}/{route}", headers={"If-Match": '"0x1"'},
                               route_params={"approval_id": "ap-" + "0" * 24}, body=body)  # fmt: skip
    handler = {"scans": request_scan, "approve": approve, "evaluate": evaluate_policy}[route]
    error = error_of(handler(request, api), 400)
    assert error["code"] == "invalid-json" and "nested too deeply" in error["message"]
    assert queued(api) == []


def test_an_audit_id_ending_in_a_dot_is_refused(api):
    """Issue 23, item 11: Azure may drop a trailing dot, so "a." and "a" would share a folder."""
    error = error_of(request_scan(http("POST", "scans", body={"image": "redis:7", "audit-id": "audit."}), api), 400)
    assert error["field"] == "audit-id" and "not ending with '.'" in error["message"]
