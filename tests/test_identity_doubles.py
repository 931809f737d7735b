"""The identity doubles and the real parts around them, on their own.

The real ``azure-identity`` gets tokens from the managed-identity endpoint
double; real Azurite (``--oauth basic``, HTTPS) accepts them and refuses
requests without one; the real ``docker-registry`` behind the ACR token
service double serves real trivy with an exchanged refresh token only.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from tests.support.acr import ACR_USERNAME, AcrDouble
from tests.support.azurite import Azurite
from tests.support.identity import Identity, ManagedIdentityEndpoint
from tests.support.identity_fixtures import SAMPLE_REPOSITORY, SAMPLE_TAG

ARM = "https://management.azure.com/.default"
STORAGE = "https://storage.azure.com/.default"


@pytest.fixture
def identity_env(monkeypatch: pytest.MonkeyPatch, fresh_msi: ManagedIdentityEndpoint) -> ManagedIdentityEndpoint:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "MSI_ENDPOINT", "IMDS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in fresh_msi.environment().items():
        monkeypatch.setenv(name, value)
    return fresh_msi


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_managed_identity_credential_gets_a_token_for_the_system_assigned_identity(identity_env) -> None:
    token = ManagedIdentityCredential().get_token(STORAGE)
    found = claims(token.token)
    assert found["aud"] == "https://storage.azure.com"
    assert found["oid"] == identity_env.system.principal_id
    assert found["iss"] == f"https://sts.windows.net/{identity_env.system.tenant_id}/"
    assert token.expires_on > found["iat"]
    assert identity_env.minter.verify(token.token, ["https://storage.azure.com"])["tid"] == identity_env.system.tenant_id


def test_default_credential_selects_the_user_assigned_identity_by_azure_client_id(
    identity_env, user_assigned: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", user_assigned.client_id)
    token = DefaultAzureCredential().get_token(ARM)
    assert claims(token.token)["appid"] == user_assigned.client_id
    assert identity_env.requests[-1] == ("https://management.azure.com", user_assigned.client_id)


def test_an_unknown_client_id_gets_no_token(identity_env) -> None:
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id="00000000-1111-2222-3333-444444444444").get_token(STORAGE)


# -- Azurite with OAuth --------------------------------------------------------


def test_azurite_accepts_bearer_tokens_for_blobs_and_queues(identity_env, oauth_azurite: Azurite,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth_azurite.ca_bundle))
    oauth_azurite.create_container("doubles")
    credential = ManagedIdentityCredential()
    with ContainerClient.from_container_url(f"{oauth_azurite.blob_endpoint}/doubles", credential=credential) as blobs:
        blobs.upload_blob("hello.txt", b"hello", overwrite=True)
        assert blobs.download_blob("hello.txt").readall() == b"hello"
    with QueueClient(oauth_azurite.queue_endpoint, "doubles-queue", credential=credential) as queue:
        queue.create_queue()
        queue.send_message("ping")
        assert [m.content for m in queue.receive_messages()] == ["ping"]


def test_azurite_refuses_requests_without_a_token(oauth_azurite: Azurite) -> None:
    oauth_azurite.create_container("doubles")
    blob = requests.put(f"{oauth_azurite.blob_endpoint}/doubles/anonymous.txt", data=b"x",
                        headers={"x-ms-blob-type": "BlockBlob"}, verify=oauth_azurite.ca_bundle, timeout=10)
    queue = requests.post(f"{oauth_azurite.queue_endpoint}/doubles-queue/messages",
                          data="<QueueMessage><MessageText>x</MessageText></QueueMessage>",
                          verify=oauth_azurite.ca_bundle, timeout=10)
    assert (blob.status_code, queue.status_code) == (403, 403)


def test_azurite_refuses_a_token_for_another_audience(identity_env, oauth_azurite: Azurite,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth_azurite.ca_bundle))
    oauth_azurite.create_container("doubles")
    identity_env.audience_override = "https://vault.azure.net"
    with (
        ContainerClient.from_container_url(f"{oauth_azurite.blob_endpoint}/doubles",
                                           credential=ManagedIdentityCredential()) as blobs,
        pytest.raises(HttpResponseError) as refused,
    ):
        blobs.upload_blob("nope.txt", b"x", overwrite=True)
    assert refused.value.status_code == 403


def test_azurite_refuses_an_expired_token(identity_env, oauth_azurite: Azurite) -> None:
    token, _ = identity_env.minter.mint(identity_env.system, "https://storage.azure.com", lifetime=-600)
    response = requests.get(f"{oauth_azurite.blob_endpoint}/doubles?restype=container&comp=list",
                            headers={"Authorization": f"Bearer {token}", "x-ms-version": "2021-08-06"},
                            verify=oauth_azurite.ca_bundle, timeout=10)
    assert response.status_code == 403 and "expired" in response.text


# -- the ACR double --------------------------------------------------------------


def exchange(acr: AcrDouble, token: str, tenant: str) -> requests.Response:
    return requests.post(f"http://{acr.address}/oauth2/exchange", timeout=10, data={
        "grant_type": "access_token", "service": acr.address, "tenant": tenant, "access_token": token})


def trivy_pull(trivy: Path, cache: Path, home: Path, acr: AcrDouble, password: str | None) -> subprocess.CompletedProcess:
    docker = home / ".docker"
    docker.mkdir(parents=True, exist_ok=True)
    auths = {}
    if password is not None:
        auths[acr.address] = {"auth": base64.b64encode(f"{ACR_USERNAME}:{password}".encode()).decode()}
    (docker / "config.json").write_text(json.dumps({"auths": auths}))
    return subprocess.run(
        [str(trivy), "image", "--cache-dir", str(cache), "--cache-backend", "memory",  # never write the shared cache
         "--skip-db-update", "--offline-scan", "--insecure",
         "--format", "json", "--quiet", "--image-src", "remote", "--", f"{acr.address}/{SAMPLE_REPOSITORY}:{SAMPLE_TAG}"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "DOCKER_CONFIG": str(docker)},
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_trivy_pulls_through_the_acr_double_with_an_exchanged_refresh_token(
    identity_env, acr: AcrDouble, trivy_executable: Path, trivy_cache: Path, tmp_path: Path
) -> None:
    aad = ManagedIdentityCredential().get_token(ARM).token
    answer = exchange(acr, aad, identity_env.system.tenant_id)
    assert answer.status_code == 200
    refresh = answer.json()["refresh_token"]
    assert claims(refresh)["aud"] == acr.address

    pulled = trivy_pull(trivy_executable, trivy_cache, tmp_path / "with", acr, refresh)
    assert pulled.returncode == 0, pulled.stderr
    ids = {v["VulnerabilityID"] for r in json.loads(pulled.stdout)["Results"] for v in r.get("Vulnerabilities") or []}
    assert "CVE-2099-0001" in ids

    anonymous = trivy_pull(trivy_executable, trivy_cache, tmp_path / "without", acr, None)
    assert anonymous.returncode != 0 and "UNAUTHORIZED" in anonymous.stderr


def test_the_exchange_refuses_a_wrong_tenant_an_expired_token_and_an_identity_without_a_role(
    identity_env, acr: AcrDouble, user_assigned: Identity
) -> None:
    tenant = identity_env.system.tenant_id
    good, _ = identity_env.minter.mint(identity_env.system, "https://management.azure.com")
    assert exchange(acr, good, "11111111-2222-3333-4444-555555555555").status_code == 401
    foreign, _ = identity_env.minter.mint(identity_env.system, "https://management.azure.com",
                                          tenant_id="11111111-2222-3333-4444-555555555555")
    assert exchange(acr, foreign, "11111111-2222-3333-4444-555555555555").status_code == 401
    expired, _ = identity_env.minter.mint(identity_env.system, "https://management.azure.com", lifetime=-60)
    answer = exchange(acr, expired, tenant)
    assert answer.status_code == 401 and "expired" in answer.json()["errors"][0]["message"]
    no_role, _ = identity_env.minter.mint(user_assigned, "https://management.azure.com")
    answer = exchange(acr, no_role, tenant)
    assert answer.status_code == 401 and answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
    storage_token, _ = identity_env.minter.mint(identity_env.system, "https://storage.azure.com")
    assert exchange(acr, storage_token, tenant).status_code == 401
    assert exchange(acr, good, tenant).status_code == 200
