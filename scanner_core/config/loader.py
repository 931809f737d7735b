"""The whole configuration, validated at once before any scan."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigurationError
from ..policy import Policy, load_policy
from ..redact import url_secrets
from .file import ScannerFileConfig, load_file_config
from .problems import describe_error
from .settings import Settings


class ScannerConfig(BaseModel):
    """Everything the core needs, validated as a whole before any scan."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    settings: Settings
    file: ScannerFileConfig
    policy: Policy | None = None  # POLICY_PATH's rules, or the built-in default (issue 15)

    @property
    def secrets(self) -> list[str]:
        """Every secret value, so that logs and errors can be scrubbed of them."""
        values = []
        if self.settings.az_blob_storage_sas is not None:
            values.append(self.settings.az_blob_storage_sas.get_secret_value())
            query = urlsplit(values[0]).query
            values += [part.split("=", 1)[1] for part in query.split("&") if part.startswith("sig=")]
        values += [r.password.get_secret_value() for r in self.file.registries if r.password]
        values += [url.get_secret_value() for url in self.settings.notify_webhook_urls]
        # By component too (redact.py): every path segment and query value of a webhook URL; a feed
        # URL's query values (its path is the public feed's).
        values += [part for url in self.settings.notify_webhook_urls
                   for part in url_secrets(url.get_secret_value(), path_segments=True)]  # fmt: skip
        values += [part for url in (self.settings.kev_feed_url, self.settings.epss_feed_url)
                   for part in url_secrets(url, path_segments=False)]  # fmt: skip
        values += [v for r in self.file.registries if r.password_setting and (v := os.environ.get(r.password_setting))]
        if self.settings.notify_webhook_secret is not None:
            values.append(self.settings.notify_webhook_secret.get_secret_value())
        if self.settings.trivy_server_token is not None:
            values.append(self.settings.trivy_server_token.get_secret_value())
        return values


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

    policy = None
    if settings is not None:
        try:
            policy = load_policy(settings)
        except ConfigurationError as exc:
            problems += exc.problems

    problems += _blob_container_problems()
    problems += [problem for entry in file_config.registries if (problem := entry.setting_problem())]
    if problems or settings is None:
        raise ConfigurationError(problems)
    return ScannerConfig(settings=settings, file=file_config, policy=policy)


def _blob_container_problems() -> list[str]:
    """Exactly one way to reach the results container (read from the environment, so
    that it is reported with the other settings' problems)."""
    given = [bool(os.environ.get("AZ_BLOB_STORAGE_SAS")), bool(os.environ.get("AZ_BLOB_STORAGE_URL"))]
    if all(given):
        return [("AZ_BLOB_STORAGE_URL, AZ_BLOB_STORAGE_SAS: set only one: the container URL (the app's Azure "
                 "identity is used) or the container URL with a SAS token")]
    if not any(given):
        return [("AZ_BLOB_STORAGE_URL or AZ_BLOB_STORAGE_SAS: one is required: the container URL, used with the "
                 "app's Azure identity (e.g. https://<account>.blob.core.windows.net/<container>), or the container "
                 "URL with a SAS token")]
    return []
