"""The reference for the native decoder (issue 26): ``scanner_core/trivy/report.py`` as it was before,
an event-by-event ijson pass, kept for tests/test_report_decoder.py to compare against.

Reading what the meta needs out of trivy's JSON report, in one streaming
pass (ijson): a report of tens of MB is never loaded as a Python object tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner_core.models import Finding

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_VULNERABILITY_PREFIX = "Results.item.Vulnerabilities.item"
_MODIFIED_PREFIX = "Results.item.ExperimentalModifiedFindings.item"
_LICENSE_CATEGORY = "Results.item.Licenses.item.Category"
_MISCONFIG_PREFIX = "Results.item.Misconfigurations.item"
_READ_BYTES = 1024 * 1024
_PARSE_SLICE_BYTES = 128 * 1024
_FINDING_FIELDS = ("VulnerabilityID", "PkgName", "InstalledVersion", "FixedVersion", "Severity", "Title")
_FIELD_PREFIXES = {f"{_VULNERABILITY_PREFIX}.{name}": name for name in _FINDING_FIELDS}
_SCALARS = frozenset(("string", "number", "null"))


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
    summariser = ReportSummariser(details_limit)
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_BYTES):
            summariser.feed(chunk)
    return summariser.close()


def iter_findings(path: Path) -> Iterator[Finding]:
    """Every finding of the report, streamed (for comparisons between audits)."""
    found: list[Finding] = []
    summariser = ReportSummariser(on_finding=found.append)
    with path.open("rb") as stream:
        while chunk := stream.read(_READ_BYTES):
            summariser.feed(chunk)
            yield from found
            found.clear()
    summariser.close()  # raises if the report is not JSON
    yield from found


class ReportSummariser:
    """``summarise_report`` fed chunk by chunk (push parsing), so that the report
    can be summarised from the very bytes that are being uploaded: one read of
    the file serves both. Memory: the parser's state plus at most
    ``2 * details_limit`` findings."""

    def __init__(self, details_limit: int = 100, on_finding: Callable[[Finding], None] | None = None) -> None:
        self.summary = ReportSummary()
        self._on_finding = on_finding
        self._limit = details_limit
        self._kept: list[Finding] = []
        import ijson  # here, not at module load: audit.py imports this module for ReportSummary

        self._events = ijson.sendable_list()
        self._parser = ijson.parse_coro(self._events)
        self._target: str | None = None
        self._current: dict[str, Any] | None = None
        self._modified: dict[str, Any] | None = None
        self._misconfig: dict[str, Any] | None = None
        self._closed = False
        self.bytes_fed = 0
        self.error: Exception | None = None

    def feed(self, chunk: bytes) -> None:
        """Never raises (it may run inside an upload, whose errors mean something else):
        a report that is not JSON is kept as ``error`` and raised by ``close``."""
        if not chunk or self.error is not None:
            return
        self.bytes_fed += len(chunk)
        try:
            # In slices: the parser turns what it is sent into Python events all at once
            # (~11 MiB of them for 4 MiB of report), so 128 KiB slices keep that small.
            view = memoryview(chunk)
            for start in range(0, len(view), _PARSE_SLICE_BYTES):
                self._parser.send(bytes(view[start : start + _PARSE_SLICE_BYTES]))
                self._consume()
        except Exception as error:  # noqa: BLE001 - kept for close()
            self.error = error

    def close(self) -> ReportSummary:
        """Ends the input and returns the summary; raises what parsing raised
        (``ijson`` errors on a truncated or malformed report)."""
        if not self._closed:
            self._closed = True
            if self.error is None:
                try:
                    self._parser.close()
                    self._consume()
                except Exception as error:  # noqa: BLE001 - raised below
                    self.error = error
            self.summary.top_findings = sorted(self._kept, key=finding_sort_key)[: self._limit]
        if self.error is not None:
            raise self.error
        return self.summary

    def _keep(self, finding: Finding) -> None:
        if self._on_finding is not None:
            self._on_finding(finding)
        counts = self.summary.counts
        counts[finding.severity if finding.severity in counts else "UNKNOWN"] += 1
        ids = self.summary.vulnerability_ids
        ids[finding.vulnerability_id] = ids.get(finding.vulnerability_id, 0) + 1
        self._kept.append(finding)
        if len(self._kept) >= 2 * self._limit + 64:
            # sorted() is stable, so this keeps what heapq.nsmallest would: the first among equals.
            self._kept = sorted(self._kept, key=finding_sort_key)[: self._limit]

    def _consume(self) -> None:
        # The hot loop of a big report (about a million events for 30 MB): one dict
        # lookup per event inside a finding, the rarer prefixes only outside one.
        summary = self.summary
        current = self._current
        fields = _FIELD_PREFIXES
        for prefix, event, value in self._events:
            if current is not None:
                name = fields.get(prefix)
                if name is not None:
                    if event in _SCALARS:
                        current[name] = value
                elif prefix == _VULNERABILITY_PREFIX and event == "end_map":
                    self._keep(_to_finding(current, self._target))
                    current = None
            elif prefix == _VULNERABILITY_PREFIX:
                if event == "start_map":
                    current = {}
            elif prefix.startswith(_MODIFIED_PREFIX):
                self._modified = _modified_finding(summary, self._modified, prefix, event, value)
            elif prefix == "Results.item.Target" and event == "string":
                self._target = value
            elif prefix == "Results.item.Secrets.item" and event == "start_map":
                summary.secrets += 1
            elif prefix.startswith(_MISCONFIG_PREFIX):
                self._misconfig = _misconfiguration(summary, self._misconfig, prefix, event, value)
            elif prefix == _LICENSE_CATEGORY and event == "string":
                category = str(value).lower()
                summary.licenses[category] = summary.licenses.get(category, 0) + 1
            elif prefix == "ArtifactName" and event == "string":
                summary.artifact_name = value
            elif prefix.startswith("Metadata.OS.") and event in ("string", "boolean"):
                _os_field(summary, prefix, value)
            elif prefix == "Metadata.ImageID" and event == "string":
                summary.image_id = value
            elif prefix == "Metadata.RepoDigests.item" and event == "string":
                summary.repo_digests.append(value)
        self._current = current
        del self._events[:]


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


def _misconfiguration(
    summary: ReportSummary, current: dict[str, Any] | None, prefix: str, event: str, value: Any
) -> dict[str, Any] | None:
    """One entry of ``Misconfigurations``: a failed check is counted by its severity."""
    if prefix == _MISCONFIG_PREFIX:
        if event == "start_map":
            return {}
        if event == "end_map" and current is not None:
            if current.get("Status", "FAIL") == "FAIL":
                severity = str(current.get("Severity") or "UNKNOWN").upper()
                summary.misconfigurations[severity if severity in summary.misconfigurations else "UNKNOWN"] += 1
            return None
        return current
    if current is not None and event == "string" and prefix.count(".") == _MISCONFIG_PREFIX.count(".") + 1:
        current[prefix.rsplit(".", 1)[1]] = value
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
