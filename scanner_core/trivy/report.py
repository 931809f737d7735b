"""Reading what the meta needs out of trivy's JSON report: one native pass
(``report/``: msgspec typed structs, streamed in bounded memory), summarised here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models import Finding

if TYPE_CHECKING:  # at run time on first use: audit.py imports this module for ReportSummary
    from ..report import DecodedReport, ReportResult, Vulnerability

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_UNKNOWN_RANK = _SEVERITY_RANK["UNKNOWN"]
_READ_BYTES = 1024 * 1024


@dataclass
class ReportSummary:
    """What one pass over the report learnt."""

    artifact_name: str | None = None
    image_id: str | None = None
    repo_digests: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    top_findings: list[Finding] = field(default_factory=list)
    secrets: int = 0
    os_family: str | None = None
    os_name: str | None = None
    os_eosl: bool | None = None
    # Vulnerabilities an ignore file or a VEX document suppressed (listed with --show-suppressed).
    suppressed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    # Licence findings (``Results[].Licenses[]``, the license scanner) by trivy's category.
    licenses: dict[str, int] = field(default_factory=dict)
    # How many findings each vulnerability id has (for the exploitability feeds' counts).
    vulnerability_ids: dict[str, int] = field(default_factory=dict)
    # Failed misconfiguration checks (``Results[].Misconfigurations[]`` with Status FAIL) by severity.
    misconfigurations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))

    @property
    def image_digest(self) -> str | None:
        """The manifest digest trivy resolved (``sha256:...``), if it reported one."""
        for entry in self.repo_digests:
            if "@" in entry:
                return entry.rsplit("@", 1)[1]
        return None


def severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity.upper(), _UNKNOWN_RANK)


def finding_sort_key(finding: Finding) -> tuple[Any, ...]:
    """Most severe first; among equals a stable, total order."""
    return (
        severity_rank(finding.severity),
        finding.vulnerability_id,
        finding.pkg_name,
        finding.installed_version or "",
        finding.target or "",
        finding.fixed_version or "",
    )


def summarise_report(path: Path, details_limit: int = 100) -> ReportSummary:
    """Counts every finding as trivy lists it (vulnerability id x package x target)
    by severity, keeps the ``details_limit`` most severe, and reads the image's identity."""
    summariser = ReportSummariser(details_limit)
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_BYTES):
            summariser.feed(chunk)
    return summariser.close()


def iter_findings(path: Path) -> Iterator[Vulnerability]:
    """Every finding of the report (for comparisons between audits)."""
    from ..report import decode_report

    yield from (vulnerability for _, vulnerability in decode_report(path).vulnerabilities())


class ReportSummariser:
    """``summarise_report`` fed chunk by chunk (push decoding), so that the report can be
    summarised from the very bytes that are being uploaded: one read of the file serves
    both. ``on_finding`` sees every finding at ``close``; ``decoded`` is then the whole
    decoded report (the policy's facts read it instead of the file)."""

    def __init__(self, details_limit: int = 100, on_finding: Callable[[Vulnerability], None] | None = None) -> None:
        self._on_finding = on_finding
        self._limit = details_limit
        from ..report import ReportDecoder

        self._decoder = ReportDecoder()
        self._summary: ReportSummary | None = None
        self.decoded: DecodedReport | None = None
        self.error: Exception | None = None

    @property
    def bytes_fed(self) -> int:
        return self._decoder.bytes_fed

    def feed(self, chunk: bytes) -> None:
        """Never raises (it may run inside an upload, whose errors mean something else):
        a report that is not trivy's JSON is kept as ``error`` and raised by ``close``."""
        if not chunk or self.error is not None:
            return
        try:
            self._decoder.feed(chunk)
        except Exception as error:  # noqa: BLE001 - kept for close()
            self.error = error

    def close(self) -> ReportSummary:
        """Ends the input and returns the summary; raises ``ReportUnreadable`` on a
        truncated or malformed report."""
        if self._summary is None and self.error is None:
            try:
                self.decoded = self._decoder.close()
                self._summary = summarise(self.decoded, self._limit, self._on_finding)
            except Exception as error:  # noqa: BLE001 - raised below, and again on the next close()
                self.error = error
        if self.error is not None:
            raise self.error
        assert self._summary is not None
        return self._summary


def summarise(
    report: DecodedReport, details_limit: int = 100, on_finding: Callable[[Vulnerability], None] | None = None
) -> ReportSummary:
    """The summary of a decoded report (see ``summarise_report``)."""
    from ..report import listed

    metadata = report.metadata
    summary = ReportSummary(artifact_name=report.artifact_name)
    if metadata is not None:
        summary.image_id = metadata.image_id
        summary.repo_digests = list(metadata.repo_digests or ())
        if metadata.os is not None:
            summary.os_family, summary.os_name = metadata.os.family, metadata.os.name
            summary.os_eosl = None if metadata.os.eosl is None else bool(metadata.os.eosl)
    counts, ids = summary.counts, summary.vulnerability_ids
    findings = report.vulnerabilities()
    for result, vulnerability in findings:
        if on_finding is not None:
            vulnerability.target = result.target
            on_finding(vulnerability)
        severity = vulnerability.severity
        counts[severity if severity in counts else "UNKNOWN"] += 1  # type: ignore[index]
        ids[vulnerability.vulnerability_id] = ids.get(vulnerability.vulnerability_id, 0) + 1
    top = heapq.nsmallest(details_limit, findings, key=_order)  # == sorted(...)[:limit]: first among equals
    summary.top_findings = [_to_finding(vulnerability, result.target) for result, vulnerability in top]
    for result in report.results or ():
        _count_others(summary, result)
    return summary


def _count_others(summary: ReportSummary, result: ReportResult) -> None:
    from ..report import listed

    summary.secrets += len(listed(result.secrets))
    for modified in listed(result.modified):
        if modified.type == "vulnerability":
            severity = ((modified.finding and modified.finding.severity) or "UNKNOWN").upper()
            summary.suppressed[severity if severity in summary.suppressed else "UNKNOWN"] += 1
    for check in listed(result.misconfigurations):
        if check.status == "FAIL":
            severity = (check.severity or "UNKNOWN").upper()
            summary.misconfigurations[severity if severity in summary.misconfigurations else "UNKNOWN"] += 1
    for licence in listed(result.licenses):
        if licence.category is not None:
            category = licence.category.lower()
            summary.licenses[category] = summary.licenses.get(category, 0) + 1


def _order(pair: tuple[ReportResult, Vulnerability]) -> tuple[Any, ...]:
    result, v = pair
    rank = _SEVERITY_RANK.get(v.severity, _UNKNOWN_RANK)  # type: ignore[arg-type]
    return rank, v.vulnerability_id, v.pkg_name, v.installed_version or "", result.target or "", v.fixed_version or ""


def _to_finding(vulnerability: Vulnerability, target: str | None) -> Finding:
    return Finding(
        vulnerability_id=vulnerability.vulnerability_id,
        pkg_name=vulnerability.pkg_name,
        installed_version=vulnerability.installed_version,
        fixed_version=vulnerability.fixed_version,
        severity=vulnerability.severity or "UNKNOWN",
        title=vulnerability.title,
        target=target,
    )
