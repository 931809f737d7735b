"""Each condition of a rule, judged against an audit's facts, with its sentence."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase

from ..models import AcceptedRisk, bounded_name
from .facts import FactFinding, PolicyFacts
from .rules import SEVERITY_KEYS, Comparison, Rule

_MAX_IDS = 5


@dataclass
class Judged:
    matched_parts: list[str] = field(default_factory=list)
    failed_parts: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return not self.failed_parts

    def add(self, ok: bool, sentence: str) -> None:
        (self.matched_parts if ok else self.failed_parts).append(sentence)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ids(findings: Iterable[FactFinding]) -> str:
    ids = sorted({f.id for f in findings})
    if not ids:
        return ""
    shown = ", ".join(ids[:_MAX_IDS]) + (f", and {len(ids) - _MAX_IDS} more" if len(ids) > _MAX_IDS else "")
    return f" ({shown})"


def _compared(ok: bool, comparison: Comparison) -> str:
    return "" if ok else f", not {comparison}"


@dataclass(frozen=True)
class _Scope:
    """The findings a rule counts: not accepted, and with a fix when ``fixable-only``."""

    facts: PolicyFacts
    findings: list[FactFinding]
    accepted: dict[str, AcceptedRisk]
    fix_note: str

    def count(self, severity: str) -> tuple[int, list[FactFinding]]:
        rows = [f for f in self.findings if severity == "total" or f.severity.lower() == severity]
        if self.facts.complete or self.fix_note:
            return len(rows), rows
        # Without the report only the top 100 are known: the meta's count, less what was accepted.
        accepted = sum(1 for f in self.facts.findings if f.id in self.accepted and (
            severity == "total" or f.severity.lower() == severity))  # fmt: skip
        return max(self.facts.counts.get(severity, 0) - accepted, 0), rows


def judge_rule(rule: Rule, facts: PolicyFacts, accepted: dict[str, AcceptedRisk], now: datetime) -> Judged:
    judged = Judged()
    findings = [f for f in facts.findings if f.id not in accepted]
    if rule.fixable_only:
        findings = [f for f in findings if f.fixable]
    scope = _Scope(facts, findings, accepted, " with a fix" if rule.fixable_only else "")
    for check in _CHECKS:
        check(rule, scope, judged, now)
    if rule.fixable_only and not (rule.severity or rule.cves or rule.kev is not None or rule.kev_ransomware is not None
                                  or rule.epss is not None):  # fmt: skip
        judged.add(bool(findings), f"{_plural(len(findings), 'finding')} with a fix{_ids(findings)}")
    return judged


def _severity(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if rule.severity is None:
        return
    for key in SEVERITY_KEYS:
        comparison = getattr(rule.severity, key)
        if comparison is None:
            continue
        n, rows = scope.count(key)
        ok = comparison.holds(n)
        word = "finding" if key == "total" else f"{key} finding"
        judged.add(ok, f"{_plural(n, word)}{scope.fix_note}{_ids(rows)}{_compared(ok, comparison)}")


def _cves(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if not rule.cves:
        return
    today = now.date()
    live = [e for e in rule.cves if e.until is None or e.until >= today]
    expired = [f"{e.id} (until {e.until})" for e in rule.cves if e not in live]
    found = [f for f in scope.findings if f.id in {e.id for e in live}]
    note = f"; expired deny entries no longer apply: {', '.join(expired)}" if expired else ""
    if found:
        judged.add(True, f"denied {'CVE' if len({f.id for f in found}) == 1 else 'CVEs'} found{_ids(found)}{note}")
    else:
        judged.add(False, f"none of the denied CVEs found{scope.fix_note and ' with a fix'}{note}")


def _packages(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if not rule.packages and not rule.package_types:
        return
    hits = sorted(  # names an image chooses: each bounded (models.py)
        f"{bounded_name(name)} ({kind or 'unknown type'})"
        for name, kind in scope.facts.packages
        if (not rule.packages or any(fnmatchcase(name, g) for g in rule.packages))
        and (not rule.package_types or any(fnmatchcase(kind or "", g) for g in rule.package_types))
    )
    wanted = ", ".join([*rule.packages, *(f"type {t}" for t in rule.package_types)])
    if hits:
        judged.add(True, f"package {', '.join(hits[:_MAX_IDS])}{' and more' if len(hits) > _MAX_IDS else ''} "
                         f"matches {wanted}")  # fmt: skip
    else:
        judged.add(False, f"no package matches {wanted}")


def _licenses(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if rule.licenses is None:
        return
    counts = scope.facts.license_counts
    if counts is None:
        judged.add(False, "licences were not scanned (TRIVY_SCANNERS without license)")
        return
    for category, comparison in rule.licenses:
        if comparison is None:
            continue
        n = counts.get(category, 0)
        ok = comparison.holds(n)
        names = sorted({f"{bounded_name(lic.name)} in {bounded_name(lic.package)}" if lic.package
                        else bounded_name(lic.name)
                        for lic in scope.facts.licenses if lic.category == category})  # fmt: skip
        shown = f" ({', '.join(names[:_MAX_IDS])})" if names else ""
        judged.add(ok, f"{_plural(n, f'{category} licence')}{shown}{_compared(ok, comparison)}")


def _secrets(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if rule.secrets is None:
        return
    if scope.facts.secrets is None:
        judged.add(False, "secrets were not scanned (TRIVY_SCANNERS without secret)")
        return
    ok = rule.secrets.holds(scope.facts.secrets)
    judged.add(ok, f"{_plural(scope.facts.secrets, 'secret')} found{_compared(ok, rule.secrets)}")


def _eosl(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if rule.eosl is None:
        return
    said = "the OS is past its end of life" if scope.facts.eosl else "the OS is not past its end of life"
    judged.add(scope.facts.eosl == rule.eosl, said)


def _age(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if rule.image_age_days is None:
        return
    created = scope.facts.created
    if created is None:
        judged.add(False, "the image's creation time is unknown (no created in its config)")
        return
    days = (now - created).total_seconds() / 86_400
    ok = rule.image_age_days.holds(days)
    said = f"the image is {int(days)} days old (created {created.date().isoformat()})"
    judged.add(ok, said + _compared(ok, rule.image_age_days))


def _where(name: str, value: str | None, globs: list[str], judged: Judged) -> None:
    if not globs:
        return
    if value is None:
        judged.add(False, f"the audit has no {name} (an image archive, or none recorded)")
    elif any(fnmatchcase(value, g) for g in globs):
        judged.add(True, f"{name} {value} matches {', '.join(globs)}")
    else:
        judged.add(False, f"{name} {value} matches none of {', '.join(globs)}")


def _places(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    _where("repository", scope.facts.repository, rule.repository, judged)
    _where("registry", scope.facts.registry, rule.registry, judged)
    _where("platform", scope.facts.platform, rule.platform, judged)


def _flag(findings: list[FactFinding], wanted: bool, what: str, judged: Judged, fix: str) -> None:
    ok = bool(findings) == wanted
    judged.add(ok, f"{_plural(len(findings), 'finding')}{fix} {what}{_ids(findings)}")


def _exploits(rule: Rule, scope: _Scope, judged: Judged, now: datetime) -> None:
    if rule.kev is not None:
        kev = [f for f in scope.findings if f.exploit and f.exploit.kev]
        _flag(kev, rule.kev, "in CISA's KEV catalogue", judged, scope.fix_note)
    if rule.kev_ransomware is not None:
        used = [f for f in scope.findings if f.exploit and f.exploit.kev_ransomware]
        _flag(used, rule.kev_ransomware, "known to be used in ransomware campaigns (KEV)", judged, scope.fix_note)
    if rule.epss is not None:
        scored = [(f.exploit.epss, f) for f in scope.findings if f.exploit and f.exploit.epss is not None]
        hits = [f for score, f in scored if rule.epss.holds(score)]
        if hits:
            top = max(f.exploit.epss for f in hits if f.exploit and f.exploit.epss is not None)
            judged.add(True, f"{_plural(len(hits), 'finding')}{scope.fix_note} with EPSS {rule.epss}{_ids(hits)}, "
                             f"highest {top:g}")  # fmt: skip
        else:
            highest = f" (highest {max(s for s, _ in scored):g})" if scored else " (no EPSS score known)"
            judged.add(False, f"no finding{scope.fix_note} with EPSS {rule.epss}{highest}")


_CHECKS: tuple[Callable[[Rule, _Scope, Judged, datetime], None], ...] = (
    _places, _severity, _cves, _packages, _licenses, _secrets, _eosl, _age, _exploits,
)
