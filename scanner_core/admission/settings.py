"""The admission endpoints' settings (pydantic-settings): how a refusal is applied, what an
unscanned image means, what is exempt, how long a tag's digest is trusted, who may call.
Every row: docs/configuration.md#admission; the wiring: docs/admission.md.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..config import describe_error
from ..errors import ConfigurationError

AdmissionMode = Literal["enforce", "warn", "audit"]
UnscannedMode = Literal["deny", "warn", "allow"]
AdmissionAuth = Literal["function-key", "client-certificate"]
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}")  # SHA-1 (App Service's) or SHA-256


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class AdmissionSettings(BaseSettings):
    """``ADMISSION_*``: read per request (cheap), except ``ADMISSION_AUTH``, which fixes the
    routes' auth level when the worker indexes the functions."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, populate_by_name=True, env_ignore_empty=True
    )

    mode: AdmissionMode = Field("enforce", alias="ADMISSION_MODE")
    unscanned: UnscannedMode = Field("deny", alias="ADMISSION_UNSCANNED")
    exempt_namespaces: Annotated[tuple[str, ...], NoDecode] = Field((), alias="ADMISSION_EXEMPT_NAMESPACES")
    exempt_images: Annotated[tuple[str, ...], NoDecode] = Field((), alias="ADMISSION_EXEMPT_IMAGES")
    tag_ttl_seconds: int = Field(60, alias="ADMISSION_TAG_TTL_SECONDS", ge=0, le=3600)
    verdict_ttl_seconds: int = Field(5, alias="ADMISSION_VERDICT_TTL_SECONDS", ge=0, le=300)
    enqueue_window_seconds: int = Field(3600, alias="ADMISSION_ENQUEUE_WINDOW_SECONDS", ge=60, le=7 * 86_400)
    enqueue_per_namespace: int = Field(20, alias="ADMISSION_ENQUEUE_PER_NAMESPACE", ge=0, le=10_000)
    auth: AdmissionAuth = Field("function-key", alias="ADMISSION_AUTH")
    client_cert_thumbprints: Annotated[tuple[str, ...], NoDecode] = Field(
        (), alias="ADMISSION_CLIENT_CERT_THUMBPRINTS")
    client_ca: str | None = Field(None, alias="ADMISSION_CLIENT_CA", repr=False)  # PEM text, or a PEM file's path

    @field_validator("exempt_namespaces", "exempt_images", "client_cert_thumbprints", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("client_cert_thumbprints", mode="after")
    @classmethod
    def _thumbprints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _THUMBPRINT.fullmatch(item.replace(":", "")):
                raise ValueError(f"{item[:80]!r} is not a thumbprint: 40 (SHA-1) or 64 (SHA-256) hex digits")
        return tuple(item.replace(":", "").upper() for item in value)


def load_admission_settings() -> AdmissionSettings:
    """The settings now (kept per process while the ``ADMISSION_*`` values stay the same);
    ``ConfigurationError`` naming each bad one."""
    values = tuple(os.environ.get(name) for name in _NAMES)
    with _lock:
        if _cached is not None and _cached[0] == values:
            return _cached[1]
    try:
        settings = AdmissionSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        raise ConfigurationError([describe_error(e) for e in error.errors()]) from None
    _remember(values, settings)
    return settings


_NAMES = tuple(field.alias for field in AdmissionSettings.model_fields.values() if field.alias)
_lock = threading.Lock()
_cached: tuple[tuple[str | None, ...], AdmissionSettings] | None = None  # an explicit per-process cache


def _remember(values: tuple[str | None, ...], settings: AdmissionSettings) -> None:
    global _cached
    with _lock:
        _cached = (values, settings)
