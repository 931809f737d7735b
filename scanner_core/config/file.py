"""The YAML file at ``TRIVY_CONFIG_PATH``: heartbeat period, registries, watched repositories."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigurationError
from ..monitor import WatchEntry
from ..registry import RegistryCredentials
from .problems import describe_error

DEFAULT_HEARTBEAT_PERIOD_SECONDS = 300


class ScannerFileConfig(BaseModel):
    """The YAML file named by ``TRIVY_CONFIG_PATH``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    heartbeat_period: int = Field(DEFAULT_HEARTBEAT_PERIOD_SECONDS, alias="heartbeat-period", gt=0)
    registries: list[RegistryCredentials] = Field(default_factory=list)
    watch: list[WatchEntry] = Field(default_factory=list)  # repositories whose new tags are scanned (monitor/)


def read_yaml_file(path: Path, source: str) -> object:
    """The YAML document at ``path``; ``ConfigurationError`` naming ``source`` (the setting)
    when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError([f"{source}: cannot be read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line, which may hold a password: say where, not what.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigurationError([f"{source}: not valid YAML{where}: {problem}"]) from None


def load_file_config(path: Path) -> ScannerFileConfig:
    source = f"TRIVY_CONFIG_PATH ({path})"
    raw = read_yaml_file(path, source)
    try:
        return ScannerFileConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigurationError([describe_error(e, source) for e in exc.errors()]) from None
