"""Big reports (issue 11): the summary is computed from the bytes being uploaded,
blocks go up in parallel, and the result is the same as reading the file."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ReportUnreadable
from scanner_core.audit import ScanRequest, utc_now
from scanner_core.redact import Redactor
from scanner_core.storage import AzureBlobStore
from scanner_core.storage.blob import _ObservedReader
from scanner_core.trivy import ReportSummariser, summarise_report
from tests.support.images import build_alpine_image, large_fixture
from tests.support.trivy_db import build_trivy_db

MIB = 1024 * 1024


def test_observed_upload_shows_every_byte_once_and_stores_them_all(scanner_env, audits, tmp_path: Path) -> None:
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(9 * MIB // 32 + 5))  # > 2 blocks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    seen: list[bytes] = []
    store = AzureBlobStore(audits.sas_url, Redactor())
    store.upload_file_observed("x/blob.bin", path, "application/octet-stream", seen.append)
    assert b"".join(seen) == data
    assert audits.read("x/blob.bin") == data


def test_a_retried_attempt_passes_on_only_unseen_bytes() -> None:
    data = bytes(range(256)) * 100
    seen_bytes: list[bytes] = []
    seen = [0]
    first = _ObservedReader(io.BytesIO(data), seen_bytes.append, seen)
    first.read(1000)
    first.read(500)  # the attempt fails here; the next one starts over
    second = _ObservedReader(io.BytesIO(data), seen_bytes.append, seen)
    while second.read(700):
        pass
    assert b"".join(seen_bytes) == data
    assert not second.seekable()


def test_push_summary_equals_the_file_summary_for_any_chunking(tmp_path: Path, trivy_executable, scanner_env) -> None:
    packages, advisories = large_fixture(120, 3)
    cache = tmp_path / "cache"
    build_trivy_db(cache, advisories)
    image = build_alpine_image(tmp_path / "big.tar", packages)
    scanner_env.set(TRIVY_CACHE_DIR=str(cache))
    scanner = Scanner(load_config())
    outcome = scanner.scan(ScanRequest(audit_id="stream", requested_at=utc_now(), input_tar=image.path))
    assert outcome.succeeded, outcome.meta.failure_description
    report = tmp_path / "report.json"
    report.write_bytes(scanner.blob_store.download_bytes(outcome.meta.trivy_audit_path))
    expected = summarise_report(report)
    assert sum(expected.counts.values()) == 360
    assert outcome.summary is not None
    assert outcome.summary.counts == expected.counts
    assert outcome.summary.top_findings == expected.top_findings
    for size in (1, 7, 4096):
        summariser = ReportSummariser()
        raw = report.read_bytes()
        for start in range(0, len(raw), size if size > 1 else 997):
            summariser.feed(raw[start : start + (size if size > 1 else 997)])
        assert summariser.close() == expected


def test_a_report_that_is_not_json_fails_on_close_not_on_feed() -> None:
    summariser = ReportSummariser()
    summariser.feed(b'{"Results": [')
    summariser.feed(b"not json")  # never raises: it may run inside an upload
    with pytest.raises(ReportUnreadable, match="not trivy's JSON") as raised:
        summariser.close()
    with pytest.raises(ReportUnreadable) as again:
        summariser.close()
    assert again.value is raised.value
