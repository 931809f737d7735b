"""Configuration: every bad field is named with what it allows; secrets are never echoed."""

from __future__ import annotations

import uuid

import pytest

from scanner_core.config import load_config
from scanner_core.errors import ConfigurationError

SAS = "http://127.0.0.1:10000/devstoreaccount1/audits?sv=2024-08-04&sr=c&sp=racwl&sig=S3cr3tSignature%3D"


@pytest.fixture
def environment(monkeypatch, tmp_path):
    for name in ("TRIVY_CONFIG_PATH", "TRIVY_TIMEOUT", "LOG_FORMAT", "TRIVY_DB_REPOSITORY", "TRIVY_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCANNER_IDENTIFIER", str(uuid.UUID(int=7)))
    monkeypatch.setenv("AZ_BLOB_STORAGE_SAS", SAS)
    return monkeypatch


def test_minimal_environment_gives_documented_defaults(environment):
    config = load_config()
    settings = config.settings
    assert settings.trivy_timeout_ms == 300_000
    assert settings.log_format == "plain-text"
    assert settings.blob_storage_service_type == "azure-blob"
    assert settings.messaging_service_type == "azure-queue"
    assert config.file.heartbeat_period == 300
    assert config.file.registries == []
    assert settings.scanner_short_id == "00000000"


def test_every_bad_field_is_reported_at_once(environment):
    environment.setenv("LOG_FORMAT", "xml")
    environment.setenv("TRIVY_TIMEOUT", "5m")
    environment.setenv("BLOB_STORAGE_SERVICE_TYPE", "s3")
    environment.setenv("SCANNER_IDENTIFIER", "not-a-uuid")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    text = str(caught.value)
    assert len(caught.value.problems) == 4, text
    assert "LOG_FORMAT" in text and "'plain-text' or 'json'" in text
    assert "TRIVY_TIMEOUT" in text and "'5m'" in text
    assert "BLOB_STORAGE_SERVICE_TYPE" in text and "'azure-blob'" in text
    assert "SCANNER_IDENTIFIER" in text and "UUID" in text


def test_sas_url_problems_never_quote_the_token(environment):
    environment.setenv("AZ_BLOB_STORAGE_SAS", "ftp://host/c?sig=TopSecretValue")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "AZ_BLOB_STORAGE_SAS" in str(caught.value)
    assert "TopSecretValue" not in str(caught.value)

    environment.setenv("AZ_BLOB_STORAGE_SAS", "https://acct.blob.core.windows.net/?sv=1&sig=TopSecretValue")
    with pytest.raises(ConfigurationError, match="must be a container URL") as caught:
        load_config()
    assert "TopSecretValue" not in str(caught.value)

    environment.setenv("AZ_BLOB_STORAGE_SAS", "https://acct.blob.core.windows.net/audits?sv=1&se=2")
    with pytest.raises(ConfigurationError, match="no SAS token"):
        load_config()


def test_missing_required_variables_are_named(environment):
    environment.delenv("SCANNER_IDENTIFIER")
    environment.delenv("AZ_BLOB_STORAGE_SAS")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "SCANNER_IDENTIFIER: Field required" in str(caught.value)
    assert "AZ_BLOB_STORAGE_URL or AZ_BLOB_STORAGE_SAS: one is required" in str(caught.value)


def test_config_file_is_read_and_validated(environment, tmp_path):
    path = tmp_path / "trivy.yaml"
    path.write_text(
        "heartbeat-period: 60\n"
        "registries:\n"
        "  - address: https://LocalHost:5000/\n"
        "    username: scanner\n"
        "    password: hunter2-very-secret\n"
        "    insecure: true\n"
    )
    environment.setenv("TRIVY_CONFIG_PATH", str(path))
    config = load_config()
    assert config.file.heartbeat_period == 60
    (registry,) = config.file.registries
    assert registry.address == "localhost:5000" and registry.insecure
    assert "hunter2-very-secret" in config.secrets
    assert "hunter2-very-secret" not in repr(config)

    path.write_text("heartbeat-period: 0\nregistries:\n  - username: x\n    password: hunter2-very-secret\n    tls: no\n")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    text = str(caught.value)
    assert "heartbeat-period: Input should be greater than 0" in text
    assert "registries.0.address: Field required" in text
    assert "registries.0.tls: Extra inputs are not permitted" in text
    assert "hunter2-very-secret" not in text


def test_unparseable_yaml_does_not_quote_the_line(environment, tmp_path):
    path = tmp_path / "trivy.yaml"
    path.write_text("registries:\n  - address: r.example.com\n    password: 'hunter2-very-secret\n")
    environment.setenv("TRIVY_CONFIG_PATH", str(path))
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "not valid YAML" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_missing_config_file_is_named(environment, tmp_path):
    environment.setenv("TRIVY_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigurationError, match=r"TRIVY_CONFIG_PATH \(.*absent.yaml\): cannot be read"):
        load_config()


@pytest.mark.parametrize(
    "document",
    [
        "registry:\n  - {address: r.example.com, username: u, password: hunter2-very-secret}\n",
        "registries:\n  r.example.com: {username: u, password: hunter2-very-secret}\n",
        "registries:\n  - [r.example.com, u, hunter2-very-secret]\n",
        "registries:\n  - {address: r.example.com, username: u, pasword: hunter2-very-secret}\n",
        "hunter2-very-secret\n",
    ],
)
def test_errors_about_a_parent_of_a_password_do_not_quote_it(environment, tmp_path, document):
    path = tmp_path / "trivy.yaml"
    path.write_text(document)
    environment.setenv("TRIVY_CONFIG_PATH", str(path))
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "hunter2" not in str(caught.value)
    assert str(path) in str(caught.value)


def test_db_repository_is_validated_with_the_settings(environment):
    environment.setenv("TRIVY_DB_REPOSITORY", "mirror.example.com/trivy-db:2, Not A Ref")
    with pytest.raises(ConfigurationError, match="TRIVY_DB_REPOSITORY"):
        load_config()
