"""Identity settings: which of them are required together, what the errors say,
and how the queue connection is resolved (the Functions host's rules)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ConfigurationError
from scanner_core.storage import resolve_queue_connection
from scanner_core.registry import ACR_USERNAME, find_credentials, parse_image_reference, resolve_credentials

SAS = "https://acct.blob.core.windows.net/audits?sv=2024&sig=TopSecretSig"
URL = "https://acct.blob.core.windows.net/audits"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("TRIVY_CONFIG_PATH", "AZ_BLOB_STORAGE_SAS", "AZ_BLOB_STORAGE_URL", "IDENTITY_ENDPOINT",
                 "IDENTITY_HEADER", "MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_SECRET",
                 "AZURE_CLIENT_CERTIFICATE_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCANNER_IDENTIFIER", str(uuid.UUID(int=9)))
    return monkeypatch


def problems(environment: pytest.MonkeyPatch) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    return str(caught.value)


def test_the_container_url_alone_is_a_complete_blob_configuration(environment) -> None:
    environment.setenv("AZ_BLOB_STORAGE_URL", URL + "/")
    settings = load_config().settings
    assert settings.blob_container_url == URL and settings.az_blob_storage_sas is None


def test_exactly_one_of_the_container_url_and_the_sas_is_required(environment) -> None:
    assert "AZ_BLOB_STORAGE_URL or AZ_BLOB_STORAGE_SAS: one is required" in problems(environment)
    environment.setenv("AZ_BLOB_STORAGE_URL", URL)
    environment.setenv("AZ_BLOB_STORAGE_SAS", SAS)
    both = problems(environment)
    assert "AZ_BLOB_STORAGE_URL, AZ_BLOB_STORAGE_SAS: set only one" in both and "TopSecretSig" not in both


@pytest.mark.parametrize(("url", "says"), [
    ("http://acct.blob.core.windows.net/audits", "https container URL"),
    ("https://acct.blob.core.windows.net/", "https container URL"),
    (SAS, "goes in AZ_BLOB_STORAGE_SAS"),
])
def test_a_bad_container_url_is_named(environment, url: str, says: str) -> None:
    environment.setenv("AZ_BLOB_STORAGE_URL", url)
    text = problems(environment)
    assert "AZ_BLOB_STORAGE_URL" in text and says in text


def write_registries(environment: pytest.MonkeyPatch, tmp_path: Path, *entries: dict) -> None:
    path = tmp_path / "trivy.yaml"
    path.write_text(yaml.safe_dump({"registries": list(entries)}))
    environment.setenv("TRIVY_CONFIG_PATH", str(path))
    environment.setenv("AZ_BLOB_STORAGE_URL", URL)


def test_a_missing_password_setting_names_the_entry_and_the_setting(environment, tmp_path: Path) -> None:
    write_registries(environment, tmp_path, {"address": "myacr.azurecr.io", "username": "scanner",
                                             "password-setting": "MYACR_PASSWORD"})
    text = problems(environment)
    assert "'myacr.azurecr.io'" in text and "'MYACR_PASSWORD'" in text and "not set" in text


@pytest.mark.parametrize(("entry", "says"), [
    ({"username": "u", "password": "TopSecretPw", "password-setting": "X"}, "not both"),
    ({"auth": "azure-identity", "username": "u", "password": "TopSecretPw"}, "takes no username"),
    ({"password-setting": "X"}, "needs a username"),
    ({"auth": "kerberos"}, "'password' or 'azure-identity'"),
])
def test_contradictory_registry_entries_are_refused_without_quoting_a_secret(
    environment, tmp_path: Path, entry: dict, says: str
) -> None:
    write_registries(environment, tmp_path, {"address": "r.example", **entry})
    text = problems(environment)
    assert says in text and "TopSecretPw" not in text


def test_a_password_setting_supplies_the_password(environment, tmp_path: Path) -> None:
    write_registries(environment, tmp_path, {"address": "r.example", "username": "ci", "password-setting": "R_PW"})
    environment.setenv("R_PW", "from-key-vault")
    config = load_config()
    credentials = resolve_credentials(config.file.registries[0])
    assert (credentials.username, credentials.password) == ("ci", "from-key-vault")
    assert "from-key-vault" in config.secrets


def test_acr_hosts_without_an_entry_use_the_identity_only_when_one_is_available(environment) -> None:
    acr, other = parse_image_reference("myacr.azurecr.io/app:1"), parse_image_reference("ghcr.io/o/app:1")
    assert find_credentials(acr, []) is None
    environment.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
    entry = find_credentials(acr, [])
    assert entry is not None and entry.auth == "azure-identity" and entry.address == "myacr.azurecr.io"
    assert find_credentials(parse_image_reference("myacr.azurecr.cn/app:1"), []).auth == "azure-identity"
    assert find_credentials(other, []) is None
    assert ACR_USERNAME == "00000000-0000-0000-0000-000000000000"


def test_a_password_setting_entry_pulls_from_the_htpasswd_registry(
    scanner_env, registry, pushed_sample, audits, monkeypatch: pytest.MonkeyPatch
) -> None:
    scanner_env.write_config({"registries": [{"address": registry.address, "username": registry.username,
                                              "password-setting": "REGISTRY_PASSWORD", "insecure": True}]})
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    request = ScanRequest(image=pushed_sample.reference, audit_id="pw-setting", requested_at=datetime.now(UTC))
    outcome = Scanner(load_config()).scan(request)
    assert outcome.succeeded, outcome.failure
    assert registry.password.encode() not in audits.everything()


# -- the queue connection, by the host's rules -----------------------------------


def test_a_connection_string_wins_and_is_kept_secret() -> None:
    found = resolve_queue_connection("Conn", {"Conn": "DefaultEndpointsProtocol=https;AccountKey=k",
                                              "Conn__queueServiceUri": "https://a.queue.core.windows.net"})
    assert not found.uses_identity and found.secrets == ["DefaultEndpointsProtocol=https;AccountKey=k"]
    assert "AccountKey" not in repr(found)
    assert resolve_queue_connection("Conn", {"AzureWebJobsConn": "UseDevelopmentStorage=true"}).value


def test_identity_based_settings_give_a_service_uri_and_a_credential() -> None:
    found = resolve_queue_connection("AzureWebJobsStorage", {
        "AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "cid"})
    assert (found.service_uri, found.credential_kind, found.client_id) == (
        "https://acct.queue.core.windows.net", "managedidentity", "cid")
    assert found.uses_identity and found.secrets == []
    uri = resolve_queue_connection("Q", {"Q__queueServiceUri": "https://x.queue.core.windows.net/"})
    assert uri.service_uri == "https://x.queue.core.windows.net" and uri.credential_kind is None


def test_an_unknown_credential_kind_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Q__credential: must be managedidentity"):
        resolve_queue_connection("Q", {"Q__queueServiceUri": "https://x.queue.core.windows.net", "Q__credential": "cli"})


def test_nothing_set_means_azurite() -> None:
    assert resolve_queue_connection("AzureWebJobsStorage", {}).value == "UseDevelopmentStorage=true"


def test_any_jwt_is_scrubbed_from_text_that_leaves_the_process() -> None:
    from scanner_core.redact import Redactor

    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0xMjM0NTY.c2lnbmF0dXJlLWJ5dGVz"
    assert Redactor()(f"refused: token={token}, retry") == "refused: token=***, retry"
