"""Keeps secrets out of text that leaves the process (logs, meta, exceptions).

Two layers: the exact secret values the scanner knows about (registry
passwords, the SAS token), and patterns for credentials that libraries echo
back on their own, such as urllib3 quoting a request URL with its SAS query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"

_CREDENTIAL_PATTERNS = (
    # SAS query parameters, wherever a URL is quoted (the signature is the secret,
    # the rest of the query is dropped too: it is noise in an error message).
    re.compile(r"(?i)([?&])(sig|se|sp|sv|ss|srt|sr|st|spr|skoid|sktid|skt|ske|sks|skv|sdd)=[^&\s'\"]*"),
    re.compile(r"(?i)(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s'\"]+"),
    re.compile(r"(?i)(authorization:\s*)(basic|bearer)\s+[^\s'\"]+"),
    re.compile(r"(?i)(://)[^/\s:@]+:[^/\s@]+@"),
    # JSON Web Tokens (Azure AD access tokens, ACR refresh and access tokens), wherever quoted.
    re.compile(r"(eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
)


# Tokens wherever they appear (a response body, a form logged at DEBUG): JWTs (AAD and ACR
# access tokens) and the values of token/password fields in JSON or form encoding.
_TOKEN_PATTERNS = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    (
        re.compile(r"(?i)(\b(?:access_token|refresh_token|id_token|client_secret|password)\"?\s*[:=]\s*\"?)[^\"&\s,}]+"),
        rf"\g<1>{REDACTED}",
    ),
)


class Redactor:
    """Replaces known secret values and credential-shaped substrings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is removed whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        return Redactor([*self._secrets, *secrets])

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _CREDENTIAL_PATTERNS:
            text = pattern.sub(_replacement, text)
        for token, replacement in _TOKEN_PATTERNS:
            text = token.sub(replacement, text)
        return text


def _replacement(match: re.Match[str]) -> str:
    groups = match.groups()
    prefix = groups[0] if groups else ""
    if prefix in ("?", "&"):
        return f"{prefix}{groups[1]}={REDACTED}"
    if prefix == "eyJ":
        return REDACTED
    if prefix == "://":
        return f"://{REDACTED}@"
    if prefix.lower().startswith("authorization"):
        return f"{prefix}{groups[1]} {REDACTED}"
    return f"{prefix}={REDACTED}"
