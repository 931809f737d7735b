"""Keeps secrets out of text that leaves the process (logs, meta, exceptions).

Two layers: the exact secret values the scanner knows about (registry
passwords, the SAS token, the secret components of configured URLs), and
patterns for credentials that libraries echo back on their own, such as
urllib3 quoting a request URL with its SAS query or a URL's ``user:password@``.

A configured URL is a secret as a whole and by component (``url_secrets``):
urllib3 logs a request line as ``"POST /services/T0/xoxSECRET?token=... HTTP/1.1"``,
without the scheme and host, so the whole URL alone would not match it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, unquote_plus, urlsplit

REDACTED = "***"

_CREDENTIAL_PATTERNS = (
    # SAS query parameters, wherever a URL is quoted (the signature is the secret,
    # the rest of the query is dropped too: it is noise in an error message).
    re.compile(r"(?i)([?&])(sig|se|sp|sv|ss|srt|sr|st|spr|skoid|sktid|skt|ske|sks|skv|sdd)=[^&\s'\"]*"),
    re.compile(r"(?i)(AccountKey|SharedAccessSignature|SharedAccessKey)=[^;\s'\"]+"),
    re.compile(r"(?i)(authorization:\s*)(basic|bearer)\s+[^\s'\"]+"),
    # A URL's userinfo (user:password@ or token@), up to its last @ before the path.
    re.compile(r"(://)[^/\s?#'\"<>]*@"),
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


# A URL component shorter than this is removed only where it stands whole (see ``UrlPart``).
_WHOLE_WORD_BELOW = 8
# A path segment that is a short word of letters (api, hooks, trivy) names a route, not a credential.
# A path segment that names a route rather than a secret: a short word (``api``, ``Hooks``), or
# lower-case words of any length (``services``, ``webhooks``, ``incoming-webhook``): tokens mix
# case and digits, and redacting such words anywhere would cut them out of every line.
_ROUTE_WORD = re.compile(r"[A-Za-z]{1,7}|[a-z]+(?:[-_][a-z]+)*")


class UrlPart(str):
    """A secret that is one component of a configured URL (a path segment, a query value,
    userinfo). One of 8 characters or more is removed wherever it appears, as any secret;
    a shorter one (``json`` of ``?format=json``) only where it stands whole (not inside a longer
    run of letters and digits), so that it does not cut words out of every other line."""


def url_secrets(url: str, *, path_segments: bool) -> list[str]:
    """The secret components of ``url``: every query value and the userinfo, and, with
    ``path_segments``, every path segment but a route word (``_ROUTE_WORD``); each as written
    and percent-decoded/encoded."""
    parts = urlsplit(url)
    components = [pair.split("=", 1)[-1] for pair in parts.query.split("&")]
    userinfo = parts.netloc.rpartition("@")[0]
    components += [userinfo, *userinfo.split(":", 1)] if userinfo else []
    components += [s for s in parts.path.split("/") if not _ROUTE_WORD.fullmatch(s)] if path_segments else []
    forms = {variant for raw in components
             for variant in (raw, unquote(raw), unquote_plus(raw), quote(unquote(raw), safe=""))}  # fmt: skip
    return [UrlPart(form) for form in sorted(forms) if len(form) >= 3]


class Redactor:
    """Replaces known secret values and credential-shaped substrings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        given = [s for s in secrets if s and len(s) >= 3]
        anywhere = {str(s) for s in given if not isinstance(s, UrlPart) or len(s) >= _WHOLE_WORD_BELOW}
        # Longest first, so that a secret containing another is removed whole.
        self._secrets = sorted(anywhere, key=len, reverse=True)
        self._words = sorted({str(s) for s in given if isinstance(s, UrlPart)} - anywhere, key=len, reverse=True)
        self._word_pattern: re.Pattern[str] | None = None
        if self._words:  # whole: not inside a longer run of letters and digits; a %XX before it is a bound
            words = "|".join(map(re.escape, self._words))
            self._word_pattern = re.compile(rf"(?:(?<![A-Za-z0-9])|(?<=%[0-9A-Fa-f]{{2}}))(?:{words})(?![A-Za-z0-9])")

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        return Redactor([*self._secrets, *map(UrlPart, self._words), *secrets])

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        if self._word_pattern is not None:
            text = self._word_pattern.sub(REDACTED, text)
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
