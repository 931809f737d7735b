"""What changed since the previous audit of the same image.

The previous audit is the newest *succeeded* audit of the same repository and
tag (or, for an image asked for by digest only, the same digest), requested
before this one, found in the audit index's per-repository listing. Findings
are compared by vulnerability id and package (a CVE fixed in one package but
still present in another is not "fixed"); ``new`` and ``fixed`` list the ids
at or above ``NOTIFY_MIN_SEVERITY`` (default ``HIGH``: CRITICAL and HIGH),
most severe first, at most ``MAX_LISTED`` each. An audit with no previous one
has no ``previous-audit-id``, and its ``changes`` count every finding at or
above the threshold as new (``status-from`` absent): a newly seen image with a
critical vulnerability is news.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..models import AuditChanges, AuditMeta, AuditResult, Finding
from ..storage import REPORT_BLOB, AuditIndex, AuditRow, image_identity
from ..report import Vulnerability, decode_report
from ..trivy import iter_findings, severity_rank

MAX_LISTED = 100


@dataclass(frozen=True)
class Key:
    """One finding as compared between audits."""

    vulnerability_id: str
    package: str
    severity: str


def keys_of(findings: Iterable[Finding | Vulnerability], min_severity: str) -> set[Key]:
    limit = severity_rank(min_severity)
    return {
        Key(f.vulnerability_id, f.pkg_name, f.severity)
        for f in findings
        if severity_rank(f.severity) <= limit and f.vulnerability_id
    }


def compare(
    previous: AuditMeta | None, previous_keys: set[Key], current_status: str | None, current_keys: set[Key]
) -> AuditChanges:
    """``changes`` from two sets of keys (see the module's docstring)."""

    before = {(k.vulnerability_id, k.package) for k in previous_keys}
    after = {(k.vulnerability_id, k.package) for k in current_keys}
    new = sorted((k for k in current_keys if (k.vulnerability_id, k.package) not in before), key=_order)
    fixed = sorted((k for k in previous_keys if (k.vulnerability_id, k.package) not in after), key=_order)
    return AuditChanges(
        new=_ids(new),
        fixed=_ids(fixed),
        status_from=previous.scan_status if previous is not None else None,
        status_to=current_status,
    )


def find_previous(index: AuditIndex, meta: AuditMeta) -> AuditRow | None:
    """The newest succeeded audit of the same image requested before ``meta``'s."""
    repository, tag, digest = image_identity(meta.image, meta.image_digest)
    if repository is None or (tag is None and digest is None):
        return None
    for row in index.repository_rows(repository):
        if row.audit_id == meta.audit_id or row.requested_at > meta.requested_at:
            continue
        if row.audit_result != AuditResult.SUCCEEDED.value:
            continue
        if (row.tag == tag) if tag is not None else (row.digest == digest):
            return row
    return None


def previous_findings(index: AuditIndex, row: AuditRow, min_severity: str) -> tuple[AuditMeta, set[Key]] | None:
    """The previous audit's meta and its findings: from ``details`` when they are
    complete (the 100 most severe), else streamed from its stored report."""
    data = index.read(row.meta_path)
    if data is None:
        return None  # the index outlived the folder
    previous = AuditMeta.model_validate_json(data)
    keys = findings_of(index, previous, row.folder, min_severity)
    return None if keys is None else (previous, keys)


def findings_of(index: AuditIndex, audit: AuditMeta, folder: str, min_severity: str) -> set[Key] | None:
    """A recorded audit's findings: from ``details`` when they are complete, else
    streamed from its stored report (``None`` when that is gone)."""
    details = audit.details or []
    total = (audit.vulnerabilities or {}).get("total", 0)
    limit = severity_rank(min_severity)
    # details are the most severe first: if they end below the threshold, they hold all that matter.
    complete = len(details) >= total or bool(details and severity_rank(details[-1].severity) > limit)
    if complete:
        return keys_of(details, min_severity)
    chunks = index.read_chunks(audit.trivy_audit_path or f"{folder}/{REPORT_BLOB}")
    if chunks is None:
        return None
    return keys_of(_stream(chunks), min_severity)


def current_findings(report_path: Path, min_severity: str) -> set[Key]:
    return keys_of(iter_findings(report_path), min_severity)


def _stream(chunks: Iterable[bytes]) -> Iterator[Vulnerability]:
    """The findings of a stored report, decoded as its chunks arrive (memory stays at a
    chunk and the decoded findings, whatever the report's size; issues 11 and 26)."""
    for _, vulnerability in decode_report(chunks).vulnerabilities():
        yield vulnerability


def _order(key: Key) -> tuple[int, str, str]:
    return severity_rank(key.severity), key.vulnerability_id, key.package


def _ids(keys: list[Key]) -> list[str]:
    """Unique ids, in the keys' order, at most ``MAX_LISTED``."""
    return list(dict.fromkeys(k.vulnerability_id for k in keys))[:MAX_LISTED]
