"""Registry credentials: the YAML file's entries, which entry serves an image,
and the secret values handed to trivy and to the registry API client."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .reference import ImageReference, normalise_registry_host


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
        return normalise_registry_host(value)


def find_credentials(
    reference: ImageReference, registries: Iterable[RegistryCredentials]
) -> RegistryCredentials | None:
    """The configured registry whose address is the image's registry host."""
    for entry in registries:
        if entry.address == reference.registry:
            return entry
    return None


@dataclass(frozen=True)
class Credentials:
    """Resolved credentials for one registry host (``normalise_registry_host`` form)."""

    registry: str
    username: str
    password: str = field(repr=False)


def resolve_credentials(entry: RegistryCredentials | None) -> Credentials | None:
    """The secret values of a YAML entry, or ``None`` for anonymous access."""
    if entry is None or not entry.username:
        return None
    password = entry.password.get_secret_value() if entry.password else ""
    return Credentials(entry.address, entry.username, password)
