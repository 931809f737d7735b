"""Rows of the audit index: what one audit's index entry says, and how it is
named and encoded in blob metadata (see ``index.py`` for the layout)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, unquote

from ..errors import RequestError
from ..models import AuditMeta, AuditResult
from ..registry import parse_image_reference
from ..verdict import EOSL_NOTE, ScanStatus, VulnerabilityCounts, summary_line
from .layout import META_BLOB

INDEX_FORMAT = "1"
MAX_PAGE_SIZE = 5000  # the service's own maximum of results per listing call
MAX_IMAGE_CHARS = 1024
INVERT_FROM = 9_999_999_999  # 10 digits: good until the year 2286
ROW_SUFFIX, REF_SUFFIX = ".row", ".ref"
_SEVERITIES = ("critical", "high", "medium", "low", "unknown", "total")
_CURSOR_PREFIX = "c1:"

# Summary categories: the scan status of a succeeded audit, or "audit-failed"
# for every audit whose audit-result is not "succeeded".
CATEGORIES = ("passed", "warning", "failed", "audit-failed")


class InvalidCursor(RequestError):
    """A page cursor that this index did not hand out."""

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


@dataclass(frozen=True)
class AuditRow:
    """One audit as the summary shows it, read from a ``.row``'s metadata."""

    audit_id: str
    folder: str
    requested_at: int
    audit_result: str
    scanned_at: int | None = None
    image: str | None = None
    scan_status: str | None = None
    vulnerabilities: dict[str, int] | None = None
    secrets: int | None = None
    failure_reason: str | None = None
    # The image's identity (issue 10: history, verdict, changes): the canonical
    # repository (``registry/path``), its tag and manifest digest; the DB's date.
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    db_updated_at: str | None = None
    decision: str | None = None
    eosl: bool = False  # the image's OS is past its end of life
    scan_duration_ms: int | None = None  # trivy's run (issue 19: the metrics' duration histogram)
    kev: int | None = None  # findings in CISA's KEV catalogue (issue 15)
    epss_max: float | None = None  # the highest EPSS score of any finding
    # Issue 23: the manifest scanned, and for an image index every manifest a runtime may pull
    # from it, {digest: platform} (the verdict of an index asks each one's approval).
    platform_digest: str | None = None
    platforms: dict[str, str] | None = None

    @property
    def approval_digests(self) -> dict[str, str]:
        """What ``/verdict`` must find approved for this row's image, {digest: platform}: every
        manifest of an index, else the one manifest scanned. A row of an index recorded before
        issue 23 (no ``platforms``) keeps its old answer: the request of the index digest."""
        if self.platforms:
            return dict(self.platforms)
        digest = self.digest if self.platform_digest != self.digest and self.digest else self.platform_digest
        return {digest: ""} if digest else {}

    def exploits(self) -> dict[str, object]:
        """``kev`` and ``epss-max`` for the API's rows (the dashboard sorts by them)."""
        return {"kev": self.kev, "epss-max": self.epss_max}

    @property
    def meta_path(self) -> str:
        return f"{self.folder}/{META_BLOB}"

    @property
    def category(self) -> str | None:
        """Which total the audit counts towards (``None``: none but ``total``)."""
        if self.audit_result != AuditResult.SUCCEEDED.value:
            return "audit-failed"
        return self.scan_status if self.scan_status in CATEGORIES else None

    @property
    def summary(self) -> str | None:
        """The core's one-line summary, re-derived from status and counts (not stored)."""
        if self.scan_status is None or self.vulnerabilities is None:
            return None
        try:
            line = summary_line(ScanStatus(self.scan_status), VulnerabilityCounts(**self.vulnerabilities))
            return line + (EOSL_NOTE if self.eosl else "")
        except ValueError:
            return None

    @classmethod
    def from_meta(cls, meta: AuditMeta, folder: str) -> AuditRow:
        repository, tag, digest = image_identity(meta.image, meta.image_digest)
        return cls(
            audit_id=meta.audit_id,
            folder=folder,
            requested_at=meta.requested_at,
            audit_result=meta.audit_result.value,
            scanned_at=meta.timestamp,
            image=meta.image,
            scan_status=meta.scan_status,
            vulnerabilities=dict(meta.vulnerabilities) if meta.vulnerabilities is not None else None,
            secrets=meta.secrets,
            failure_reason=meta.failure_reason,
            repository=repository,
            tag=tag,
            digest=digest,
            db_updated_at=meta.trivy_db_updated_at,
            decision=meta.decision,
            eosl=bool(meta.os and meta.os.eosl),
            scan_duration_ms=meta.scan_duration_ms,
            kev=meta.kev,
            epss_max=meta.epss_max,
            platform_digest=meta.platform_digest,
            platforms=dict(meta.index_manifests) if meta.index_manifests else None,
        )

    def to_metadata(self) -> dict[str, str]:
        """ASCII-only ``x-ms-meta-*`` values; lower-case keys (valid C# identifiers)."""
        metadata = {
            "v": INDEX_FORMAT,
            "auditid": self.audit_id,
            "folder": self.folder,
            "requested": str(self.requested_at),
            "result": self.audit_result,
        }
        optional = {
            "scanned": self.scanned_at,
            "status": self.scan_status,
            "secrets": self.secrets,
            "reason": self.failure_reason,
            "image": encode_image(self.image) if self.image is not None else None,
            "repo": encode_image(self.repository) if self.repository is not None else None,
            "tag": self.tag,
            "digest": self.digest,
            "dbupdated": self.db_updated_at,
            "decision": self.decision,
            "durationms": self.scan_duration_ms,
            "kev": self.kev,
            "epssmax": self.epss_max,
            "pdigest": self.platform_digest,
            "platforms": _encode_platforms(self.platforms) if self.platforms else None,
        }
        metadata |= {key: _ascii(str(value)) for key, value in optional.items() if value is not None}
        if self.eosl:
            metadata["eosl"] = "true"
        if self.vulnerabilities is not None:
            metadata |= {name: str(int(self.vulnerabilities.get(name, 0))) for name in _SEVERITIES}
        return metadata

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, str]) -> AuditRow:
        """Tolerant: a row written by another version still lists (unknown keys ignored)."""
        values = {key.lower(): value for key, value in metadata.items()}
        counts = {s: n for s in _SEVERITIES if (n := int_or_none(values.get(s))) is not None}
        image = values.get("image")
        repository = values.get("repo")
        return cls(
            audit_id=values.get("auditid") or _audit_id_from_row_name(name),
            folder=values.get("folder", ""),
            requested_at=int_or_none(values.get("requested")) or 0,
            audit_result=values.get("result", ""),
            scanned_at=int_or_none(values.get("scanned")),
            image=unquote(image) if image is not None else None,
            scan_status=values.get("status"),
            vulnerabilities=counts or None,
            secrets=int_or_none(values.get("secrets")),
            failure_reason=values.get("reason"),
            repository=unquote(repository) if repository is not None else None,
            tag=values.get("tag"),
            digest=values.get("digest"),
            db_updated_at=values.get("dbupdated"),
            decision=values.get("decision"),
            eosl=values.get("eosl") == "true",
            scan_duration_ms=int_or_none(values.get("durationms")),
            kev=int_or_none(values.get("kev")),
            epss_max=_float_or_none(values.get("epssmax")),
            platform_digest=values.get("pdigest"),
            platforms=_decode_platforms(values.get("platforms")),
        )


