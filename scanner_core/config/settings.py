"""The environment (pydantic-settings): every variable of the scanner.

Settings that mean exactly what trivy's own variable means keep trivy's name
(``TRIVY_SKIP_DB_UPDATE``...). The wrapper's own ``TRIVY_TIMEOUT`` (milliseconds)
does *not* mean what trivy's does (a duration such as ``5m``), which is why the
trivy child process never inherits this environment (see ``trivy/process.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..registry import parse_image_reference

DEFAULT_TRIVY_TIMEOUT_MS = 300_000
DEFAULT_CACHE_DIR = Path("/tmp/trivy-cache")

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
ScannerKind = Literal["vuln", "secret"]
# Settings whose values are never quoted in a configuration error.
SECRET_SETTINGS = frozenset({"AZ_BLOB_STORAGE_SAS", "NOTIFY_WEBHOOK_URLS"})


def _split_list(value: Any) -> Any:
    """``"a, b"`` → ``["a", "b"]``: trivy's own comma-separated form for list settings."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every environment variable of the scanner. Names are the variables'."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, populate_by_name=True, env_ignore_empty=True
    )

    trivy_config_path: Path | None = Field(None, alias="TRIVY_CONFIG_PATH")
    blob_storage_service_type: Literal["azure-blob"] = Field("azure-blob", alias="BLOB_STORAGE_SERVICE_TYPE")
    messaging_service_type: Literal["azure-queue"] = Field("azure-queue", alias="MESSAGING_SERVICE_TYPE")
    scanner_identifier: UUID = Field(alias="SCANNER_IDENTIFIER")
    log_format: Literal["plain-text", "json"] = Field("plain-text", alias="LOG_FORMAT")
    # Exactly one of the two (checked in loader.py): a SAS URL, or a plain container URL
    # reached with the app's Azure identity (DefaultAzureCredential).
    az_blob_storage_sas: SecretStr | None = Field(None, alias="AZ_BLOB_STORAGE_SAS")
    az_blob_storage_url: str | None = Field(None, alias="AZ_BLOB_STORAGE_URL")

    trivy_path: str | None = Field(None, alias="TRIVY_PATH")
    trivy_timeout_ms: int = Field(DEFAULT_TRIVY_TIMEOUT_MS, alias="TRIVY_TIMEOUT", ge=0)
    trivy_cache_dir: Path = Field(DEFAULT_CACHE_DIR, alias="TRIVY_CACHE_DIR")
    # Trivy's own names and meanings, passed on as flags:
    trivy_skip_db_update: bool = Field(False, alias="TRIVY_SKIP_DB_UPDATE")
    trivy_offline_scan: bool = Field(False, alias="TRIVY_OFFLINE_SCAN")
    trivy_db_repository: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="TRIVY_DB_REPOSITORY")

    trivy_severity: Annotated[list[Severity], NoDecode] = Field(default_factory=list, alias="TRIVY_SEVERITY")
    trivy_ignore_unfixed: bool = Field(False, alias="TRIVY_IGNORE_UNFIXED")
    trivy_scanners: Annotated[list[ScannerKind], NoDecode] = Field(default_factory=list, alias="TRIVY_SCANNERS")
    # The verdict (the second seed's names and defaults):
    trivy_critical_threshold: int = Field(0, alias="TRIVY_CRITICAL_THRESHOLD", ge=0)
    trivy_high_threshold: int = Field(10, alias="TRIVY_HIGH_THRESHOLD", ge=0)
    # Product setting: also store a CycloneDX SBOM (sbom.cdx.json) converted from the report.
    scan_sbom: Literal["none", "cyclonedx"] = Field("none", alias="SCAN_SBOM")

    # Change notifications and the decision (issue 10, monitor/). Webhook URLs carry
    # their own credentials (Teams, Slack): secrets, never logged or quoted.
    notify_webhook_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, alias="NOTIFY_WEBHOOK_URLS"
    )
    notify_min_severity: Severity = Field("HIGH", alias="NOTIFY_MIN_SEVERITY")
    notify_attempts: int = Field(4, alias="NOTIFY_ATTEMPTS", ge=1, le=10)
    notify_timeout_s: float = Field(10.0, alias="NOTIFY_TIMEOUT", gt=0, le=60)
    trivy_auto_reject_critical: bool = Field(False, alias="TRIVY_AUTO_REJECT_CRITICAL")

    _split = field_validator("trivy_db_repository", "trivy_severity", "trivy_scanners", mode="before")(_split_list)

    @field_validator("trivy_db_repository", mode="after")
    @classmethod
    def _check_repositories(cls, repositories: list[str]) -> list[str]:
        for repository in repositories:
            parse_image_reference(repository, "TRIVY_DB_REPOSITORY")  # InvalidImageReference is a ValueError
        return repositories

    @field_validator("notify_webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        """Comma- or space-separated URLs."""
        return value.replace(",", " ").split() if isinstance(value, str) else value

    @field_validator("notify_webhook_urls", mode="after")
    @classmethod
    def _check_webhook_urls(cls, urls: list[SecretStr]) -> list[SecretStr]:
        for position, url in enumerate(urls, 1):
            parts = urlsplit(url.get_secret_value())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"URL #{position} must be an http:// or https:// URL")
        return urls

    @field_validator("az_blob_storage_sas", mode="after")
    @classmethod
    def _check_container_sas_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = urlsplit(value.get_secret_value())
        if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/") == "":
            raise ValueError(
                "must be a container URL with its SAS token, "
                "e.g. https://<account>.blob.core.windows.net/<container>?sv=...&sig=..."
            )
        if "sig=" not in url.query:
            raise ValueError("the container URL carries no SAS token (no 'sig=' in its query string)")
        return value

    @field_validator("az_blob_storage_url", mode="after")
    @classmethod
    def _check_container_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme != "https" or not url.netloc or url.path.strip("/") == "":
            raise ValueError(
                "must be an https container URL, e.g. https://<account>.blob.core.windows.net/<container> "
                "(Azure AD tokens are only sent over HTTPS)"
            )
        if url.query:
            raise ValueError("must carry no query string: a URL with a SAS token goes in AZ_BLOB_STORAGE_SAS")
        return value.rstrip("/")

    @property
    def blob_container_url(self) -> str:
        """The container to write to: the SAS URL, or the plain URL used with the app's identity."""
        if self.az_blob_storage_sas is not None:
            return self.az_blob_storage_sas.get_secret_value()
        return self.az_blob_storage_url or ""

    @property
    def scanner_short_id(self) -> str:
        return str(self.scanner_identifier).replace("-", "")[:8]
