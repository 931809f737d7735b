"""Typed errors of the scanner core.

Every failure the core can meet is one of these, and each says whether trying
again later can help: the function app retries only what is ``transient``.
"""

from __future__ import annotations

from enum import Enum


class FailureKind(str, Enum):
    """Whether a failed scan may succeed if it is tried again later."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


class ScannerError(Exception):
    """Base class of every error raised by ``scanner_core``."""


class ConfigurationError(ScannerError):
    """The scanner's configuration is invalid; nothing was scanned.

    ``problems`` has one line per bad field, each naming the field and what it
    allows.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class RequestError(ScannerError):
    """A scan request (or a field of it) is invalid; it can never succeed."""

    kind = FailureKind.PERMANENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class InvalidImageReference(RequestError, ValueError):
    """An image reference does not follow the distribution reference grammar."""

    def __init__(self, message: str, field: str = "image") -> None:
        super().__init__(field, message)


class ScanFailed(ScannerError):
    """Trivy did not produce a report.

    ``reason`` is a short machine-readable cause (``unauthorized``,
    ``not-found``, ``timeout`` ...); the message is human-readable and free of
    secrets.
    """

    def __init__(self, message: str, *, kind: FailureKind, reason: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason

    @property
    def transient(self) -> bool:
        return self.kind is FailureKind.TRANSIENT


class TrivyNotFound(ScanFailed):
    """No trivy executable could be located; a deployment problem, retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind=FailureKind.TRANSIENT, reason="trivy-not-found")


class StorageError(ScannerError):
    """Blob Storage refused or could not be reached, even after retries."""

    kind = FailureKind.TRANSIENT


class AuditNotRecorded(ScannerError):
    """Not even the audit's ``meta`` could be written: nothing tells readers
    what happened, so the request must be retried (transient)."""

    kind = FailureKind.TRANSIENT

    def __init__(self, message: str, *, cause_kind: FailureKind = FailureKind.TRANSIENT) -> None:
        super().__init__(message)
        self.cause_kind = cause_kind


class ReportUnreadable(ScanFailed):
    """trivy's report is truncated or is not its JSON (``failure-reason: report-unreadable``).
    Transient: a report cut short (trivy killed, a full disk) is worth one more try."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind=FailureKind.TRANSIENT, reason="report-unreadable")
