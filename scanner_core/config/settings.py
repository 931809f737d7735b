"""The environment (pydantic-settings): every variable of the scanner.

Settings that mean exactly what trivy's own variable means keep trivy's name
(``TRIVY_SKIP_DB_UPDATE``...). The wrapper's own ``TRIVY_TIMEOUT`` (milliseconds)
does *not* mean what trivy's does (a duration such as ``5m``), which is why the
trivy child process never inherits this environment (see ``trivy/process.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..registry import parse_allowlist, parse_image_reference, parse_platform

DEFAULT_TRIVY_TIMEOUT_MS = 300_000
DEFAULT_CACHE_DIR = Path("/tmp/trivy-cache")
KEV_FEED_URL = "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json"
EPSS_FEED_URL = "https://epss.empiricalsecurity.com/epss_scores-current.csv.gz"

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
ScannerKind = Literal["vuln", "secret", "license", "misconfig"]
# Settings whose values are never quoted in a configuration error.
SECRET_SETTINGS = frozenset({
    "AZ_BLOB_STORAGE_SAS", "NOTIFY_WEBHOOK_URLS", "NOTIFY_WEBHOOK_SECRET", "TRIVY_SERVER_TOKEN",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "KEV_FEED_URL", "EPSS_FEED_URL",  # a mirror's URL may hold a token
})


def _split_list(value: Any) -> Any:
    """``"a, b"`` → ``["a", "b"]``: trivy's own comma-separated form for list settings."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _readable_file(path: Path) -> None:
    """A suppression file must be there and readable when the scanner starts."""
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror or error} (a file trivy reads must exist and be readable)") from None
    if not path.is_file():
        raise ValueError(f"{path} is not a file")


