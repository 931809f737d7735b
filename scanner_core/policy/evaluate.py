"""The policy: ordered rules, first match wins, else the default action.

Every decision names its rule and says why in one sentence built from the
conditions that matched (``"rule no-critical-fixable: 2 critical findings
with a fix (CVE-..., CVE-...)"``). Accepted CVEs (an approval's, or the
policy's ``allow`` list) are taken out of every count while their ``until``
has not passed; an expired one applies no more, and the sentence says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from ..models import AcceptedRisk, PolicyDecision
from .conditions import Judged, judge_rule
from .facts import PolicyFacts
from .grace import RevocationPolicy
from .owners import ApproverEntry
from .rules import PolicyFile, Rule

DEFAULT_RULE = "default"


@dataclass(frozen=True)
class RuleExplanation:
    """One rule's outcome in a dry run: matched or not, and why."""

    rule: str
    action: str
    matched: bool
    reason: str

    def document(self) -> dict[str, object]:
        return {"rule": self.rule, "action": self.action, "matched": self.matched, "reason": self.reason}


class Policy:
    """A validated policy (``load_policy``); ``source`` says where it came from."""

    def __init__(self, document: PolicyFile, source: str) -> None:
        self.document = document
        self.source = source

    @property
    def rules(self) -> list[Rule]:
        return self.document.rules

    @property
    def default(self) -> str:
        return self.document.default

    @property
    def revocation(self) -> RevocationPolicy:
        return self.document.revocation

    @property
    def approvers(self) -> list[ApproverEntry]:
        return self.document.approvers

    def approvals_needed(self, rule_id: str | None) -> int:
        """How many different reviewers must approve a request the rule ``rule_id`` decided."""
        return next((rule.approvals for rule in self.rules if rule.id == rule_id), 1)

    @property
    def needs_report(self) -> bool:
        """Whether a rule asks more than the meta's counts, EOSL, secrets and where the image
        lives: then the facts are read from the stored report (one streaming pass)."""
        return bool(self.document.allow) or any(
            rule.fixable_only or rule.cves or rule.packages or rule.package_types or rule.licenses is not None
            or rule.kev is not None
            or rule.kev_ransomware is not None or rule.epss is not None or rule.image_age_days is not None
            for rule in self.rules
        )  # fmt: skip

    def evaluate(
        self, facts: PolicyFacts, accepted: Sequence[AcceptedRisk] = (), now: datetime | None = None
    ) -> PolicyDecision:
        """The first matching rule's action, or the default, with the reason."""
        return self.explain(facts, accepted, now, first_only=True)[0]

    def explain(
        self, facts: PolicyFacts, accepted: Sequence[AcceptedRisk] = (), now: datetime | None = None,
        *, first_only: bool = False,
    ) -> tuple[PolicyDecision, list[RuleExplanation]]:  # fmt: skip
        """The decision and each rule's match/no-match explanation (the dry run)."""
        moment = now or datetime.now(timezone.utc)
        active, notes = _split_accepted([*self.document.allow, *accepted], moment)
        decision: PolicyDecision | None = None
        explained: list[RuleExplanation] = []
        for rule in self.rules:
            judged = judge_rule(rule, facts, active, moment)
            explained.append(RuleExplanation(rule.id, rule.action, judged.matched, _sentence(rule.id, judged, notes)))
            if judged.matched and decision is None:
                decision = PolicyDecision(action=rule.action, rule=rule.id, reason=explained[-1].reason)
                if first_only:
                    break
        if decision is None:
            reason = f"{DEFAULT_RULE}: no rule matched; the default action is {self.default}" + _notes(notes)
            decision = PolicyDecision(action=self.default, rule=DEFAULT_RULE, reason=reason)  # type: ignore[arg-type]
        return decision, explained


def _split_accepted(entries: Sequence[AcceptedRisk], now: datetime) -> tuple[dict[str, AcceptedRisk], list[str]]:
    """The entries that still apply by CVE id, and a note for each that expired."""
    today = now.date()
    active: dict[str, AcceptedRisk] = {}
    notes: list[str] = []
    for entry in entries:
        if entry.until is not None and entry.until < today:
            notes.append(f"{entry.id} was accepted until {entry.until.isoformat()} and no longer applies (expired)")
        else:
            active[entry.id] = entry
    return active, notes


def _notes(notes: list[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def _sentence(rule_id: str, judged: Judged, notes: list[str]) -> str:
    parts = judged.matched_parts if judged.matched else judged.failed_parts
    text = "; ".join(parts) if parts else "matches every audit"
    return f"rule {rule_id}: {text}{_notes(notes)}"
