"""The audit index against real Azurite: idempotent records, lookups, paging, totals."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from scanner_core.errors import RequestError
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.storage import MAX_IMAGE_CHARS, AuditIndex, InvalidCursor, audit_folder, encode_image

SHORT_ID = "0123abcd"
BASE_TIME = 1_790_000_000  # 2026-09-21
STATUSES = ("passed", "warning", "failed")


def synthetic_meta(
    i: int,
    *,
    audit_id: str | None = None,
    requested_at: int | None = None,
    result: AuditResult | None = None,
    image: str | None = None,
) -> AuditMeta:
    """Audit ``i``: a failed audit every 7th, otherwise a status cycling through ``STATUSES``."""
    requested = requested_at if requested_at is not None else BASE_TIME + 37 * i
    result = result or (AuditResult.AUDIT_FAILED if i % 7 == 6 else AuditResult.SUCCEEDED)
    fields: dict[str, object] = {}
    if result is not AuditResult.AUDIT_FAILED:
        counts = {"critical": i % 3, "high": i % 13, "medium": 5, "low": 9, "unknown": i % 2}
        fields = {
            "vulnerabilities": counts | {"total": sum(counts.values())},
            "scan_status": STATUSES[i % 3],
            "summary": "synthetic",
        }
    else:
        fields = {"failure_reason": "not-found", "failure_kind": "permanent", "failure_description": "no such tag"}
    return AuditMeta(
        audit_id=audit_id or f"synthetic-{i:05d}",
        scanner_id="0123abcd-0000-4000-8000-000000000000",
        scanner_version="test",
        timestamp=requested + 20,
        requested_at=requested,
        audit_result=result,
        image=image or f"registry.example.com/team/app-{i % 17}:1.{i}",
        **fields,  # type: ignore[arg-type]
    )


def folder_of(meta: AuditMeta, short_id: str = SHORT_ID) -> str:
    return audit_folder(short_id, datetime.fromtimestamp(meta.requested_at, timezone.utc), meta.audit_id)


def expected_category(meta: AuditMeta) -> str:
    return "audit-failed" if meta.audit_result is not AuditResult.SUCCEEDED else str(meta.scan_status)


def record_many(index: AuditIndex, metas: Iterable[AuditMeta], short_id: str = SHORT_ID) -> None:
    """Records concurrently, as several function instances would."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda meta: index.record(meta, folder_of(meta, short_id)), metas))


@pytest.fixture
def index(audits) -> Iterator[AuditIndex]:
    with AuditIndex(audits.sas_url, SHORT_ID) as opened:
        yield opened


def index_blobs(audits) -> list[str]:
    return [name for name in audits.all_names() if name.startswith(f"trivy-{SHORT_ID}/index/")]


def test_record_find_and_row_round_trip(index, audits):
    meta = synthetic_meta(1, image="registry.example.com/t\u00e9am/app:1.0 100%")
    folder = folder_of(meta)
    index.record(meta, folder)

    assert index.find(meta.audit_id) == f"{folder}/meta"
    assert index.find("never-recorded") is None
    rows, cursor = index.page(10)
    assert cursor is None and len(rows) == 1
    row = rows[0]
    assert (row.audit_id, row.folder, row.requested_at, row.scanned_at) == (
        meta.audit_id,
        folder,
        meta.requested_at,
        meta.timestamp,
    )
    assert (row.audit_result, row.scan_status, row.vulnerabilities) == ("succeeded", "warning", meta.vulnerabilities)
    assert row.image == meta.image  # percent-encoded in the metadata, decoded back
    assert row.summary == "WARNING: 1 critical, 1 high, 5 medium, 9 low, 1 unknown vulnerabilities"
    for name in index_blobs(audits):
        stored = audits.client.get_blob_client(name).get_blob_properties()
        assert stored.size == 0
        assert all(value.isascii() for value in stored.metadata.values())


def test_a_redelivered_record_replaces_and_never_duplicates(index, audits):
    first = synthetic_meta(2, result=AuditResult.UPLOAD_FAILED)
    again = synthetic_meta(2)  # the redelivery: same request, now succeeded
    index.record(first, folder_of(first))
    index.record(again, folder_of(again))
    index.record(again, folder_of(again))

    rows, _ = index.page(10)
    assert [(r.audit_id, r.audit_result) for r in rows] == [(again.audit_id, "succeeded")]
    assert len(index_blobs(audits)) == 3  # one .row by time, one by repository, one .ref
    assert index.totals() == {"total": 1, "passed": 0, "warning": 0, "failed": 1, "audit-failed": 0}