def _feed_default(name: str, url: str) -> str:
    """A feed's URL when its setting is not a URL: off ("") when set empty, else the public feed."""
    return "" if os.environ.get(name) == "" else url


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
    # trivy's registry traffic through the egress proxy, under the registry guard (issue 23).
    egress_guard: bool = Field(True, alias="EGRESS_GUARD")
    trivy_db_repository: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="TRIVY_DB_REPOSITORY")

    trivy_severity: Annotated[list[Severity], NoDecode] = Field(default_factory=list, alias="TRIVY_SEVERITY")
    trivy_ignore_unfixed: bool = Field(False, alias="TRIVY_IGNORE_UNFIXED")
    trivy_scanners: Annotated[list[ScannerKind], NoDecode] = Field(default_factory=list, alias="TRIVY_SCANNERS")
    # The verdict (the second seed's names and defaults):
    trivy_critical_threshold: int = Field(0, alias="TRIVY_CRITICAL_THRESHOLD", ge=0)
    trivy_high_threshold: int = Field(10, alias="TRIVY_HIGH_THRESHOLD", ge=0)
    # The monitor loop (monitor/): new tags of watched repositories, rescans, reuse of audits.
    watch_max_new_tags: int | Literal["all"] = Field(10, alias="WATCH_MAX_NEW_TAGS")
    # Bounds of one watch run (issue 23): tags/list pages and tags read per entry, and the run's seconds,
    # shared out between the entries so that an endless registry cannot starve the others.
    watch_max_pages: int = Field(100, alias="WATCH_MAX_PAGES", ge=1, le=100_000)
    watch_max_tags: int = Field(10_000, alias="WATCH_MAX_TAGS", ge=1, le=1_000_000)
    watch_run_seconds: float = Field(240.0, alias="WATCH_RUN_SECONDS", gt=0, le=3_600)
    rescan_max_age_hours: float = Field(24, alias="RESCAN_MAX_AGE_HOURS", ge=0)
    rescan_window_days: float = Field(30, alias="RESCAN_WINDOW_DAYS", gt=0)
    scan_dedup: bool = Field(True, alias="SCAN_DEDUP")
    # Rescans of a digest match its stored inventory (trivy sbom), or pull the image again (issue 18).
    rescan_from: Literal["inventory", "image"] = Field("inventory", alias="RESCAN_FROM")
    # Product setting: also store a CycloneDX SBOM (sbom.cdx.json) converted from the report.
    scan_sbom: Literal["none", "cyclonedx"] = Field("none", alias="SCAN_SBOM")
    # The fleet query tables' connection (issue 24): the *name* of a connection setting, read by the
    # host's rules; empty: SCAN_QUEUE_CONNECTION's (AzureWebJobsStorage). Nothing of it set: no tables.
    fleet_tables_connection: str = Field("", alias="FLEET_TABLES_CONNECTION", max_length=200)
    # Retries of transient failures (queue/backoff.py): 30 s doubling to 16 min, 7 attempts,
    # so a 31.5-minute outage loses no scan.
    retry_backoff_base_seconds: int = Field(30, alias="RETRY_BACKOFF_BASE_SECONDS", ge=1, le=86_400)
    retry_backoff_max_seconds: int = Field(960, alias="RETRY_BACKOFF_MAX_SECONDS", ge=1, le=604_800)
    retry_max_attempts: int = Field(7, alias="RETRY_MAX_ATTEMPTS", ge=1, le=100)
    # Real-world images (issue 8): the Java DB, platforms, big images, end-of-life OSes, suppressions.
    trivy_java_db_repository: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="TRIVY_JAVA_DB_REPOSITORY"
    )
    trivy_skip_java_db_update: bool | None = Field(None, alias="TRIVY_SKIP_JAVA_DB_UPDATE")
    trivy_platform: str | None = Field(None, alias="TRIVY_PLATFORM")
    scan_scratch_dir: Path | None = Field(None, alias="SCAN_SCRATCH_DIR")
    max_image_size_mb: int | None = Field(None, alias="MAX_IMAGE_SIZE_MB", ge=1)
    trivy_fail_on_eosl: bool = Field(False, alias="TRIVY_FAIL_ON_EOSL")
    trivy_db_stale_after_hours: float = Field(24.0, alias="TRIVY_DB_STALE_AFTER_HOURS", ge=0)
    trivy_ignorefile: Path | None = Field(None, alias="TRIVY_IGNOREFILE")
    trivy_vex: Annotated[list[Path], NoDecode] = Field(default_factory=list, alias="TRIVY_VEX")
    # One DB download per fleet (issue 11): the refresh timer publishes the DBs beside the audits.
    db_snapshot: Literal["none", "blob"] = Field("blob", alias="DB_SNAPSHOT")
    db_snapshot_max_age_hours: float = Field(24.0, alias="DB_SNAPSHOT_MAX_AGE_HOURS", gt=0)
    db_snapshot_check_seconds: float = Field(600.0, alias="DB_SNAPSHOT_CHECK_SECONDS", ge=0)
    # trivy's client/server mode (issue 11): scans ask a `trivy server` and need no local DB.
    trivy_server: str | None = Field(None, alias="TRIVY_SERVER")
    trivy_server_token: SecretStr | None = Field(None, alias="TRIVY_SERVER_TOKEN")
    trivy_server_token_header: str = Field(
        "Trivy-Token", alias="TRIVY_SERVER_TOKEN_HEADER", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
    )

    # Change notifications and the decision (issue 10, monitor/). Webhook URLs carry
    # their own credentials (Teams, Slack): secrets, never logged or quoted.
    notify_webhook_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, alias="NOTIFY_WEBHOOK_URLS"
    )
    # The HMAC key of the events' X-Signature-256 (follow_up/signing.py); a secret (Key Vault reference).
    notify_webhook_secret: SecretStr | None = Field(None, alias="NOTIFY_WEBHOOK_SECRET", min_length=16)
    notify_min_severity: Severity = Field("HIGH", alias="NOTIFY_MIN_SEVERITY")
    notify_attempts: int = Field(4, alias="NOTIFY_ATTEMPTS", ge=1, le=10)
    notify_timeout_s: float = Field(10.0, alias="NOTIFY_TIMEOUT", gt=0, le=60)
    trivy_auto_reject_critical: bool = Field(False, alias="TRIVY_AUTO_REJECT_CRITICAL")
    # Metrics (issue 19): the images GET /api/metrics gives series to, newest request first.
    metrics_max_images: int = Field(500, alias="METRICS_MAX_IMAGES", ge=1, le=100_000)
    # Azure Monitor through OpenTelemetry (telemetry/): traces per scan and the metrics; unset: off.
    applicationinsights_connection_string: SecretStr | None = Field(None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING")
    # The approval gate (issue 15, approvals/): role or group claims that may approve or reject.
    approver_roles: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="APPROVER_ROLES")
    # The approval gate (issue 15): the policy file (policy/), the exploitability feeds (exploits/).
    policy_path: Path | None = Field(None, alias="POLICY_PATH")
    # Set but empty: that feed is off (env_ignore_empty would otherwise mean the default).
    kev_feed_url: str = Field(default_factory=lambda: _feed_default("KEV_FEED_URL", KEV_FEED_URL), alias="KEV_FEED_URL")
    epss_feed_url: str = Field(
        default_factory=lambda: _feed_default("EPSS_FEED_URL", EPSS_FEED_URL), alias="EPSS_FEED_URL"
    )
    # The registries requests may name (registry/guard.py, which applies it at every network edge).
    allowed_registries: str | None = Field(None, alias="ALLOWED_REGISTRIES")

    _split = field_validator(
        "trivy_db_repository", "trivy_severity", "trivy_scanners", "trivy_java_db_repository", "trivy_vex",
        "approver_roles", mode="before",
    )(_split_list)

    @field_validator("trivy_db_repository", "trivy_java_db_repository", mode="after")
    @classmethod
    def _check_repositories(cls, repositories: list[str], info: ValidationInfo) -> list[str]:
        setting = "TRIVY_JAVA_DB_REPOSITORY" if info.field_name == "trivy_java_db_repository" else "TRIVY_DB_REPOSITORY"
        for repository in repositories:
            parse_image_reference(repository, setting)  # InvalidImageReference is a ValueError
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

    @field_validator("kev_feed_url", "epss_feed_url", mode="after")
    @classmethod
    def _check_feed_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError("must be an http:// or https:// URL, or empty to turn the feed off")
        if "@" in parts.netloc:  # its host is written to status.json and the heartbeat (issue 23)
            raise ValueError("must carry no user name or password before the host (user:password@...); "
                             "a mirror that needs a credential can take it as a query value, which is redacted")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number (its message would quote it)
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        return value

    @field_validator("allowed_registries", mode="after")
    @classmethod
    def _check_allowed_registries(cls, value: str | None) -> str | None:
        parse_allowlist(value)  # ValueError naming the bad entry
        return value

    @field_validator("trivy_platform", mode="after")
    @classmethod
    def _check_platform(cls, value: str | None) -> str | None:
        return str(parse_platform(value, "TRIVY_PLATFORM")) if value else None  # InvalidPlatform is a ValueError

    @field_validator("trivy_ignorefile", mode="after")
    @classmethod
    def _check_ignorefile(cls, path: Path | None) -> Path | None:
        if path is not None:
            _readable_file(path)
        return path

    @field_validator("trivy_vex", mode="after")
    @classmethod
    def _check_vex(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            _readable_file(path)
        return paths

    @field_validator("scan_scratch_dir", mode="after")
    @classmethod
    def _check_scratch_dir(cls, path: Path | None) -> Path | None:
        if path is not None and path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        return path

    @property
    def java_db_updates_allowed(self) -> bool:
        """``TRIVY_SKIP_JAVA_DB_UPDATE``, which follows ``TRIVY_SKIP_DB_UPDATE`` when unset."""
        skip = self.trivy_skip_db_update if self.trivy_skip_java_db_update is None else self.trivy_skip_java_db_update
        return not skip
    @field_validator("trivy_server", mode="after")
    @classmethod
    def _check_server_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.username or url.password:
            raise ValueError(
                "must be the trivy server's base URL, http:// or https:// with a host and no query or "
                "credentials (the token goes in TRIVY_SERVER_TOKEN), e.g. https://trivy.internal.example:4954"
            )
        return value.rstrip("/")

    @field_validator("watch_max_new_tags", mode="after")
    @classmethod
    def _check_max_new_tags(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more, or 'all'")
        return value

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
