"""A deployment with identity settings only: no SAS, no account key, no registry password.

Real Azurite with OAuth (HTTPS) holds the results and the queue; the real
``azure-identity`` gets tokens from the managed-identity endpoint double; the
real trivy pulls from the real ``docker-registry`` behind the ACR token
service double with a refresh token the scanner exchanged.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from azure.identity import ManagedIdentityCredential
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

import scanner_core.trivy.runner as trivy_runner
from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import StorageError
from scanner_core.identity import forget_credentials
from scanner_core.redact import Redactor
from scanner_core.registry import (
    ACR_USERNAME,
    RegistryApi,
    acr_refresh_token,
    forget_refresh_tokens,
    resolve_credentials,
)
from scanner_core.storage import AzureBlobStore, fleet_state_of
from tests.conftest import REPO_ROOT
from tests.support.acr import AcrDouble
from tests.support.azurite import Azurite
from tests.support.identity import Identity, ManagedIdentityEndpoint
from tests.support.identity_fixtures import SAMPLE_REPOSITORY, SAMPLE_TAG
from tests.support.images import SAMPLE_ADVISORIES
from tests.support.oci_db import publish_trivy_db
from tests.support.trivy_db import build_trivy_db


class Deployment:
    """The environment of an identity-only deployment, and what it wrote."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, azurite: Azurite, container: str, acr: AcrDouble,
                 msi: ManagedIdentityEndpoint, config_path: Path) -> None:
        self.monkeypatch, self.azurite, self.container, self.acr, self.msi = monkeypatch, azurite, container, acr, msi
        self.config_path = config_path
        self.env: dict[str, str] = {}

    def set(self, **values: str) -> None:
        for name, value in values.items():
            self.monkeypatch.setenv(name, value)
            self.env[name] = value

    @property
    def image(self) -> str:
        return f"{self.acr.address}/{SAMPLE_REPOSITORY}:{SAMPLE_TAG}"

    def blobs(self) -> dict[str, bytes]:
        """Every blob and its metadata, read with the emulator's key (the test's side only)."""
        with BlobServiceClient.from_connection_string(self.azurite.connection_string,
                                                      connection_verify=self.azurite.ca_bundle) as service:
            container = service.get_container_client(self.container)
            return {b.name: container.download_blob(b.name).readall() + repr(b.metadata).encode()
                    for b in container.list_blobs(include=["metadata"])}

    def read(self, name: str) -> bytes:
        with BlobServiceClient.from_connection_string(self.azurite.connection_string,
                                                      connection_verify=self.azurite.ca_bundle) as service:
            return service.get_blob_client(self.container, name).download_blob().readall()

    def scan(self, audit_id: str) -> dict:
        request = ScanRequest(image=self.image, audit_id=audit_id, requested_at=datetime.now(UTC))
        outcome = Scanner(load_config()).scan(request)
        return json.loads(outcome.meta.model_dump_json(by_alias=True))


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_msi: ManagedIdentityEndpoint,
               oauth_azurite: Azurite, acr: AcrDouble, trivy_cache: Path, trivy_executable: Path) -> Iterator[Deployment]:
    for name in list(os.environ):
        if name.startswith(("TRIVY_", "AZURE_", "AZ_BLOB_", "MSI_", "IDENTITY_")) or name == "AzureWebJobsStorage":
            monkeypatch.delenv(name)
    container = f"audits-{uuid.uuid4().hex[:12]}"
    oauth_azurite.create_container(container)
    config_path = tmp_path / "trivy-scanner.yaml"
    config_path.write_text(yaml.safe_dump({"heartbeat-period": 60, "registries": [
        {"address": acr.address, "auth": "azure-identity", "insecure": True}]}))
    found = Deployment(monkeypatch, oauth_azurite, container, acr, fresh_msi, config_path)
    found.set(
        **fresh_msi.environment(),
        REQUESTS_CA_BUNDLE=str(oauth_azurite.ca_bundle),
        SCANNER_IDENTIFIER=str(uuid.uuid4()),
        AZ_BLOB_STORAGE_URL=f"{oauth_azurite.blob_endpoint}/{container}",
        # The fleet state's tables with the same identity, no secret (issue 24).
        AzureWebJobsStorage__tableServiceUri=oauth_azurite.table_endpoint,
        AzureWebJobsStorage__credential="managedidentity",
        TRIVY_CONFIG_PATH=str(config_path),
        TRIVY_PATH=str(trivy_executable),
        TRIVY_CACHE_DIR=str(trivy_cache),
        TRIVY_SKIP_DB_UPDATE="true",
        TRIVY_OFFLINE_SCAN="true",
        TRIVY_TIMEOUT="60000",
    )
    forget_refresh_tokens()
    forget_credentials()
    yield found
    forget_refresh_tokens()
    forget_credentials()


