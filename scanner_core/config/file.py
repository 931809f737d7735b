"""The YAML file at ``TRIVY_CONFIG_PATH``: heartbeat period, registries, watched repositories."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigurationError
from ..registry import RegistryCredentials
from ..yaml_files import file_problem, read_yaml_file
from .watchlist import WatchEntry

DEFAULT_HEARTBEAT_PERIOD_SECONDS = 300


class ScannerFileConfig(BaseModel):
    """The YAML file named by ``TRIVY_CONFIG_PATH``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    heartbeat_period: int = Field(DEFAULT_HEARTBEAT_PERIOD_SECONDS, alias="heartbeat-period", gt=0)
    registries: list[RegistryCredentials] = Field(default_factory=list)
    watch: list[WatchEntry] = Field(default_factory=list)  # repositories whose new tags are scanned (monitor/)


def load_file_config(path: Path) -> ScannerFileConfig:
    source = f"TRIVY_CONFIG_PATH ({path})"
    raw = read_yaml_file(path, source)
    try:
        return ScannerFileConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigurationError([file_problem(e, source) for e in exc.errors()]) from None
