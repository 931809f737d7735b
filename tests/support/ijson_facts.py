"""The reference for the native decoder (issue 26): ``scanner_core/policy/facts.py`` as it was before,
an event-by-event ijson pass, kept for tests/test_report_decoder.py to compare against.

What an audit knows, as the policy's conditions ask it (``PolicyFacts``).

Built from the audit's ``meta`` and, when the policy needs more than counts,
its stored ``scan-result.json``, read in one streaming pass (ijson): every
finding with its package, type and fix, the licences by category, secrets,
and the image config's ``created``. trivy lists only packages that have a
finding or a licence entry (no ``--list-all-pkgs``), so those are the
packages the package conditions see. Without the report, the findings are the
meta's ``details`` (the 100 most severe) and ``complete`` is false.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from scanner_core.models import AuditMeta, Finding
from scanner_core.registry import parse_image_reference

_VULN = "Results.item.Vulnerabilities.item"
_LICENSE = "Results.item.Licenses.item"
_READ_BYTES = 1024 * 1024
_VULN_FIELDS = {f"{_VULN}.{name}": name for name in ("VulnerabilityID", "PkgName", "Severity", "FixedVersion")}
_LICENSE_FIELDS = {f"{_LICENSE}.{name}": name for name in ("PkgName", "Name", "Category")}


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
    meta: AuditMeta, report: Path | bytes | IO[bytes] | None = None, *, exploits: ExploitLookup | None = None
) -> PolicyFacts:
    """The facts of one succeeded audit: ``meta`` plus, when given, its report
    (a path, the bytes, or a binary stream). ``exploits``: the KEV/EPSS feeds; without
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


def _chunks(report: Path | bytes | IO[bytes]) -> Iterable[bytes]:
    if isinstance(report, bytes):
        report = io.BytesIO(report)
    if isinstance(report, Path):
        with report.open("rb") as stream:
            yield from iter(lambda: stream.read(_READ_BYTES), b"")
        return
    yield from iter(lambda: report.read(_READ_BYTES), b"")


def _read_report(facts: PolicyFacts, report: Path | bytes | IO[bytes]) -> None:
    import ijson  # on first use: the policy face costs nothing at a cold start

    events = ijson.sendable_list()
    parser = ijson.parse_coro(events)
    state: dict[str, Any] = {"type": None, "target": None, "current": None, "license": None, "types": {},
                             "licensed": []}  # fmt: skip
    counts: dict[str, int] = {}
    for chunk in _chunks(report):
        parser.send(chunk)
        _consume(facts, events, state, counts)
    parser.close()
    _consume(facts, events, state, counts)
    if facts.license_counts is None and facts.licenses:
        facts.license_counts = counts
    # Licence results have no Type; they share their Target with the packages' result
    # ("Python", "Node.js"), and "OS Packages" are the OS result's.
    types = state["types"]
    for package, target in state["licensed"]:
        facts.packages.add((package, types.get(target) or (types.get("os") if target == "OS Packages" else None)))


def _consume(facts: PolicyFacts, events: list[Any], state: dict[str, Any], counts: dict[str, int]) -> None:
    for prefix, event, value in events:
        if state["current"] is not None:
            if prefix == _VULN and event == "end_map":
                fields = state["current"]
                facts.findings.append(FactFinding(
                    str(fields.get("VulnerabilityID", "")), str(fields.get("PkgName", "")),
                    str(fields.get("Severity") or "UNKNOWN").upper(), fields.get("FixedVersion") or None,
                    state["type"],
                ))  # fmt: skip
                state["current"] = None
            elif (name := _VULN_FIELDS.get(prefix)) is not None and event == "string":
                state["current"][name] = value
        elif state["license"] is not None:
            if prefix == _LICENSE and event == "end_map":
                fields = state["license"]
                category = str(fields.get("Category") or "unknown").lower()
                licence = FactLicense(fields.get("PkgName") or None, str(fields.get("Name", "")), category)
                facts.licenses.append(licence)
                counts[category] = counts.get(category, 0) + 1
                if licence.package:
                    state["licensed"].append((licence.package, state["target"]))
                state["license"] = None
            elif (name := _LICENSE_FIELDS.get(prefix)) is not None and event == "string":
                state["license"][name] = value
        elif prefix == _VULN and event == "start_map":
            state["current"] = {}
        elif prefix == _LICENSE and event == "start_map":
            state["license"] = {}
        elif prefix == "Results.item" and event == "start_map":
            state["type"] = state["target"] = state["class"] = None
        elif prefix == "Results.item.Target" and event == "string":
            state["target"] = value
        elif prefix == "Results.item.Type" and event == "string":
            state["type"] = value
        elif prefix == "Results.item.Class" and event == "string":
            state["class"] = value
        elif prefix == "Results.item" and event == "end_map" and state["type"]:
            state["types"].setdefault(state["target"], state["type"])
            if state.get("class") == "os-pkgs":
                state["types"]["os"] = state["type"]
        elif prefix == "Metadata.ImageConfig.created" and event == "string":
            facts.created = _parse_time(value)
    del events[:]


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
