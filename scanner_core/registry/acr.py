"""Azure Container Registry with the app's Azure identity: no password to manage.

As ``az acr login`` does (``docs/AAD-OAuth.md`` in github.com/Azure/acr): an
Azure AD access token for Azure Resource Manager is exchanged at the
registry's ``POST /oauth2/exchange`` (``grant_type=access_token``, ``service``,
``tenant``, ``access_token``) for an ACR refresh token, which docker clients
(trivy, the registry API client) present as the password of the null-GUID
user. Refresh tokens are cached per registry and identity until five minutes
before they expire (ACR's last about three hours). No token is ever logged
or quoted in an error.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from ..errors import FailureKind, ScanFailed
from ..identity import azure_credential, identity_label, token_claims
from ..redact import Redactor
from .guard import current_guard

if TYPE_CHECKING:
    import requests

ACR_USERNAME = "00000000-0000-0000-0000-000000000000"
ACR_DOMAINS = (".azurecr.io", ".azurecr.cn", ".azurecr.us")
_ARM_SCOPES = {
    ".azurecr.cn": "https://management.chinacloudapi.cn/.default",
    ".azurecr.us": "https://management.usgovcloudapi.net/.default",
}
_DEFAULT_SCOPE = "https://management.azure.com/.default"
_MARGIN_SECONDS = 300
_FALLBACK_LIFETIME = 3600
_TIMEOUT_SECONDS = 30.0

_lock = threading.Lock()
_refresh_tokens: dict[tuple[str, str], tuple[str, float]] = {}


def is_acr_host(registry: str) -> bool:
    host = registry.split(":", 1)[0]
    return host.endswith(ACR_DOMAINS)


def acr_refresh_token(registry: str, *, insecure: bool = False) -> str:
    """A (cached) ACR refresh token for ``registry`` and the app's identity.

    Raises ``ScanFailed``: permanent ``unauthorized`` when the registry refuses
    the identity (naming its client id and the ``AcrPull`` role) or no identity
    is available; transient when the registry or the identity endpoint fails.
    """
    # Before an Azure AD token is even asked for: it is sent to the registry's exchange.
    current_guard().check_registry(registry, "registry")
    key = (registry, os.environ.get("AZURE_CLIENT_ID", ""))
    with _lock:
        cached = _refresh_tokens.get(key)
        if cached is not None and cached[1] > time.time():
            return cached[0]
    aad_token = _aad_token(registry)
    claims = token_claims(aad_token)
    refresh_token = _exchange(registry, aad_token, claims, insecure)
    expires = token_claims(refresh_token).get("exp")
    valid_until = (float(expires) if isinstance(expires, (int, float)) else time.time() + _FALLBACK_LIFETIME)
    with _lock:
        _refresh_tokens[key] = (refresh_token, valid_until - _MARGIN_SECONDS)
    return refresh_token


def forget_refresh_tokens() -> None:
    """Empties the per-process cache (tests; a role assignment that changed)."""
    with _lock:
        _refresh_tokens.clear()


def _aad_token(registry: str) -> str:
    from azure.core.exceptions import AzureError
    from azure.identity import CredentialUnavailableError

    scope = next((s for domain, s in _ARM_SCOPES.items() if registry.split(":")[0].endswith(domain)), _DEFAULT_SCOPE)
    try:
        return azure_credential().get_token(scope).token
    except CredentialUnavailableError:
        raise ScanFailed(
            f"{registry}: auth is azure-identity, but no Azure identity is available to this app "
            "(enable its managed identity, or set AZURE_CLIENT_ID for a user-assigned one)",
            kind=FailureKind.PERMANENT,
            reason="unauthorized",
        ) from None
    except AzureError as error:
        raise ScanFailed(
            f"{registry}: no Azure AD token for the app's identity: {type(error).__name__}",
            kind=FailureKind.TRANSIENT,
            reason="identity-unavailable",
        ) from None


def _exchange(registry: str, aad_token: str, claims: dict, insecure: bool) -> str:
    import requests

    from .guarded_http import GuardedSession

    tenant = str(claims.get("tid") or os.environ.get("AZURE_TENANT_ID") or "")
    form = {"grant_type": "access_token", "service": registry, "tenant": tenant, "access_token": aad_token}
    response: requests.Response | None = None
    for scheme in ("https", "http") if insecure else ("https",):
        try:
            with GuardedSession() as session:  # no redirect to a refused address
                response = session.post(f"{scheme}://{registry}/oauth2/exchange", data=form,
                                        timeout=_TIMEOUT_SECONDS, verify=not insecure)
            break
        except requests.exceptions.RequestException as error:
            if scheme == "https" and insecure:
                continue
            raise _unreachable(registry, type(error).__name__) from None
    if response is None:
        raise _unreachable(registry, "no HTTPS or HTTP answer")
    if response.status_code == 200:
        token = _json(response).get("refresh_token")
        if isinstance(token, str) and token:
            return token
        raise _unreachable(registry, "the exchange answered without a refresh_token")
    if response.status_code in (400, 401, 403, 404):
        detail = Redactor([aad_token])(_error_message(response))[:200]
        raise ScanFailed(
            f"{registry}: the registry refused the Azure AD token of {identity_label(claims)} at /oauth2/exchange "
            f"(HTTP {response.status_code}{': ' + detail if detail else ''}): grant that identity the AcrPull role "
            "on the registry",
            kind=FailureKind.PERMANENT,
            reason="unauthorized",
        )
    if response.status_code == 429:
        raise ScanFailed(f"{registry}: token exchange rate-limited (429)", kind=FailureKind.TRANSIENT,
                         reason="rate-limited")
    raise _unreachable(registry, f"HTTP {response.status_code} from /oauth2/exchange")


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_message(response: requests.Response) -> str:
    errors = _json(response).get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("message") or errors[0].get("code") or "")
    return ""


def _unreachable(registry: str, detail: str) -> ScanFailed:
    return ScanFailed(f"registry {registry} token exchange failed: {detail}", kind=FailureKind.TRANSIENT,
                      reason="registry-unreachable")