@pytest.fixture
def trivy_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Each trivy run's argv, environment and Docker config, as trivy got them."""
    runs: list[dict] = []
    original = trivy_runner.run_with_deadline

    def recording(command, env, stderr, cwd, timeout_ms):  # type: ignore[no-untyped-def]
        config = Path(env["DOCKER_CONFIG"], "config.json").read_text()
        runs.append({"argv": list(command), "env": dict(env), "docker-config": json.loads(config)})
        return original(command, env, stderr, cwd, timeout_ms)

    monkeypatch.setattr(trivy_runner, "run_with_deadline", recording)
    return runs


def test_an_identity_only_deployment_scans_an_acr_image_and_writes_its_audit(
    deployment: Deployment, trivy_runs: list[dict], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exchanges = deployment.acr.exchanges
    meta = deployment.scan("identity-1")
    assert meta["audit-result"] == "succeeded", meta
    assert meta["vulnerabilities"]["critical"] == 1 and meta["image-digest"].startswith("sha256:")
    blobs = deployment.blobs()
    assert any(name.endswith("identity-1/scan-result.json") for name in blobs)
    assert any("/index/" in name for name in blobs)
    state = fleet_state_of(load_config().settings).get(meta["image"].rsplit(":", 1)[0], digest=meta["image-digest"])
    assert state is not None and state.audit_id == "identity-1"  # written with the identity's token

    # Second scan: the refresh token comes from the per-process cache.
    assert deployment.scan("identity-2")["audit-result"] == "succeeded"
    assert deployment.acr.exchanges == exchanges + 1

    refresh_token = acr_refresh_token(deployment.acr.address, insecure=True)  # the cached one the scans used
    last_scan = next(run for run in reversed(trivy_runs) if run["argv"][1] == "image")  # not the inventory's convert
    auth = last_scan["docker-config"]["auths"][deployment.acr.address]["auth"]
    assert base64.b64decode(auth).decode() == f"{ACR_USERNAME}:{refresh_token}"
    aad_token = ManagedIdentityCredential().get_token("https://management.azure.com/.default").token
    for secret in (refresh_token, aad_token, refresh_token.split(".")[2], aad_token.split(".")[2]):
        assert all(secret not in arg for run in trivy_runs for arg in run["argv"])
        assert all(secret not in value for run in trivy_runs for value in run["env"].values())
        assert secret not in caplog.text
        assert all(secret.encode() not in content for content in deployment.blobs().values())


@pytest.mark.parametrize("refusal", ["wrong-tenant", "expired-token", "no-role"])
def test_a_refused_identity_is_a_permanent_unauthorized_naming_the_identity_and_acrpull(
    deployment: Deployment, user_assigned: Identity, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    if refusal == "wrong-tenant":
        monkeypatch.setattr(deployment.acr, "tenant_id", str(uuid.uuid4()))
    elif refusal == "expired-token":
        deployment.msi.lifetimes["https://management.azure.com"] = -120
    else:
        deployment.set(AZURE_CLIENT_ID=user_assigned.client_id)
    meta = deployment.scan(f"refused-{refusal}")
    assert (meta["audit-result"], meta["failure-reason"], meta["failure-kind"]) == (
        "audit-failed", "unauthorized", "permanent")
    description = meta["failure-description"]
    assert "AcrPull" in description and "/oauth2/exchange" in description
    expected_id = user_assigned.client_id if refusal == "no-role" else deployment.msi.system.client_id
    assert f"client id {expected_id}" in description
    assert "eyJ" not in description  # no JWT quoted


def test_the_registry_api_client_uses_the_same_credentials(deployment: Deployment) -> None:
    config = load_config()
    entry = config.file.registries[0]
    with RegistryApi(entry.address, credentials=resolve_credentials(entry), insecure=True) as api:
        manifest = api.manifest(SAMPLE_REPOSITORY, SAMPLE_TAG)
        assert manifest.digest and manifest.compressed_size > 0
        assert list(api.tags(SAMPLE_REPOSITORY)) == [SAMPLE_TAG]


def test_a_forbidden_container_names_the_missing_role(deployment: Deployment) -> None:
    deployment.msi.audience_override = "https://vault.azure.net"  # Azurite answers 403, as Azure does without a role
    store = AzureBlobStore(deployment.env["AZ_BLOB_STORAGE_URL"], Redactor(), attempts=1)
    with pytest.raises(StorageError) as refused:
        store.upload_bytes("probe.txt", b"x", "text/plain")
    assert "HTTP 403" in str(refused.value) and "Storage Blob Data Contributor" in str(refused.value)


def test_enqueue_uses_the_hosts_identity_based_queue_settings(
    deployment: Deployment, user_assigned: Identity
) -> None:
    queue = f"scan-{uuid.uuid4().hex[:10]}"
    env = {
        "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **deployment.env,
        "SCAN_QUEUE_CONNECTION": "ScanQueue",
        "ScanQueue__queueServiceUri": deployment.azurite.queue_endpoint,
        "ScanQueue__credential": "managedidentity",
        "ScanQueue__clientId": user_assigned.client_id,
    }
    result = subprocess.run([sys.executable, "-m", "scanner_core", "enqueue", deployment.image, "--audit-id", "q-1",
                             "--queue", queue], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert deployment.msi.requests[-1] == ("https://storage.azure.com", user_assigned.client_id)
    with QueueClient(deployment.azurite.queue_endpoint, queue, credential=ManagedIdentityCredential()) as client:
        bodies = [m.content for m in client.receive_messages()]
    assert len(bodies) == 1 and '"image-scan-id": "q-1"' in bodies[0].replace('":"', '": "')


def test_a_db_mirror_in_acr_is_downloaded_with_the_identity(deployment: Deployment, tmp_path: Path) -> None:
    source = tmp_path / "published"
    build_trivy_db(source, SAMPLE_ADVISORIES, updated_at=datetime(2026, 11, 20, 6, tzinfo=UTC),
                   next_update=datetime(2099, 1, 1, tzinfo=UTC))
    publish_trivy_db(deployment.acr.address, "mirror/trivy-db", "2", source / "db", username="", password="",
                     authorization=deployment.acr.admin_bearer("mirror/trivy-db"))
    cache = tmp_path / "cache"
    deployment.set(TRIVY_CACHE_DIR=str(cache), TRIVY_SKIP_DB_UPDATE="false",
                   TRIVY_DB_REPOSITORY=f"{deployment.acr.address}/mirror/trivy-db:2")
    exchanges = deployment.acr.exchanges
    Scanner(load_config()).database.refresh(force=True)
    assert json.loads((cache / "db" / "metadata.json").read_text())["UpdatedAt"] == "2026-11-20T06:00:00Z"
    assert deployment.acr.exchanges == exchanges + 1


def test_the_heartbeat_is_written_with_the_identity(deployment: Deployment) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **deployment.env}
    assert not any(name in env for name in ("AZ_BLOB_STORAGE_SAS", "AzureWebJobsStorage"))
    result = subprocess.run([sys.executable, "-m", "scanner_core", "heartbeat"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    short = deployment.env["SCANNER_IDENTIFIER"].replace("-", "")[:8]
    heartbeat = json.loads(deployment.read(f"trivy-{short}/trivy-{short}.meta"))
    assert heartbeat["scanner-id"] == deployment.env["SCANNER_IDENTIFIER"]


def test_the_http_api_queues_and_reads_audits_with_the_identity(deployment: Deployment) -> None:
    import azure.functions as func

    from scanner_core.functions.http_api import get_audit, request_scan, serve

    queue = f"api-{uuid.uuid4().hex[:10]}"
    deployment.set(SCAN_QUEUE_NAME=queue, SCAN_QUEUE_CONNECTION="ScanQueue",
                   ScanQueue__queueServiceUri=deployment.azurite.queue_endpoint)
    with QueueClient(deployment.azurite.queue_endpoint, queue, credential=ManagedIdentityCredential()) as client:
        client.create_queue()
    body = json.dumps({"image": deployment.image, "audit-id": "api-1"}).encode()
    queued = serve(request_scan, func.HttpRequest("POST", "http://localhost/api/scans", body=body,
                                                  headers={"content-type": "application/json"}), REPO_ROOT)
    assert queued.status_code == 202, queued.get_body()
    with QueueClient(deployment.azurite.queue_endpoint, queue, credential=ManagedIdentityCredential()) as client:
        assert len(list(client.receive_messages())) == 1

    assert deployment.scan("api-1")["audit-result"] == "succeeded"
    found = serve(get_audit, func.HttpRequest("GET", "http://localhost/api/audits/api-1", body=b"",
                                              route_params={"audit_id": "api-1"}), REPO_ROOT)
    assert found.status_code == 200 and json.loads(found.get_body())["audit-id"] == "api-1"


def test_a_refresh_token_is_exchanged_again_shortly_before_it_expires(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, before = deployment.acr.address, deployment.acr.exchanges
    first = acr_refresh_token(address, insecure=True)
    assert acr_refresh_token(address, insecure=True) == first  # cached: ~3 h left
    assert deployment.acr.exchanges == before + 1
    forget_refresh_tokens()
    monkeypatch.setattr(deployment.acr, "refresh_lifetime", 240)  # inside the 5-minute margin
    acr_refresh_token(address, insecure=True)
    acr_refresh_token(address, insecure=True)
    assert deployment.acr.exchanges == before + 3


def test_a_dedup_answer_copies_the_report_with_the_identity(deployment: Deployment) -> None:
    """Copy Blob within the account, authorised by the app's identity alone (no SAS anywhere)."""
    first = deployment.scan("identity-dedup-1")
    assert first["audit-result"] == "succeeded", first
    request = ScanRequest(image=f"{deployment.acr.address}/{SAMPLE_REPOSITORY}@{first['image-digest']}",
                          audit_id="identity-dedup-2", requested_at=datetime.now(UTC))
    reused = json.loads(Scanner(load_config()).scan(request).meta.model_dump_json(by_alias=True))
    assert reused["reused-from"] == "identity-dedup-1"
    assert reused["trivy-audit-path"].endswith("identity-dedup-2/scan-result.json")
    assert deployment.read(reused["trivy-audit-path"]) == deployment.read(first["trivy-audit-path"])
