"""Registry credentials: the YAML file's entries, which entry serves an image,
and the secret values handed to trivy and to the registry API client.

An entry authenticates with a username and a ``password`` (or a
``password-setting``: the name of the app setting holding it, on Azure a Key
Vault reference), or with ``auth: azure-identity``: an ACR refresh token
exchanged for the app's Azure identity (``acr.py``). An ACR host with no entry
uses the identity when one is available. ``resolve_credentials(find_credentials(...))``
is the one resolution trivy's runs and the registry API client share.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ..identity import identity_available
from .acr import ACR_USERNAME, acr_refresh_token, is_acr_host
from .reference import ImageReference, normalise_registry_host


class RegistryCredentials(BaseModel):
    """One entry of ``registries`` in the YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    address: str = Field(min_length=1, description="host[:port], e.g. myacr.azurecr.io or localhost:5000")
    username: str | None = None
    password: SecretStr | None = None
    password_setting: str | None = Field(None, alias="password-setting", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    auth: Literal["password", "azure-identity"] = "password"
    insecure: bool = Field(False, description="plain HTTP / unverified TLS, for a local registry")

    @field_validator("address")
    @classmethod
    def _normalise_address(cls, value: str) -> str:
        return normalise_registry_host(value)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> RegistryCredentials:
        if self.password is not None and self.password_setting is not None:
            raise ValueError("give password or password-setting, not both")
        if self.auth == "azure-identity" and (self.username or self.password or self.password_setting):
            raise ValueError("auth: azure-identity takes no username, password or password-setting")
        if self.password_setting is not None and not self.username:
            raise ValueError("password-setting needs a username")
        return self

    def setting_problem(self) -> str | None:
        """The configuration problem of a ``password-setting`` that is not set (never its value)."""
        if self.password_setting and not os.environ.get(self.password_setting):
            return (f"TRIVY_CONFIG_PATH: registries entry {self.address!r}: password-setting names the app setting "
                    f"{self.password_setting!r}, which is not set or empty")
        return None


def find_credentials(
    reference: ImageReference, registries: Iterable[RegistryCredentials]
) -> RegistryCredentials | None:
    """The configured registry whose address is the image's registry host; for an
    ACR host without an entry, the app's Azure identity when one is available."""
    for entry in registries:
        if entry.address == reference.registry:
            return entry
    if is_acr_host(reference.registry) and identity_available():
        return RegistryCredentials(address=reference.registry, auth="azure-identity")
    return None


@dataclass(frozen=True)
class Credentials:
    """Resolved credentials for one registry host (``normalise_registry_host`` form)."""

    registry: str
    username: str
    password: str = field(repr=False)


def resolve_credentials(entry: RegistryCredentials | None) -> Credentials | None:
    """The secret values of an entry, or ``None`` for anonymous access.

    ``auth: azure-identity`` exchanges the identity's token for an ACR refresh
    token (cached; ``ScanFailed`` when refused or unreachable).
    """
    if entry is None:
        return None
    if entry.auth == "azure-identity":
        return Credentials(entry.address, ACR_USERNAME, acr_refresh_token(entry.address, insecure=entry.insecure))
    if not entry.username:
        return None
    if entry.password_setting:
        password = os.environ.get(entry.password_setting, "")
    else:
        password = entry.password.get_secret_value() if entry.password else ""
    return Credentials(entry.address, entry.username, password)
