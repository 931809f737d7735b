"""Reading what the meta needs out of trivy's JSON report, in one streaming
pass (ijson): a report of tens of MB is never loaded as a Python object tree.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ijson

from ..models import Finding

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_VULNERABILITY_PREFIX = "Results.item.Vulnerabilities.item"
_MODIFIED_PREFIX = "Results.item.ExperimentalModifiedFindings.item"
_FINDING_FIELDS = ("VulnerabilityID", "PkgName", "InstalledVersion", "FixedVersion", "Severity", "Title")


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

    @property
    def image_digest(self) -> str | None:
        """The manifest digest trivy resolved (``sha256:...``), if it reported one."""
        for entry in self.repo_digests:
            if "@" in entry:
                return entry.rsplit("@", 1)[1]
        return None


def severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity.upper(), _SEVERITY_RANK["UNKNOWN"])


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
    summary = ReportSummary()

    def counted(findings: Iterator[Finding]) -> Iterator[Finding]:
        for finding in findings:
            summary.counts[finding.severity if finding.severity in summary.counts else "UNKNOWN"] += 1
            yield finding

    # nsmallest keeps a heap of at most details_limit items while it streams.
    summary.top_findings = heapq.nsmallest(details_limit, counted(_findings(path, summary)), key=finding_sort_key)
    return summary


def iter_findings(path: Path) -> Iterator[Finding]:
    """Every finding of the report, streamed (for comparisons between audits)."""
    return _findings(path, ReportSummary())


def _findings(path: Path, summary: ReportSummary) -> Iterator[Finding]:
    with path.open("rb") as stream:
        target: str | None = None
        current: dict[str, Any] | None = None
        modified: dict[str, Any] | None = None
        for prefix, event, value in ijson.parse(stream):
            if prefix.startswith(_MODIFIED_PREFIX):
                modified = _modified_finding(summary, modified, prefix, event, value)
            elif prefix == "ArtifactName" and event == "string":
                summary.artifact_name = value
            elif prefix.startswith("Metadata.OS.") and event in ("string", "boolean"):
                _os_field(summary, prefix, value)
            elif prefix == "Metadata.ImageID" and event == "string":
                summary.image_id = value
            elif prefix == "Metadata.RepoDigests.item" and event == "string":
                summary.repo_digests.append(value)
            elif prefix == "Results.item.Target" and event == "string":
                target = value
            elif prefix == "Results.item.Secrets.item" and event == "start_map":
                summary.secrets += 1
            elif prefix == _VULNERABILITY_PREFIX:
                if event == "start_map":
                    current = {}
                elif event == "end_map" and current is not None:
                    yield _to_finding(current, target)
                    current = None
            elif current is not None and event in ("string", "number", "null"):
                name = prefix[len(_VULNERABILITY_PREFIX) + 1 :]
                if name in _FINDING_FIELDS:
                    current[name] = value


def _os_field(summary: ReportSummary, prefix: str, value: Any) -> None:
    name = prefix.removeprefix("Metadata.OS.")
    if name == "Family":
        summary.os_family = value
    elif name == "Name":
        summary.os_name = value
    elif name == "EOSL":
        summary.os_eosl = bool(value)


def _modified_finding(
    summary: ReportSummary, current: dict[str, Any] | None, prefix: str, event: str, value: Any
) -> dict[str, Any] | None:
    """One entry of ``ExperimentalModifiedFindings``: a suppressed vulnerability is counted by its severity."""
    if prefix == _MODIFIED_PREFIX:
        if event == "start_map":
            return {}
        if event == "end_map":
            if current is not None and current.get("Type", "vulnerability") == "vulnerability":
                severity = str(current.get("Severity") or "UNKNOWN").upper()
                summary.suppressed[severity if severity in summary.suppressed else "UNKNOWN"] += 1
            return None
        return current  # its keys (map_key events)
    if current is not None and event == "string":
        if prefix == f"{_MODIFIED_PREFIX}.Type":
            current["Type"] = value
        elif prefix == f"{_MODIFIED_PREFIX}.Finding.Severity":
            current["Severity"] = value
    return current


def _to_finding(fields: dict[str, Any], target: str | None) -> Finding:
    return Finding(
        vulnerability_id=str(fields.get("VulnerabilityID", "")),
        pkg_name=str(fields.get("PkgName", "")),
        installed_version=fields.get("InstalledVersion"),
        fixed_version=fields.get("FixedVersion") or None,
        severity=str(fields.get("Severity") or "UNKNOWN").upper(),
        title=fields.get("Title"),
        target=target,
    )
