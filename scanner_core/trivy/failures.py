"""Turning trivy's exit status and stderr into a typed, retry-aware failure.

Trivy reports a fatal error as one ``FATAL`` line whose text chains the
causes. When it tried more than once (the configured credentials, then
anonymously) it lists each attempt: ``2 errors occurred: * remote error: ...
* remote error: ...``. Each attempt is classified on its own and the failure
is transient if *any* attempt failed for a passing reason: a private
registry answering 503 to the credentialed pull and 401 to the anonymous one
is down, not refusing us.

Registry error codes (distribution spec) are matched case-sensitively, so that
a local ``permission denied`` is not the registry's ``DENIED``. Anything not
recognised is transient: it is retried a bounded number of times and then
quarantined with its reason, which loses nothing, whereas wrongly calling a
passing fault permanent would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import FailureKind, ScanFailed

P, T = FailureKind.PERMANENT, FailureKind.TRANSIENT


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    kind: FailureKind
    reason: str
    explanation: str


def _rule(pattern: str, kind: FailureKind, reason: str, explanation: str) -> _Rule:
    return _Rule(re.compile(pattern), kind, reason, explanation)


# Causes that concern the whole run, whatever its attempts say (checked first, in order).
_RUN_RULES: tuple[_Rule, ...] = (
    # Client/server mode (TRIVY_SERVER): the server's twirp API refused or could not be reached.
    # A wrong token is the deployment's fault, not the image's: retried, then quarantined with its reason.
    _rule(r"twirp error unauthenticated|twirp error permission_denied", T, "server-unauthorized",
          "the trivy server refused the token (TRIVY_SERVER_TOKEN / TRIVY_SERVER_TOKEN_HEADER)"),
    _rule(r"twirp error (internal|unavailable|unknown|deadline_exceeded|malformed)[^\n]*(/twirp/|connect:|dial tcp)"
          r"|/twirp/trivy\.[^\n]*(connection refused|no such host|i/o timeout|connection reset|EOF)", T,
          "server-unreachable", "the trivy server (TRIVY_SERVER) could not be reached"),
    # trivy's own guard (0.76): a redirect or token realm to a private or link-local host.
    _rule(r"SSRF protection: [^\n]*denied|registry-not-allowed: ", P, "registry-not-allowed",
          "trivy was led (a redirect or a token realm) to an address it does not contact"),
    _rule(r"context deadline exceeded|[Dd]eadline exceeded", T, "timeout", "trivy timed out"),
    # Scans pass --skip-java-db-update, so this is always "no usable Java DB" (the core decides what follows).
    _rule(r"Unable to initialize the Java DB|cannot skip downloading Java DB|'--skip-java-db-update' cannot be",
          P, "java-db-missing", "the image has Java archives and there is no Java DB in the cache"),
    _rule(r"no child with platform \S+ in index", P, "platform-not-found",
          "the image index has no manifest for the requested platform"),
    _rule(r"no space left on device|disk quota exceeded", T, "disk-full",
          "the scratch disk (SCAN_SCRATCH_DIR) or the cache ran out of space"),
    _rule(r"ignore file not found|VEX error|filter error: filtering error", P, "invalid-suppression-file",
          "trivy could not read a suppression file (TRIVY_IGNOREFILE / TRIVY_VEX)"),
    _rule(r"cannot skip downloading DB|--skip-db-update cannot be specified on the first run", T, "db-missing",
          "there is no vulnerability DB in the cache yet and updates are disabled"),
    _rule(r"failed to download vulnerability DB|failed to download artifact|DB error|database error", T,
          "db-unavailable", "the vulnerability DB could not be downloaded or opened"),
    _rule(r"[Pp]ermission denied|too many open files|[Rr]ead-only file system", T,
          "local-io", "trivy could not read or write a local file"),
    _rule(r"failed to parse the image name|could not parse reference", P, "invalid-image",
          "trivy rejected the image reference"),
)

# Causes of one attempt against a registry (first match wins within an attempt).
_ATTEMPT_RULES: tuple[_Rule, ...] = (
    _rule(r"TOOMANYREQUESTS|429 Too Many Requests|rate limit", T, "rate-limited",
          "the registry rate-limited the request"),
    _rule(r"\b5\d\d (Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout)\b|status code 5\d\d"
          r"|\bUNAVAILABLE\b", T, "registry-unreachable", "the registry could not be reached or failed (5xx)"),
    _rule(r"connection refused|no such host|i/o timeout|connection reset|TLS handshake timeout"
          r"|network is unreachable|server misbehaving|unexpected EOF|\bEOF\b", T, "registry-unreachable",
          "the registry could not be reached (network)"),
    _rule(r"MANIFEST_UNKNOWN|NAME_UNKNOWN|BLOB_UNKNOWN|404 Not Found", P, "not-found",
          "the image or tag was not found in the registry"),
    _rule(r"\bDENIED\b|403 Forbidden|requested access to the resource is denied", P, "denied",
          "the registry denied access"),
    _rule(r"UNAUTHORIZED|authentication required|401 Unauthorized|incorrect username or password", P,
          "unauthorized", "the registry refused the credentials (unauthorized)"),
    _rule(r"server gave HTTP response to HTTPS client", P, "tls-mismatch",
          "the registry speaks plain HTTP; mark it 'insecure: true' in the registries configuration"),
    _rule(r"x509:|certificate signed by unknown authority|certificate is not valid", P, "tls-error",
          "the registry's TLS certificate was not trusted"),
    _rule(r"unsupported (media|manifest) type|unknown OS|unable to analyze|analyze error|failed to analyze"
          r"|archive/tar|invalid tar header", P, "unanalysable", "trivy could not analyse this image"),
)

# The order in which a permanent failure's reason is chosen when attempts disagree:
# a MANIFEST_UNKNOWN means the registry let us in, so "not found" is the truth.
_PERMANENT_PRIORITY = ("not-found", "denied", "unauthorized", "tls-mismatch", "tls-error", "unanalysable")

_ATTEMPTS = re.compile(r"\d+ errors? occurred:")


def classify_trivy_failure(returncode: int, stderr: str) -> ScanFailed:
    """A ``ScanFailed`` for a trivy run that exited non-zero; ``stderr`` is already redacted."""
    detail = _fatal_line(stderr)
    for rule in _RUN_RULES:
        if rule.pattern.search(detail):
            return _failed(rule, detail)

    attempts = _attempts(detail)
    matched = [_match(attempt) for attempt in attempts]
    transient = [rule for rule in matched if rule is None or rule.kind is T]
    if transient:
        rule = next((r for r in transient if r is not None), None)
        if rule is not None:
            return _failed(rule, detail)
        return ScanFailed(f"trivy exited with code {returncode}: {detail}", kind=T, reason="trivy-error")
    permanent = [rule for rule in matched if rule is not None]
    permanent.sort(key=lambda rule: _PERMANENT_PRIORITY.index(rule.reason))
    return _failed(permanent[0], detail)


def _match(attempt: str) -> _Rule | None:
    return next((rule for rule in _ATTEMPT_RULES if rule.pattern.search(attempt)), None)


def _attempts(detail: str) -> list[str]:
    """The separate attempts trivy lists, or the whole text when it lists none."""
    found = _ATTEMPTS.search(detail)
    if not found:
        return [detail]
    parts = [part.strip() for part in re.split(r"(?:^|\s)\*\s", detail[found.end():]) if part.strip()]
    return parts or [detail]


def _failed(rule: _Rule, detail: str) -> ScanFailed:
    return ScanFailed(f"{rule.explanation}: {detail}", kind=rule.kind, reason=rule.reason)


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
