"""The process's Azure token credential, made once per client id.

``DefaultAzureCredential`` tries, in order, environment service principals,
workload identity, the managed identity (App Service/Functions:
``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``; VMs: IMDS) and developer
sign-ins; ``AZURE_CLIENT_ID`` selects a user-assigned managed identity. The
credential caches its tokens until shortly before they expire, so it is kept
for the process's life (an explicit per-process cache).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# The variables that tell us an identity is there without asking a network endpoint.
_IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_SECRET",
                       "AZURE_CLIENT_CERTIFICATE_PATH")

_lock = threading.Lock()
_credentials: dict[tuple[str, str | None], TokenCredential] = {}


def azure_credential(client_id: str | None = None, *, managed_identity_only: bool = False) -> TokenCredential:
    """``DefaultAzureCredential`` (or, as the Functions host's ``credential:
    managedidentity``, ``ManagedIdentityCredential``) for ``client_id`` or
    ``AZURE_CLIENT_ID``; one object per process and kind."""
    client_id = client_id or os.environ.get("AZURE_CLIENT_ID") or None
    key = ("managed" if managed_identity_only else "default", client_id)
    with _lock:
        credential = _credentials.get(key)
        if credential is None:
            from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

            if managed_identity_only:
                credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
            else:
                credential = DefaultAzureCredential(managed_identity_client_id=client_id)
            _credentials[key] = credential
        return credential


def identity_available() -> bool:
    """True when the environment names an Azure identity (App Service/Functions
    managed identity, workload identity, a service principal). A VM's IMDS
    identity cannot be seen without a network call: there, say so explicitly
    (``auth: azure-identity``)."""
    return any(os.environ.get(name) for name in _IDENTITY_VARIABLES)


def identity_label(claims: dict[str, Any] | None = None) -> str:
    """Which identity this is, for error messages: its client id, never a token."""
    client_id = (claims or {}).get("appid") or (claims or {}).get("azp") or os.environ.get("AZURE_CLIENT_ID")
    return f"client id {client_id}" if client_id else "the system-assigned managed identity"


def token_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, *unverified* (for ``tid``, ``appid``, ``exp``: never for trust)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def forget_credentials() -> None:
    """Empties the per-process credential cache (tests; a changed ``AZURE_CLIENT_ID`` needs none)."""
    with _lock:
        _credentials.clear()