def test_a_reused_audit_id_shows_its_newest_request_whatever_the_order(index, audits):
    image = "registry.example.com/team/app-3:1.3"
    old = synthetic_meta(3, audit_id="reused", requested_at=BASE_TIME, image=image)
    new = synthetic_meta(4, audit_id="reused", requested_at=BASE_TIME + 3600, image=image)
    index.record(old, folder_of(old))
    index.record(new, folder_of(new))
    index.record(old, folder_of(old))  # the older scan finishing late

    rows, _ = index.page(10)
    assert [(r.audit_id, r.requested_at) for r in rows] == [("reused", new.requested_at)]
    assert index.find("reused") == f"{folder_of(new)}/meta"
    assert len(index_blobs(audits)) == 3
    [repository_row] = index.repository_rows("registry.example.com/team/app-3")
    assert (repository_row.requested_at, repository_row.tag) == (new.requested_at, "1.3")


def test_an_audit_id_reused_for_another_image_deletes_none_of_its_rows(index, audits):
    """Issue 23: the earlier audit keeps its rows (the summary and its history still list it);
    the id's pointer follows the newer request (the HTTP API refuses such a re-use with 409)."""
    old = synthetic_meta(3, audit_id="other", requested_at=BASE_TIME)
    new = synthetic_meta(4, audit_id="other", requested_at=BASE_TIME + 3600)
    index.record(old, folder_of(old))
    index.record(new, folder_of(new))

    rows, _ = index.page(10)
    assert [(r.audit_id, r.requested_at) for r in rows] == [("other", new.requested_at), ("other", old.requested_at)]
    assert index.find("other") == f"{folder_of(new)}/meta"
    [kept] = index.repository_rows("registry.example.com/team/app-3")
    assert kept.requested_at == old.requested_at


def test_forget_removes_row_and_pointer(index, audits):
    kept, dropped = synthetic_meta(5), synthetic_meta(6)
    record_many(index, [kept, dropped])
    index.forget(dropped.audit_id)
    index.forget("never-recorded")

    assert index.find(dropped.audit_id) is None
    assert [r.audit_id for r in index.page(10)[0]] == [kept.audit_id]
    assert len(index_blobs(audits)) == 3


def test_bad_input_is_refused_with_the_field_named(index):
    with pytest.raises(RequestError, match=r"^audit-id: "):
        index.find("../etc")
    with pytest.raises(InvalidCursor, match=r"^cursor: "):
        index.page(10, "not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        index.page(0)


def test_long_and_non_ascii_images_fit_the_metadata():
    encoded = encode_image("r\u00e9gistry.example.com/" + "\u00e9" * 2000)
    assert encoded.isascii() and len(encoded) <= MAX_IMAGE_CHARS
    assert encode_image("docker.io/library/redis:7.2-alpine") == "docker.io/library/redis:7.2-alpine"


def test_rebuild_indexes_metas_written_before_the_index(index, audits):
    metas = [synthetic_meta(i) for i in range(5)]
    for meta in metas:
        audits.client.upload_blob(f"{folder_of(meta)}/meta", meta.to_json_bytes())
    audits.client.upload_blob(f"trivy-{SHORT_ID}/trivy-{SHORT_ID}.meta", b"{}")  # the heartbeat: not an audit

    assert index.rebuild() == 5
    rows, _ = index.page(10)
    assert [r.audit_id for r in rows] == [m.audit_id for m in reversed(metas)]


def test_pages_are_newest_first_complete_and_cheap(index, capsys):
    metas = [synthetic_meta(i) for i in range(2000)]
    record_many(index, metas)

    seen: list[str] = []
    cursor: str | None = None
    page_seconds: list[float] = []
    while True:
        started = time.perf_counter()
        rows, cursor = index.page(100, cursor)
        page_seconds.append(time.perf_counter() - started)
        seen += [row.audit_id for row in rows]
        if cursor is None:
            break
    newest_first = [m.audit_id for m in sorted(metas, key=lambda m: m.requested_at, reverse=True)]
    assert seen == newest_first  # the order, no duplicates, nothing missed

    started = time.perf_counter()
    totals = index.totals()
    totals_seconds = time.perf_counter() - started
    expected = {"total": 2000} | {c: 0 for c in ("passed", "warning", "failed", "audit-failed")}
    for meta in metas:
        expected[expected_category(meta)] += 1
    assert totals == expected

    started = time.perf_counter()
    index.find("synthetic-01234")
    find_seconds = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\n[audit index, 2000 rows, Azurite] page of 100: median {sorted(page_seconds)[10] * 1000:.0f} ms "
            f"(max {max(page_seconds) * 1000:.0f} ms, {len(page_seconds)} pages); "
            f"totals: {totals_seconds * 1000:.0f} ms; find: {find_seconds * 1000:.1f} ms"
        )


def test_an_audit_recorded_with_a_trailing_dot_still_reads(index):
    """Issue 23: new ids may not end in '.', but audits recorded before the rule keep working."""
    meta = synthetic_meta(5, audit_id="legacy.")
    index.record(meta, folder_of(meta))
    assert index.find("legacy.") == f"{folder_of(meta)}/meta"
