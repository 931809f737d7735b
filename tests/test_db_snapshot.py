"""One DB download per fleet (DB_SNAPSHOT=blob): the refresh timer publishes the
DBs beside the audits; cold instances, simulated as processes with their own
cache dirs, restore from Azurite and never ask the registry, which counts its
downloads in its access log."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.stages.db_snapshot import forget_checks
from scanner_core.functions import handlers
from tests.conftest import REPO_ROOT
from tests.support.images import SAMPLE_ADVISORIES
from tests.support.oci_db import db_layer, publish_trivy_db
from tests.support.registry import Registry
from tests.support.trivy_db import build_trivy_db

REPOSITORY = "mirror/trivy-db"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def counting_registry(tmp_path_factory):
    with Registry(tmp_path_factory.mktemp("counting-registry"), access_log=True) as registry:
        yield registry


def publish(registry: Registry, workdir: Path, tag: str, updated_at: datetime) -> str:
    """A DB in the registry; returns its layer digest (what a download GETs)."""
    build_trivy_db(workdir, SAMPLE_ADVISORIES, updated_at=updated_at, next_update=updated_at + timedelta(hours=6))
    publish_trivy_db(registry.address, REPOSITORY, tag, workdir / "db",
                     username=registry.username, password=registry.password)  # fmt: skip
    return "sha256:" + hashlib.sha256(db_layer(workdir / "db")).hexdigest()


@pytest.fixture(scope="module")
def mirror(counting_registry, tmp_path_factory) -> tuple[str, str]:
    digest = publish(counting_registry, tmp_path_factory.mktemp("db-v1"), "2", NOW - timedelta(hours=1))
    return f"{counting_registry.address}/{REPOSITORY}:2", digest


@pytest.fixture
def fleet_env(scanner_env, counting_registry, mirror, tmp_path):
    forget_checks()
    scanner_env.write_config({"registries": [
        {"address": counting_registry.address, "username": counting_registry.username,
         "password": counting_registry.password, "insecure": True}]})  # fmt: skip
    scanner_env.set(TRIVY_DB_REPOSITORY=mirror[0], TRIVY_SKIP_DB_UPDATE="false",
                    TRIVY_CACHE_DIR=str(tmp_path / "timer-cache"), DB_SNAPSHOT="blob")  # fmt: skip
    return scanner_env


def downloads(registry: Registry, digest: str) -> int:
    return registry.blob_downloads(REPOSITORY, digest)


def cold_instance_scan(cache: Path, image: Path, audit_id: str) -> dict:
    """``python -m scanner_core scan`` in a process of its own, with its own empty cache dir."""
    env = {**os.environ, "TRIVY_CACHE_DIR": str(cache)}
    completed = subprocess.run(
        [sys.executable, "-m", "scanner_core", "scan", "--input", str(image), "--audit-id", audit_id],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return {"stdout": completed.stdout, "stderr": completed.stderr}


def test_the_refresh_timer_publishes_and_cold_instances_restore(fleet_env, counting_registry, mirror, audits,
                                                                sample_image, tmp_path):  # fmt: skip
    digest = mirror[1]
    before = downloads(counting_registry, digest)
    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    assert downloads(counting_registry, digest) == before + 1  # the timer's own download

    prefix = f"trivy-{fleet_env.short_id}/db-snapshot/db/"
    pointer = audits.json(f"{prefix}metadata.json")
    assert pointer["metadata"]["UpdatedAt"] == (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert pointer["archive"].startswith(prefix) and pointer["archive"] in audits.all_names()

    for index in range(3):  # three cold instances, each with an empty cache dir
        cache = tmp_path / f"instance-{index}"
        cold_instance_scan(cache, sample_image.path, f"cold-{index}")
        assert (cache / "db").is_symlink() and (cache / "db" / "trivy.db").is_file()
        assert json.loads((cache / "db" / "metadata.json").read_text()) == pointer["metadata"]
    assert downloads(counting_registry, digest) == before + 1  # still the timer's one download
    meta = audits.json(f"trivy-{fleet_env.short_id}/" + next(
        name.split("/")[1] for name in audits.names() if name.endswith("-cold-2/meta")) + "/meta")
    assert meta["audit-result"] == "succeeded" and meta["vulnerabilities"]["total"] == 6

    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)  # nothing new: nothing published again
    assert audits.json(f"{prefix}metadata.json")["published-at"] == pointer["published-at"]


def test_without_a_snapshot_a_cold_instance_uses_the_registry(fleet_env, counting_registry, mirror, sample_image,
                                                              tmp_path):  # fmt: skip
    before = downloads(counting_registry, mirror[1])
    cold_instance_scan(tmp_path / "lonely", sample_image.path, "no-snapshot")
    assert downloads(counting_registry, mirror[1]) == before + 1


def test_a_stale_snapshot_is_not_used(fleet_env, counting_registry, mirror, sample_image, tmp_path):
    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    before = downloads(counting_registry, mirror[1])
    fleet_env.set(DB_SNAPSHOT_MAX_AGE_HOURS="0.5")  # the published DB is an hour old
    cold_instance_scan(tmp_path / "cold", sample_image.path, "stale")
    assert downloads(counting_registry, mirror[1]) == before + 1


def test_an_archive_that_does_not_match_its_pointer_is_not_installed(fleet_env, counting_registry, mirror, audits,
                                                                     sample_image, tmp_path):  # fmt: skip
    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    pointer_name = f"trivy-{fleet_env.short_id}/db-snapshot/db/metadata.json"
    pointer = audits.json(pointer_name)
    audits.client.upload_blob(pointer["archive"], b"not the archive", overwrite=True)
    before = downloads(counting_registry, mirror[1])
    fleet_env.set(TRIVY_CACHE_DIR=str(tmp_path / "cold"))
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id="corrupt", requested_at=NOW, input_tar=sample_image.path))
    assert outcome.succeeded
    assert downloads(counting_registry, mirror[1]) == before + 1  # fell back to the registry


def test_a_warm_instance_takes_a_newer_snapshot(fleet_env, counting_registry, audits, sample_image, tmp_path):
    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)  # publishes v1
    warm = tmp_path / "warm"
    fleet_env.set(TRIVY_CACHE_DIR=str(warm), DB_SNAPSHOT_CHECK_SECONDS="0")
    Scanner(load_config()).scan(ScanRequest(audit_id="warm-1", requested_at=NOW, input_tar=sample_image.path))
    first = json.loads((warm / "db" / "metadata.json").read_text())["UpdatedAt"]

    newer = NOW - timedelta(minutes=5)
    publish(counting_registry, tmp_path / "db-v2", "3", newer)
    fleet_env.set(TRIVY_CACHE_DIR=str(tmp_path / "timer-2"),
                  TRIVY_DB_REPOSITORY=f"{counting_registry.address}/{REPOSITORY}:3")  # fmt: skip
    timer = Scanner(load_config())  # the timer of the next period, when v1 is due
    assert timer.database.refresh(force=True).refreshed
    assert timer.db_snapshot is not None and timer.db_snapshot.publish(tmp_path / "timer-2") == ["db"]

    fleet_env.set(TRIVY_CACHE_DIR=str(warm))
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id="warm-2", requested_at=NOW, input_tar=sample_image.path))
    assert outcome.succeeded
    assert first != newer.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert outcome.meta.trivy_db_updated_at == newer.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_java_db_travels_too(fleet_env, audits, tmp_path):
    timer_cache = Path(fleet_env.values["TRIVY_CACHE_DIR"])
    java = timer_cache / "java-db"
    java.mkdir(parents=True)
    (java / "trivy-java.db").write_bytes(b"java index " * 1000)
    metadata = {"Version": 1, "UpdatedAt": (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "NextUpdate": (NOW + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "DownloadedAt": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
    (java / "metadata.json").write_text(json.dumps(metadata))
    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    assert audits.json(f"trivy-{fleet_env.short_id}/db-snapshot/java-db/metadata.json")["metadata"] == metadata

    cold = tmp_path / "cold-java"
    fleet_env.set(TRIVY_CACHE_DIR=str(cold))
    scanner = Scanner(load_config())
    scanner.java_database.ensure()  # a scan's first Java archive: from the snapshot, not the registry
    assert (cold / "java-db").is_symlink()
    assert (cold / "java-db" / "trivy-java.db").read_bytes() == b"java index " * 1000


def test_db_snapshot_none_publishes_nothing(fleet_env, audits):
    fleet_env.set(DB_SNAPSHOT="none")
    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    assert not [name for name in audits.all_names() if "/db-snapshot/" in name]
