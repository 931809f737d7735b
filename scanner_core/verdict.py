"""The verdict shown at a glance: severity counts, a status from thresholds,
a one-line summary, and the most severe findings.

Counting rule (reproducible from ``scan-result.json``): one per entry of
``Results[].Vulnerabilities[]`` as trivy lists it, i.e. per vulnerability id x
package x target; a severity trivy does not know is counted as ``unknown``.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from .models import Finding
from .policy import LICENSE_CATEGORIES
from .trivy import SEVERITIES, ReportSummary

if TYPE_CHECKING:
    from .config import Settings


class ScanStatus(str, Enum):
    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"


class Thresholds(BaseModel):
    """``failed`` when critical > ``critical``; ``warning`` when high > ``high``."""

    model_config = ConfigDict(frozen=True)

    critical: int = 0
    high: int = 10


class VulnerabilityCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    unknown: int = 0
    total: int = 0


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    vulnerabilities: VulnerabilityCounts
    status: ScanStatus
    summary: str
    details: list[Finding]


def decide_status(counts: VulnerabilityCounts, thresholds: Thresholds) -> ScanStatus:
    if counts.critical > thresholds.critical:
        return ScanStatus.FAILED
    if counts.high > thresholds.high:
        return ScanStatus.WARNING
    return ScanStatus.PASSED


def summary_line(status: ScanStatus, counts: VulnerabilityCounts) -> str:
    """``PASSED: 12 medium, 45 low vulnerabilities``: every non-zero severity, most severe first."""
    parts = [
        f"{getattr(counts, name.lower())} {name.lower()}" for name in SEVERITIES if getattr(counts, name.lower())
    ]
    what = f"{', '.join(parts)} {'vulnerability' if counts.total == 1 else 'vulnerabilities'}" if parts else (
        "no vulnerabilities"
    )
    return f"{status.value.upper()}: {what}"


EOSL_NOTE = " (end-of-life OS)"


def judge(summary: ReportSummary, thresholds: Thresholds, *, fail_on_eosl: bool = False) -> Verdict:
    """The verdict; an end-of-life OS is named in the summary, and fails the image
    when ``fail_on_eosl`` (``TRIVY_FAIL_ON_EOSL``)."""
    counts = VulnerabilityCounts(
        **{name.lower(): summary.counts[name] for name in SEVERITIES}, total=sum(summary.counts.values())
    )
    eosl = bool(summary.os_eosl)
    status = ScanStatus.FAILED if eosl and fail_on_eosl else decide_status(counts, thresholds)
    line = summary_line(status, counts) + (EOSL_NOTE if eosl else "")
    return Verdict(vulnerabilities=counts, status=status, summary=line, details=summary.top_findings)


def verdict_fields(summary: ReportSummary, settings: Settings) -> dict[str, object]:
    """The meta's verdict fields for a report, under the configured thresholds."""
    thresholds = Thresholds(critical=settings.trivy_critical_threshold, high=settings.trivy_high_threshold)
    verdict = judge(summary, thresholds, fail_on_eosl=settings.trivy_fail_on_eosl)
    licensed = "license" in settings.trivy_scanners
    return {
        "vulnerabilities": verdict.vulnerabilities.model_dump(),
        # trivy's default scanners include "secret": then 0 is a finding too.
        "secrets": summary.secrets if not settings.trivy_scanners or "secret" in settings.trivy_scanners else None,
        "scan_status": verdict.status.value,
        "summary": verdict.summary,
        "critical_threshold": thresholds.critical,
        "high_threshold": thresholds.high,
        "details": verdict.details,
        # Licence findings by trivy's category, when the license scanner ran (issue 15).
        "licenses": {c: summary.licenses.get(c, 0) for c in LICENSE_CATEGORIES} if licensed else None,
        "misconfigurations": _misconfigurations(summary) if "misconfig" in settings.trivy_scanners else None,
    }


def _misconfigurations(summary: ReportSummary) -> dict[str, int]:
    counts = {name.lower(): summary.misconfigurations.get(name, 0) for name in SEVERITIES}
    return counts | {"total": sum(counts.values())}
