"""Turning trivy's exit status and stderr into a typed, retry-aware failure.

Trivy reports every fatal error as one ``FATAL`` line whose text chains the
causes (``image scan error: ... remote error: GET ...: UNAUTHORIZED: ...``).
The rules below look for the registry's error codes (distribution spec) and
network errors in that chain. Anything not recognised is *transient*: it is
retried a bounded number of times and then quarantined with its reason, which
loses nothing, whereas wrongly calling a passing fault permanent would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FailureKind, ScanFailed


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    kind: FailureKind
    reason: str
    explanation: str


def _rule(pattern: str, kind: FailureKind, reason: str, explanation: str) -> _Rule:
    return _Rule(re.compile(pattern, re.IGNORECASE), kind, reason, explanation)


P, T = FailureKind.PERMANENT, FailureKind.TRANSIENT

# Order matters: the first match wins, so specific causes precede generic ones.
_RULES: tuple[_Rule, ...] = (
    _rule(r"context deadline exceeded|deadline exceeded", T, "timeout", "trivy timed out"),
    _rule(r"TOOMANYREQUESTS|429 Too Many Requests|rate limit", T, "rate-limited", "the registry rate-limited the request"),
    # trivy tries the configured credentials and then anonymously and reports both; one
    # MANIFEST_UNKNOWN means the registry let us in and the tag is missing.
    _rule(
        r"MANIFEST_UNKNOWN|NAME_UNKNOWN|manifest unknown|name unknown|404 Not Found|not found in",
        P,
        "not-found",
        "the image or tag was not found in the registry",
    ),
    _rule(
        r"UNAUTHORIZED|authentication required|401 Unauthorized|incorrect username or password",
        P,
        "unauthorized",
        "the registry refused the credentials (unauthorized)",
    ),
    _rule(r"DENIED|403 Forbidden|requested access to the resource is denied", P, "denied", "the registry denied access"),
    _rule(
        r"cannot skip downloading DB|--skip-db-update cannot be specified on the first run",
        T,
        "db-missing",
        "there is no vulnerability DB in the cache yet and updates are disabled",
    ),
    _rule(
        r"failed to download|DB error|database error|vulnerability DB",
        T,
        "db-unavailable",
        "the vulnerability DB could not be downloaded or opened",
    ),
    _rule(
        r"connection refused|no such host|i/o timeout|connection reset|TLS handshake timeout|network is unreachable"
        r"|server misbehaving|EOF\b|5\d\d (Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout)"
        r"|status code 5\d\d|UNAVAILABLE",
        T,
        "registry-unreachable",
        "the registry could not be reached or failed (network or 5xx)",
    ),
    _rule(r"http: server gave HTTP response to HTTPS client", P, "tls-mismatch",
          "the registry speaks plain HTTP; mark it 'insecure: true' in the registries configuration"),
    _rule(r"x509|certificate", P, "tls-error", "the registry's TLS certificate was not trusted"),
    _rule(
        r"unsupported (media|manifest)|no such file or directory|not a valid|invalid (tar|archive)|unable to analyze"
        r"|unknown os|analyze error|failed to analyze|archive/tar",
        P,
        "unanalysable",
        "trivy could not analyse this image",
    ),
)


def classify_trivy_failure(returncode: int, stderr: str) -> ScanFailed:
    """A ``ScanFailed`` for a trivy run that exited non-zero; ``stderr`` is already redacted."""
    detail = _fatal_line(stderr)
    for rule in _RULES:
        if rule.pattern.search(detail):
            return ScanFailed(f"{rule.explanation}: {detail}", kind=rule.kind, reason=rule.reason)
    return ScanFailed(
        f"trivy exited with code {returncode}: {detail}", kind=FailureKind.TRANSIENT, reason="trivy-error"
    )


def _fatal_line(stderr: str) -> str:
    """The most telling part of stderr: the FATAL line and what follows, else the tail."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "FATAL" in line:
            text = " ".join(lines[index:])
            return _shorten(re.sub(r"^\S+\s+FATAL\s+(Fatal error\s+)?", "", text))
    return _shorten(" ".join(lines[-5:])) or "(no error output)"


def _shorten(text: str, limit: int = 1500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