def image_identity(image: str | None, image_digest: str | None = None) -> tuple[str | None, str | None, str | None]:
    """``(repository, tag, digest)`` of an audited image: the canonical repository
    (``docker.io/library/redis``), the tag asked for, and the manifest digest trivy
    resolved (else the one in the reference). ``None``s for a label that is not a
    reference (a tarball scanned without one)."""
    if not image:
        return None, None, image_digest
    try:
        reference = parse_image_reference(image)
    except ValueError:
        return None, None, image_digest
    return f"{reference.registry}/{reference.repository}", reference.tag, image_digest or reference.digest


def same_image(first: str | None, second: str | None) -> bool:
    """Whether two image labels name one image: ``redis:7`` is ``docker.io/library/redis:7``;
    a label that is not a reference (a tarball's) only equals itself."""
    if first is None or second is None or first == second:
        return first == second
    identity = image_identity(first)
    return identity[0] is not None and identity == image_identity(second)


def _encode_platforms(platforms: Mapping[str, str]) -> str:
    """``sha256:...=os/arch;...``, each side percent-encoded: ASCII for blob metadata, and no
    value can forge another entry."""
    return ";".join(f"{quote(digest, safe=':')}={quote(name, safe='/')}" for digest, name in sorted(platforms.items()))


def _decode_platforms(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    pairs = (item.partition("=") for item in text.split(";"))
    return {unquote(digest): unquote(name) for digest, _, name in pairs if digest} or None


def encode_image(image: str) -> str:
    """Percent-encodes to ASCII (``/:@+`` kept readable); cut to ``MAX_IMAGE_CHARS``."""
    encoded = quote(image, safe="/:@+")
    while len(encoded) > MAX_IMAGE_CHARS:
        image = image[: len(image) - max(1, (len(encoded) - MAX_IMAGE_CHARS) // 3)]
        encoded = quote(image, safe="/:@+")
    return encoded


def iso8601(unix_seconds: int | None) -> str | None:
    if unix_seconds is None:
        return None
    return datetime.fromtimestamp(unix_seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(marker: str) -> str:
    """Opaque to clients: the service's continuation marker, base64url-wrapped."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + marker).encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX) or len(text) == len(_CURSOR_PREFIX):
        raise InvalidCursor("is not a cursor handed out by this API; use the 'next-cursor' of the previous page")
    return text[len(_CURSOR_PREFIX) :]


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _ascii(value: str) -> str:
    return value if value.isascii() and value.isprintable() else quote(value, safe="")


def _audit_id_from_row_name(name: str) -> str:
    return name.rsplit("/", 1)[-1].removesuffix(ROW_SUFFIX).split("-", 1)[-1]
