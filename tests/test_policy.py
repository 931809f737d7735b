"""The policy language (issue 15): each condition against real trivy reports of
the fixture (Azurite, the test-built DB), expiry, invalid files, the built-in
default, and the decision recorded in meta."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ConfigurationError
from scanner_core.models import AcceptedRisk, AuditMeta
from scanner_core.policy import Exploit, PolicyFacts, facts_from_audit, load_policy

REQUESTED = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def write_policy(scanner_env, tmp_path: Path, document: dict | str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    scanner_env.set(POLICY_PATH=str(path))
    return path


def scan(path: Path, audit_id: str, image: str | None = None):
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED, input_tar=path))
    assert outcome.succeeded, outcome.failure
    return outcome


@pytest.fixture
def sample_audit(scanner_env, sample_image, audits):
    """One real scan of the fixture: its meta and its stored report (trivy's own findings)."""
    outcome = scan(sample_image.path, "policy-facts")
    meta = AuditMeta.model_validate(audits.json(outcome.meta_path))
    return meta, audits.read(meta.trivy_audit_path)


def decide(rules: list[dict], meta, report, *, default="review", allow=(), accepted=(), exploits=None, **facts):
    from scanner_core.policy import Policy, PolicyFile

    policy = Policy(PolicyFile.model_validate({"default": default, "allow": list(allow), "rules": rules}), "test")
    found = facts_from_audit(meta, report, exploits=exploits)
    for name, value in facts.items():
        setattr(found, name, value)
    return policy.evaluate(found, accepted, now=NOW)


def test_the_decision_names_the_rule_and_says_why_in_meta(scanner_env, sample_image, audits, tmp_path):
    write_policy(scanner_env, tmp_path, {
        "default": "approve",
        "rules": [{"id": "no-critical-fixable", "action": "reject", "severity": {"critical": "> 0"}, "fixable-only": True}],
    })
    meta = audits.json(scan(sample_image.path, "policy-meta").meta_path)
    assert meta["policy"] == {
        "action": "reject", "rule": "no-critical-fixable",
        "reason": "rule no-critical-fixable: 1 critical finding with a fix (CVE-2099-0001)",
    }
    assert meta["decision"] == "rejected"  # kept for compatibility, derived from the action
