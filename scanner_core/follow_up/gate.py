"""The approval policy's decision for a succeeded audit: ``policy`` and, derived
from it for compatibility, ``decision`` (reject -> ``rejected``, else ``pending``).

The report is read only when a rule needs more than the meta (``needs_report``):
the local file on the scan path, the stored blob for an audit answered by dedup.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..config import ScannerConfig
from ..models import AcceptedRisk, AuditMeta, PolicyDecision
from ..policy import ExploitLookup, Policy, facts_from_audit, load_policy
from .decision import Decision

if TYPE_CHECKING:
    from ..report import DecodedReport


def decision_of(policy: PolicyDecision) -> Decision:
    return "rejected" if policy.action == "reject" else "pending"


def policy_of(config: ScannerConfig) -> Policy:
    return config.policy if isinstance(config.policy, Policy) else load_policy(config.settings)


def policy_fields(
    config: ScannerConfig,
    meta: AuditMeta,
    report: Path | bytes | IO[bytes] | DecodedReport | None,
    *,
    exploits: ExploitLookup | None = None,
    accepted: Sequence[AcceptedRisk] = (),
) -> dict[str, object]:
    """``{"policy": ..., "decision": ...}`` for ``meta``; ``report`` is read only if the policy needs it."""
    policy = policy_of(config)
    if exploits is None and policy.needs_report:
        from ..exploits import exploit_lookup

        exploits = exploit_lookup(config.settings)
    facts = facts_from_audit(meta, report if policy.needs_report else None, exploits=exploits)
    decided = policy.evaluate(facts, accepted)
    return {"policy": decided, "decision": decision_of(decided)}
