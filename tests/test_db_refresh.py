"""The vulnerability DB refresh, offline: a real trivy downloads a DB that the
test published as trivy-db's OCI artifact to the local private registry."""

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
from tests.conftest import REPO_ROOT
from tests.support.images import SAMPLE_ADVISORIES
from tests.support.oci_db import publish_trivy_db
from tests.support.registry import unreachable_address
from tests.support.trivy_db import build_trivy_db

PUBLISHED_UPDATED_AT = datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def db_mirror(registry, tmp_path_factory) -> str:
    """``<registry>/mirror/trivy-db:2`` serving a DB built from the sample advisories."""
    source = tmp_path_factory.mktemp("published-db")
    build_trivy_db(source, SAMPLE_ADVISORIES, updated_at=PUBLISHED_UPDATED_AT,
                   next_update=datetime.now(timezone.utc) + timedelta(days=1))
    publish_trivy_db(registry.address, "mirror/trivy-db", "2", source / "db",
                     username=registry.username, password=registry.password)
    return f"{registry.address}/mirror/trivy-db:2"


@pytest.fixture
def empty_cache(scanner_env, registry, db_mirror, tmp_path) -> Path:
    cache = tmp_path / "fresh-cache"
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password}
    ]})
    scanner_env.set(TRIVY_CACHE_DIR=str(cache), TRIVY_DB_REPOSITORY=db_mirror, TRIVY_SKIP_DB_UPDATE="false")
    return cache


def _metadata(cache: Path) -> dict:
    return json.loads((cache / "db" / "metadata.json").read_text())


def test_refresh_timer_downloads_the_db_from_the_mirror(empty_cache, sample_image, audits, scanner_env):
    functions.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)

    assert (empty_cache / "db").is_symlink()  # swapped in atomically
    assert _metadata(empty_cache)["UpdatedAt"] == "2026-11-20T06:00:00Z"
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id="after-refresh", requested_at=PUBLISHED_UPDATED_AT, input_tar=sample_image.path))
    assert outcome.succeeded, outcome.failure
    assert outcome.meta.vulnerabilities["total"] == 6
    assert outcome.meta.trivy_db_updated_at == "2026-11-20T06:00:00Z"

    functions.on_heartbeat(TimerRequest(past_due=False), functions.binding_settings(), REPO_ROOT)
    heartbeat = audits.json(f"trivy-{scanner_env.short_id}/trivy-{scanner_env.short_id}.meta")
    assert heartbeat["trivy-db-updated-at"] == "2026-11-20T06:00:00Z"  # readers see the DB's age


def test_a_fresh_db_is_not_downloaded_again(empty_cache):
    scanner = Scanner(load_config())
    assert scanner.database.refresh().refreshed
    target_before = (empty_cache / "db").resolve()
    again = scanner.database.refresh()
    assert not again.refreshed and "fresh" in again.reason
    assert (empty_cache / "db").resolve() == target_before


def test_first_scan_without_a_db_downloads_it(empty_cache, sample_image):
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id="cold-start", requested_at=PUBLISHED_UPDATED_AT, input_tar=sample_image.path))
    assert outcome.succeeded, outcome.failure
    assert (empty_cache / "db" / "trivy.db").is_file()


def test_unreachable_mirror_fails_cleanly_and_scans_keep_the_db(empty_cache, sample_image, scanner_env):
    Scanner(load_config()).database.refresh()
    metadata = _metadata(empty_cache)
    metadata["NextUpdate"] = "2026-01-01T00:00:00Z"  # due: the refresh must try
    (empty_cache / "db" / "metadata.json").write_text(json.dumps(metadata))
    scanner_env.set(TRIVY_DB_REPOSITORY=f"{unreachable_address()}/mirror/trivy-db:2")

    with pytest.raises(ScanFailed) as caught:
        functions.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    assert caught.value.transient and caught.value.reason == "db-unavailable"
    assert (empty_cache / "db" / "trivy.db").is_file()
    assert list((empty_cache / "db-versions").iterdir()) == [(empty_cache / "db").resolve().parent]

    # The one-time runner refreshes before scanning: a due DB and a dead mirror still scan.
    outcome = Scanner(load_config(), refresh_db_before_scan=True).scan(
        ScanRequest(audit_id="stale-db", requested_at=PUBLISHED_UPDATED_AT, input_tar=sample_image.path))
    assert outcome.succeeded, outcome.failure


def test_no_db_and_no_mirror_is_a_transient_failure(empty_cache, sample_image, scanner_env):
    scanner_env.set(TRIVY_DB_REPOSITORY=f"{unreachable_address()}/mirror/trivy-db:2")
    outcome = Scanner(load_config()).scan(
        ScanRequest(audit_id="no-db", requested_at=PUBLISHED_UPDATED_AT, input_tar=sample_image.path),
        final_attempt=True)
    assert outcome.retry_may_help
    assert outcome.meta.failure_reason == "db-unavailable"


def test_scans_run_while_the_db_is_swapped(empty_cache, sample_image):
    """Refreshes swap the DB under running scans; no scan fails."""
    config = load_config()
    Scanner(config).database.refresh()
    failures: list[str] = []
    stop = threading.Event()

    def refresher() -> None:
        while not stop.is_set():
            Scanner(config).database.refresh(force=True)

    def scanner(index: int) -> None:
        for round_ in range(3):
            outcome = Scanner(config).scan(ScanRequest(
                audit_id=f"swap-{index}-{round_}", requested_at=PUBLISHED_UPDATED_AT, input_tar=sample_image.path))
            if not outcome.succeeded:
                failures.append(str(outcome.meta.failure_description))

    refreshing = threading.Thread(target=refresher)
    refreshing.start()
    scanning = [threading.Thread(target=scanner, args=(i,)) for i in range(3)]
    for thread in scanning:
        thread.start()
    for thread in scanning:
        thread.join()
    stop.set()
    refreshing.join()
    assert failures == []
