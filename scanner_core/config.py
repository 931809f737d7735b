"""Configuration: the environment (pydantic-settings) and the YAML file at
``TRIVY_CONFIG_PATH``.

Settings that mean exactly what trivy's own variable means keep trivy's name
(``TRIVY_SKIP_DB_UPDATE``...). The wrapper's own ``TRIVY_TIMEOUT`` (milliseconds)
does *not* mean what trivy's does (a duration such as ``5m``), which is why the
trivy child process never inherits this environment (see ``trivy.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigurationError

DEFAULT_HEARTBEAT_PERIOD_SECONDS = 300
DEFAULT_TRIVY_TIMEOUT_MS = 300_000
DEFAULT_CACHE_DIR = Path("/tmp/trivy-cache")

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
ScannerKind = Literal["vuln", "secret"]


class RegistryCredentials(BaseModel):
    """One entry of ``registries`` in the YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(min_length=1, description="host[:port], e.g. myacr.azurecr.io or localhost:5000")
    username: str | None = None
    password: SecretStr | None = None
    insecure: bool = Field(False, description="plain HTTP / unverified TLS, for a local registry")

    @field_validator("address")
    @classmethod
    def _normalise_address(cls, value: str) -> str:
        from .registry import normalise_registry_host

        return normalise_registry_host(value)


class ScannerFileConfig(BaseModel):
    """The YAML file named by ``TRIVY_CONFIG_PATH``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    heartbeat_period: int = Field(DEFAULT_HEARTBEAT_PERIOD_SECONDS, alias="heartbeat-period", gt=0)
    registries: list[RegistryCredentials] = Field(default_factory=list)


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
    az_blob_storage_sas: SecretStr = Field(alias="AZ_BLOB_STORAGE_SAS")

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

    _split = field_validator("trivy_db_repository", "trivy_severity", "trivy_scanners", mode="before")(_split_list)

    @field_validator("trivy_db_repository", mode="after")
    @classmethod
    def _check_repositories(cls, repositories: list[str]) -> list[str]:
        from .registry import parse_image_reference

        for repository in repositories:
            parse_image_reference(repository, "TRIVY_DB_REPOSITORY")  # InvalidImageReference is a ValueError
        return repositories

    @field_validator("az_blob_storage_sas", mode="after")
    @classmethod
    def _check_container_sas_url(cls, value: SecretStr) -> SecretStr:
        url = urlsplit(value.get_secret_value())
        if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/") == "":
            raise ValueError(
                "must be a container URL with its SAS token, "
                "e.g. https://<account>.blob.core.windows.net/<container>?sv=...&sig=..."
            )
        if "sig=" not in url.query:
            raise ValueError("the container URL carries no SAS token (no 'sig=' in its query string)")
        return value

    @property
    def scanner_short_id(self) -> str:
        return str(self.scanner_identifier).replace("-", "")[:8]


class ScannerConfig(BaseModel):
    """Everything the core needs, validated as a whole before any scan."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    settings: Settings
    file: ScannerFileConfig

    @property
    def secrets(self) -> list[str]:
        """Every secret value, so that logs and errors can be scrubbed of them."""
        values = [self.settings.az_blob_storage_sas.get_secret_value()]
        query = urlsplit(values[0]).query
        values += [part.split("=", 1)[1] for part in query.split("&") if part.startswith("sig=")]
        values += [r.password.get_secret_value() for r in self.file.registries if r.password]
        return values


_SECRET_SETTINGS = {"AZ_BLOB_STORAGE_SAS"}


def describe_error(error: Any, source: str = "") -> str:
    """One problem line. The value is quoted only for environment settings that are
    not secret: a value from the YAML file may be (or contain) a registry entry with
    its password, even when the error is about a parent field."""
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    quotable = not source and error["type"] != "missing" and str(error["loc"][0]) not in _SECRET_SETTINGS
    shown = f" (got {error['input']!r})" if quotable else ""
    prefix = f"{source}: " if source else ""
    return f"{prefix}{location}: {message}{shown}"


def load_config() -> ScannerConfig:
    """Reads and validates the environment and the YAML file.

    Raises one ``ConfigurationError`` naming every bad field and what it
    allows; secret values are never quoted.
    """
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        problems += [describe_error(e, "") for e in exc.errors()]

    file_config = ScannerFileConfig()
    path = settings.trivy_config_path if settings else None
    if path is not None:
        try:
            file_config = load_file_config(path)
        except ConfigurationError as exc:
            problems += exc.problems

    if problems or settings is None:
        raise ConfigurationError(problems)
    return ScannerConfig(settings=settings, file=file_config)


def load_file_config(path: Path) -> ScannerFileConfig:
    source = f"TRIVY_CONFIG_PATH ({path})"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError([f"{source}: cannot be read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line, which may hold a password: say where, not what.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigurationError([f"{source}: not valid YAML{where}: {problem}"]) from None
    try:
        return ScannerFileConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigurationError([describe_error(e, source) for e in exc.errors()]) from None
