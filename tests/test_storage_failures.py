"""Blob Storage going away during an audit: retries, then an honest meta or a
transient error. The outage is real (the Azurite process is stopped); only its
timing is arranged by the test, through a thin wrapper around the real store."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import AuditNotRecorded
from scanner_core.redact import Redactor
from scanner_core.storage import AzureBlobStore
from tests.support.azurite import Azurite

REQUESTED_AT = datetime(2026, 11, 22, 11, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def own_azurite(tmp_path) -> Azurite:
    """A private Azurite, so that stopping it disturbs no other test."""
    with Azurite(tmp_path / "azurite") as storage:
        storage.create_container("audits")
        yield storage


class OutageDuringReport:
    """Stops Azurite before the report upload and starts it again before ``meta``."""

    def __init__(self, store: AzureBlobStore, azurite: Azurite) -> None:
        self.store, self.azurite = store, azurite
        self.events: list[str] = []

    def upload_file(self, name: str, path: Path, content_type: str) -> None:
        self.azurite.stop()
        self.events.append(f"down for {name}")
        try:
            self.store.upload_file(name, path, content_type)
        finally:
            self.azurite.start()
            self.events.append("up again")

    def upload_bytes(self, name: str, data: bytes, content_type: str) -> None:
        self.store.upload_bytes(name, data, content_type)

    def download_bytes(self, name: str) -> bytes | None:
        return self.store.download_bytes(name)


def _scanner(scanner_env, azurite: Azurite, wrap=None) -> tuple[Scanner, AzureBlobStore]:
    sas = azurite.container_sas_url("audits")
    scanner_env.set(AZ_BLOB_STORAGE_SAS=sas)
    config = load_config()
    store = AzureBlobStore(sas, Redactor(config.secrets), backoff_multiplier=0.05, backoff_max=0.2)
    return Scanner(config, blob_store=wrap(store) if wrap else store), store


def test_report_upload_outage_gives_upload_failed_meta(scanner_env, sample_image, own_azurite):
    wrapper = None

    def wrap(store):
        nonlocal wrapper
        wrapper = OutageDuringReport(store, own_azurite)
        return wrapper

    scanner, store = _scanner(scanner_env, own_azurite, wrap)
    outcome = scanner.scan(ScanRequest(audit_id="outage", requested_at=REQUESTED_AT, input_tar=sample_image.path))

    assert wrapper.events == [f"down for {outcome.folder}/scan-result.json", "up again"]
    assert outcome.meta.audit_result.value == "upload-failed"
    assert outcome.retry_may_help  # the function app retries it
    meta = store.download_bytes(f"{outcome.folder}/meta")
    assert meta is not None
    text = meta.decode()
    assert '"audit-result": "upload-failed"' in text
    assert "after 5 attempts" in text and "storage endpoint unreachable" in text
    assert "trivy-audit-path" not in text  # the report is not there: no path to it
    assert store.download_bytes(f"{outcome.folder}/scan-result.json") is None
    assert "sig=" not in text.replace("sig=***", "")


def test_full_outage_raises_transient_and_leaks_no_sas(scanner_env, sample_image, own_azurite, caplog):
    scanner, _ = _scanner(scanner_env, own_azurite)
    own_azurite.stop()
    with pytest.raises(AuditNotRecorded) as caught:
        scanner.scan(ScanRequest(audit_id="dark", requested_at=REQUESTED_AT, input_tar=sample_image.path))
    own_azurite.start()
    assert caught.value.kind.value == "transient"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    signature = own_azurite.container_sas_url("audits").split("sig=")[1]
    assert "after 5 attempts" in str(caught.value)
    assert "meta could not be written" in caplog.text
    for text in (str(caught.value), caplog.text):
        assert signature not in text and signature.replace("%3D", "=") not in text


def test_expired_sas_is_not_retried(scanner_env, sample_image, own_azurite):
    from datetime import timedelta

    expired = own_azurite.container_sas_url("audits", expiry=timedelta(seconds=-60))
    scanner_env.set(AZ_BLOB_STORAGE_SAS=expired)
    config = load_config()
    store = AzureBlobStore(expired, Redactor(config.secrets), backoff_multiplier=0.05)
    with pytest.raises(AuditNotRecorded, match=r"HTTP 403 .*not retried"):
        Scanner(config, blob_store=store).scan(
            ScanRequest(audit_id="expired", requested_at=REQUESTED_AT, input_tar=sample_image.path)
        )
