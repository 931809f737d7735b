"""What an audit knows, as the policy's conditions ask it (``PolicyFacts``).

Built from the audit's ``meta`` and, when the policy needs more than counts,
its stored ``scan-result.json``, decoded natively in one pass (``report/``), or the
report the ship stage has already decoded for the summary: every
finding with its package, type and fix, the licences by category, secrets,
and the image config's ``created``. trivy lists only packages that have a
finding or a licence entry (no ``--list-all-pkgs``), so those are the
packages the package conditions see. Without the report, the findings are the
meta's ``details`` (the 100 most severe) and ``complete`` is false.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from ..models import AuditMeta, Finding
from ..registry import parse_image_reference

if TYPE_CHECKING:
    from ..report import DecodedReport


@dataclass(frozen=True)
class Exploit:
    """What the KEV catalogue and EPSS say of one CVE (``exploits/``)."""

    kev: bool = False
    kev_ransomware: bool = False
    date_added: str | None = None
    due_date: str | None = None
    epss: float | None = None
    percentile: float | None = None


class ExploitLookup(Protocol):
    def exploit(self, cve: str) -> Exploit | None: ...


@dataclass(frozen=True)
class FactFinding:
    id: str
    package: str
    severity: str
    fixed_version: str | None = None
    package_type: str | None = None
    exploit: Exploit | None = None

    @property
    def fixable(self) -> bool:
        return bool(self.fixed_version)


@dataclass(frozen=True)
class FactLicense:
    package: str | None
    name: str
    category: str


@dataclass
class PolicyFacts:
    """Everything a rule can ask of one audit."""

    audit_id: str | None = None
    repository: str | None = None  # e.g. team/app
    registry: str | None = None  # e.g. myacr.azurecr.io
    platform: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # meta's, after suppressions
    findings: list[FactFinding] = field(default_factory=list)
    complete: bool = False  # findings are all of the report's (else the meta's top 100)
    packages: set[tuple[str, str | None]] = field(default_factory=set)  # (name, trivy's result type)
    licenses: list[FactLicense] = field(default_factory=list)
    license_counts: dict[str, int] | None = None
    secrets: int | None = None
    eosl: bool = False
    created: datetime | None = None


def facts_from_audit(
    meta: AuditMeta,
    report: Path | bytes | IO[bytes] | DecodedReport | None = None,
    *,
    exploits: ExploitLookup | None = None,
) -> PolicyFacts:
    """The facts of one succeeded audit: ``meta`` plus, when given, its report
    (a path, the bytes, a binary stream, or the report already decoded). ``exploits``: the KEV/EPSS feeds; without
    them a finding's exploitability is what the meta's ``details`` recorded."""
    facts = PolicyFacts(
        audit_id=meta.audit_id,
        platform=meta.platform,
        counts=dict(meta.vulnerabilities or {}),
        secrets=meta.secrets,
        eosl=bool(meta.os and meta.os.eosl),
        license_counts=dict(meta.licenses) if meta.licenses is not None else None,
    )
    facts.registry, facts.repository = _where(meta.image)
    recorded = {d.vulnerability_id: _recorded_exploit(d) for d in meta.details or []}
    if report is None:
        facts.findings = [_from_detail(d) for d in meta.details or []]
    else:
        _read_report(facts, report)
        facts.complete = True
    facts.findings = [
        _with_exploit(f, exploits.exploit(f.id) if exploits is not None else recorded.get(f.id))
        for f in facts.findings
    ]
    facts.packages |= {(f.package, f.package_type) for f in facts.findings}
    return facts


def _where(image: str | None) -> tuple[str | None, str | None]:
    if not image:
        return None, None
    try:
        parsed = parse_image_reference(image)
    except Exception:  # noqa: BLE001 - an archive's label is no reference: no registry, no repository
        return None, None
    return parsed.registry, parsed.repository


def _from_detail(detail: Finding) -> FactFinding:
    return FactFinding(detail.vulnerability_id, detail.pkg_name, detail.severity.upper(), detail.fixed_version)


def _recorded_exploit(detail: Finding) -> Exploit | None:
    kev, epss = detail.kev, detail.epss
    if kev is None and epss is None:
        return None
    return Exploit(
        kev=kev is not None,
        kev_ransomware=bool(kev and kev.ransomware),
        date_added=kev.date_added if kev else None,
        due_date=kev.due_date if kev else None,
        epss=epss,
        percentile=detail.percentile,
    )


def _with_exploit(finding: FactFinding, exploit: Exploit | None) -> FactFinding:
    if exploit is None:
        return finding
    return FactFinding(finding.id, finding.package, finding.severity, finding.fixed_version, finding.package_type, exploit)


def _read_report(facts: PolicyFacts, report: Path | bytes | IO[bytes] | DecodedReport) -> None:
    from ..report import DecodedReport, decode_report, listed  # on first use: the policy face costs nothing at a cold start

    decoded = report if isinstance(report, DecodedReport) else decode_report(report)
    counts: dict[str, int] = {}
    types: dict[str | None, str] = {}
    licensed: list[tuple[str, str | None]] = []
    for result in decoded.results or ():
        kind = result.type
        facts.findings.extend(
            FactFinding(v.vulnerability_id, v.pkg_name, v.severity or "UNKNOWN", v.fixed_version, kind)
            for v in listed(result.vulnerabilities)
        )
        for licence in listed(result.licenses):
            category = (licence.category or "unknown").lower()
            fact = FactLicense(licence.pkg_name or None, licence.name, category)
            facts.licenses.append(fact)
            counts[category] = counts.get(category, 0) + 1
            if fact.package:
                licensed.append((fact.package, result.target))
        if kind:
            types.setdefault(result.target, kind)
            if result.result_class == "os-pkgs":
                types["os"] = kind
    config = decoded.metadata.image_config if decoded.metadata is not None else None
    if config is not None and config.created is not None:
        facts.created = _parse_time(config.created)
    if facts.license_counts is None and facts.licenses:
        facts.license_counts = counts
    # Licence results have no Type; they share their Target with the packages' result
    # ("Python", "Node.js"), and "OS Packages" are the OS result's.
    for package, target in licensed:
        facts.packages.add((package, types.get(target) or (types.get("os") if target == "OS Packages" else None)))


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
