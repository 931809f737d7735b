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


class Feeds:
    """What the exploitability feeds say of some CVEs: the ``ExploitLookup`` protocol the
    feeds' reader follows (``scanner_core/exploits``), here from a literal table."""

    def __init__(self, table: dict[str, Exploit]) -> None:
        self.table = table

    def exploit(self, cve: str) -> Exploit | None:
        return self.table.get(cve)


def test_severity_counts_and_fixable_only(sample_audit):
    meta, report = sample_audit
    rule = {"id": "many-high", "action": "review", "severity": {"high": ">= 2"}}
    assert decide([rule], meta, report, default="approve").reason == (
        "rule many-high: 2 high findings (CVE-2099-0003, CVE-2099-0004)")
    # Boundaries: 1 critical is not > 1; the total is 6.
    assert decide([{"id": "c", "action": "reject", "severity": {"critical": "> 1"}}], meta, report).rule == "default"
    assert decide([{"id": "t", "action": "reject", "severity": {"total": "== 6"}}], meta, report).rule == "t"
    # CVE-2099-0002 (medium) has no fix: fixable-only leaves no medium finding.
    medium = {"id": "medium", "action": "reject", "severity": {"medium": "> 0"}}
    assert decide([medium], meta, report).reason == "rule medium: 1 medium finding (CVE-2099-0002)"
    assert decide([{**medium, "fixable-only": True}], meta, report).rule == "default"
    # fixable-only alone: any finding with a fix.
    assert decide([{"id": "f", "action": "review", "fixable-only": True}], meta, report).reason == (
        "rule f: 5 findings with a fix (CVE-2099-0001, CVE-2099-0003, CVE-2099-0004, CVE-2099-0006, CVE-2099-0007)")


def test_first_match_wins_and_the_dry_run_explains_every_rule(sample_audit):
    from scanner_core.policy import Policy, PolicyFile

    meta, report = sample_audit
    policy = Policy(PolicyFile.model_validate({"default": "approve", "rules": [
        {"id": "no-secrets", "action": "reject", "secrets": "> 0"},
        {"id": "eol", "action": "review", "eosl": True},
        {"id": "critical", "action": "reject", "severity": {"critical": "> 0"}},
    ]}), "test")
    decision, explained = policy.explain(facts_from_audit(meta, report), now=NOW)
    assert (decision.action, decision.rule) == ("review", "eol")
    assert [(e.rule, e.matched, e.reason) for e in explained] == [
        ("no-secrets", False, "rule no-secrets: 0 secrets found, not > 0"),
        ("eol", True, "rule eol: the OS is past its end of life"),
        ("critical", True, "rule critical: 1 critical finding (CVE-2099-0001)"),
    ]


def test_cve_deny_and_allow_lists_with_expiry(sample_audit):
    meta, report = sample_audit
    deny = {"id": "denied", "action": "reject", "cves": ["CVE-2099-0004", {"id": "CVE-2099-9999"}]}
    assert decide([deny], meta, report).reason == "rule denied: denied CVE found (CVE-2099-0004)"
    expired_deny = {"id": "denied", "action": "reject", "cves": [{"id": "CVE-2099-0004", "until": "2026-12-01"}]}
    assert decide([expired_deny], meta, report).rule == "default"

    critical = {"id": "critical", "action": "reject", "severity": {"critical": "> 0"}}
    live = {"id": "CVE-2099-0001", "until": "2026-12-31", "justification": "fixed in 1.4.4"}
    assert decide([critical], meta, report, allow=[live]).rule == "default"  # accepted: not counted
    # An approval's accepted CVEs apply the same way, and expire the same way.
    assert decide([critical], meta, report, accepted=[AcceptedRisk(**live)]).rule == "default"
    assert decide([critical], meta, report, accepted=[AcceptedRisk(id="CVE-2099-0001")]).rule == "default"
    past = AcceptedRisk(id="CVE-2099-0001", until=date(2026, 11, 30), justification="fixed in 1.4.4")
    decision = decide([critical], meta, report, accepted=[past])
    assert (decision.rule, decision.reason) == ("critical", (
        "rule critical: 1 critical finding (CVE-2099-0001) "
        "(CVE-2099-0001 was accepted until 2026-11-30 and no longer applies (expired))"))
    # The last day still counts: ``until`` is inclusive.
    assert decide([critical], meta, report, accepted=[past], ).rule == "critical"
    assert decide([critical], meta, report, accepted=[
        AcceptedRisk(id="CVE-2099-0001", until=NOW.date())]).rule == "default"


def test_packages_and_types(sample_audit):
    meta, report = sample_audit
    assert decide([{"id": "bb", "action": "reject", "packages": ["busy*"]}], meta, report).reason == (
        "rule bb: package busybox (alpine) matches busy*")
    assert decide([{"id": "npm", "action": "reject", "package-types": "npm"}], meta, report).rule == "default"
    both = {"id": "both", "action": "reject", "packages": "musl", "package-types": ["alpine"]}
    assert decide([both], meta, report).reason == "rule both: package musl (alpine) matches musl, type alpine"


def test_eosl_image_age_secrets_and_licences_not_scanned(sample_audit):
    meta, report = sample_audit
    assert decide([{"id": "old", "action": "review", "image-age-days": "> 365"}], meta, report).reason == (
        "rule old: the image is 1066 days old (created 2024-01-01)")
    assert decide([{"id": "young", "action": "approve", "image-age-days": "< 30"}], meta, report).rule == "default"
    assert decide([{"id": "supported", "action": "approve", "eosl": False}], meta, report).rule == "default"
    # Licences are not scanned by default: a licence rule never matches, and says why.
    from scanner_core.policy import Policy, PolicyFile

    policy = Policy(PolicyFile.model_validate(
        {"rules": [{"id": "agpl", "action": "reject", "licenses": {"forbidden": "> 0"}}]}), "t")
    _, explained = policy.explain(facts_from_audit(meta, report), now=NOW)
    assert explained[0].reason == "rule agpl: licences were not scanned (TRIVY_SCANNERS without license)"


def test_kev_epss_and_ransomware(sample_audit):
    meta, report = sample_audit
    feeds = Feeds({
        "CVE-2099-0003": Exploit(kev=True, date_added="2026-11-01", due_date="2026-11-22", epss=0.91, percentile=0.99),
        "CVE-2099-0006": Exploit(kev=True, kev_ransomware=True, date_added="2026-10-01", epss=0.2),
        "CVE-2099-0002": Exploit(epss=0.6),
    })
    kev = {"id": "kev", "action": "reject", "kev": True}
    assert decide([kev], meta, report, exploits=feeds).reason == (
        "rule kev: 2 findings in CISA's KEV catalogue (CVE-2099-0003, CVE-2099-0006)")
    assert decide([kev], meta, report, exploits=Feeds({})).rule == "default"
    assert decide([{"id": "rw", "action": "reject", "kev-ransomware": True}], meta, report, exploits=feeds).reason == (
        "rule rw: 1 finding known to be used in ransomware campaigns (KEV) (CVE-2099-0006)")
    epss = {"id": "likely", "action": "reject", "epss": ">= 0.5"}
    assert decide([epss], meta, report, exploits=feeds).reason == (
        "rule likely: 2 findings with EPSS >= 0.5 (CVE-2099-0002, CVE-2099-0003), highest 0.91")
    assert decide([{**epss, "fixable-only": True}], meta, report, exploits=feeds).reason == (
        "rule likely: 1 finding with a fix with EPSS >= 0.5 (CVE-2099-0003), highest 0.91")
    assert decide([{**epss, "epss": "> 0.95"}], meta, report, exploits=feeds).rule == "default"
    accepted = [AcceptedRisk(id="CVE-2099-0003"), AcceptedRisk(id="CVE-2099-0006")]
    assert decide([kev], meta, report, exploits=feeds, accepted=accepted).rule == "default"


def test_repository_registry_and_platform_patterns(scanner_env, registry, pushed_sample, audits, tmp_path):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    write_policy(scanner_env, tmp_path, {"default": "review", "rules": [
        {"id": "elsewhere", "action": "reject", "registry": "*.azurecr.io"},
        {"id": "ours", "action": "approve", "registry": ["127.0.0.1:*", "localhost:*"], "repository": "team/*",
         "platform": "linux/*"},
    ]})
    digest_reference = pushed_sample.reference.rsplit(":", 1)[0] + f"@{pushed_sample.digest}"
    outcome = Scanner(load_config()).scan(ScanRequest(
        audit_id="where", requested_at=REQUESTED, image=digest_reference, platform="linux/amd64"))
    assert outcome.succeeded, outcome.failure
    meta = audits.json(outcome.meta_path)
    repository = digest_reference.split("/", 1)[1].split("@")[0]
    assert meta["policy"] == {"action": "approve", "rule": "ours", "reason": (
        f"rule ours: repository {repository} matches team/*; registry {registry.address} matches "
        "127.0.0.1:*, localhost:*; platform linux/amd64 matches linux/*")}
    assert meta["decision"] == "pending"

    # The same digest again is answered by dedup: the policy is evaluated for that audit too.
    again = Scanner(load_config()).scan(ScanRequest(
        audit_id="where-again", requested_at=REQUESTED, image=digest_reference, platform="linux/amd64"))
    reused = audits.json(again.meta_path)
    assert reused["reused-from"] == "where"
    assert reused["policy"]["rule"] == "ours"
    # A rule that needs the findings reads the reused audit's stored report; another POLICY_PATH
    # does not stop the reuse (the policy is evaluated anew, it is not in the dedup key).
    write_policy(scanner_env, tmp_path, {"rules": [
        {"id": "denied", "action": "reject", "cves": ["CVE-2099-0003"], "fixable-only": True}]}, "other.yaml")
    third = Scanner(load_config()).scan(ScanRequest(
        audit_id="where-third", requested_at=REQUESTED, image=digest_reference, platform="linux/amd64"))
    meta = audits.json(third.meta_path)
    assert (meta["reused-from"], meta["decision"]) == ("where", "rejected")
    assert meta["policy"]["reason"] == "rule denied: denied CVE found (CVE-2099-0003)"


def test_a_secret_in_the_image_is_a_condition(scanner_env, audits, tmp_path):
    from tests.support.images import SAMPLE_PACKAGES, build_alpine_image

    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    leaky = build_alpine_image(tmp_path / "leaky.tar", SAMPLE_PACKAGES, extra_files={"app/.env": f"T={token}\n".encode()})
    write_policy(scanner_env, tmp_path, {"rules": [{"id": "no-secrets", "action": "reject", "secrets": "> 0"}]})
    meta = audits.json(scan(leaky.path, "leaky").meta_path)
    assert meta["policy"] == {"action": "reject", "rule": "no-secrets", "reason": "rule no-secrets: 1 secret found"}
    write_policy(scanner_env, tmp_path, {"rules": [{"id": "none", "action": "approve", "secrets": False},
                                                   {"id": "some", "action": "reject", "secrets": True}]})
    assert audits.json(scan(leaky.path, "leaky-2").meta_path)["policy"]["rule"] == "some"
    assert token.encode() not in audits.everything()


def test_the_built_in_policy_is_todays_auto_rejection(scanner_env, sample_image, audits):
    pending = audits.json(scan(sample_image.path, "builtin-1").meta_path)
    assert pending["decision"] == "pending"
    assert pending["policy"] == {"action": "review", "rule": "default",
                                 "reason": "default: no rule matched; the default action is review"}
    scanner_env.set(TRIVY_AUTO_REJECT_CRITICAL="true")
    rejected = audits.json(scan(sample_image.path, "builtin-2").meta_path)
    assert (rejected["decision"], rejected["policy"]) == ("rejected", {
        "action": "reject", "rule": "auto-reject-critical",
        "reason": "rule auto-reject-critical: 1 critical finding (CVE-2099-0001)"})
    scanner_env.set(TRIVY_CRITICAL_THRESHOLD="1")  # 1 critical is not above 1: status not failed, not rejected
    assert audits.json(scan(sample_image.path, "builtin-3").meta_path)["decision"] == "pending"
    scanner_env.set(TRIVY_FAIL_ON_EOSL="true")  # ... but the end-of-life OS fails it
    eol = audits.json(scan(sample_image.path, "builtin-4").meta_path)
    assert (eol["scan-status"], eol["decision"], eol["policy"]["rule"]) == ("failed", "rejected", "auto-reject-eosl")


@pytest.mark.parametrize(("auto", "threshold", "eosl"), [
    (a, t, e) for a in (False, True) for t in (0, 1, 5) for e in (False, True)])
def test_the_built_in_policy_matches_the_old_decision_for_every_setting(scanner_env, auto, threshold, eosl):
    from scanner_core.follow_up import decide as old_decide
    from scanner_core.verdict import Thresholds, VulnerabilityCounts, decide_status

    scanner_env.set(TRIVY_AUTO_REJECT_CRITICAL=str(auto).lower(), TRIVY_CRITICAL_THRESHOLD=str(threshold),
                    TRIVY_FAIL_ON_EOSL=str(eosl).lower())
    policy = load_policy(load_config().settings)
    for critical in range(0, 7):
        for os_eosl in (False, True):
            counts = VulnerabilityCounts(critical=critical, total=critical)
            status = "failed" if os_eosl and eosl else decide_status(counts, Thresholds(critical=threshold)).value
            facts = PolicyFacts(counts={"critical": critical, "total": critical}, eosl=os_eosl)
            action = policy.evaluate(facts, now=NOW).action
            assert ("rejected" if action == "reject" else "pending") == old_decide(status, auto), (critical, os_eosl)


def test_an_invalid_policy_file_names_every_bad_rule_and_field(scanner_env, tmp_path):
    write_policy(scanner_env, tmp_path, """\
default: maybe
allow:
  - {id: CVE-2099-0001, until: next-week}
rules:
  - id: no-critical-fixable
    action: reject
    severity: {critical: "> 0", severe: 1}
    fixable-only: yes
  - action: approve
    epss: "about half"
  - id: licences
    action: reject
    licences: {forbidden: 1}
  - id: licences
    action: review
    kev: sometimes
""")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    problems = caught.value.problems
    source = f"POLICY_PATH ({tmp_path / 'policy.yaml'})"
    assert all(p.startswith(source) for p in problems)
    text = "\n".join(problems)
    for expected in (
        "default: Input should be 'approve', 'reject' or 'review'",
        "allow.0.until: Input should be a valid date",
        "rule 'no-critical-fixable' (rules[0]).severity.severe: unknown field; allowed: critical, high, medium, low, "
        "unknown, total",
        "rules[1].id: is required: a unique name for the rule: letters, digits, '.', '_' or '-', e.g. "
        "no-critical-fixable",
        "rules[1].epss: 'about half' is not a comparison such as",
        "rule 'licences' (rules[2]).licences: unknown field; allowed: id, action, description, severity, fixable-only, "
        "cves, packages, package-types, licenses, secrets, eosl, image-age-days, repository, registry, platform, kev, "
        "kev-ransomware, epss",
        "rule 'licences' (rules[3]).kev: Input should be a valid boolean",
    ):
        assert expected in text, (expected, text)
    assert len(problems) == 7, text
    # The scanner does not start: the HTTP API answers the same problems.
    from scanner_core.functions import http_api

    assert "rules[1].id" in str(caught.value)
    assert hasattr(http_api, "serve")
    write_policy(scanner_env, tmp_path, {"rules": [{"id": "has space"}]})
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert caught.value.problems == [
        f"{source}: rule 'has space' (rules[0]).id: must be a unique name for the rule: letters, digits, '.', '_' or '-', e.g. "
        "no-critical-fixable",
        f"{source}: rule 'has space' (rules[0]).action: is required: approve, reject or review",
    ]


def test_a_policy_file_that_is_not_yaml_or_missing(scanner_env, tmp_path):
    write_policy(scanner_env, tmp_path, "rules: [\n  - id: x\n    action: [reject\n")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "not valid YAML at line" in str(caught.value)
    scanner_env.set(POLICY_PATH=str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert f"POLICY_PATH ({tmp_path / 'absent.yaml'}): cannot be read: No such file or directory" in str(caught.value)
    write_policy(scanner_env, tmp_path, {"rules": [{"id": "a", "action": "reject"}, {"id": "a", "action": "review"}]})
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert "rules: rule id 'a' is used twice" in str(caught.value)


def test_the_dry_run_route_explains_every_rule_and_changes_nothing(scanner_env, sample_image, audits, azurite,
                                                                   tmp_path):  # fmt: skip
    from tests.test_http_api import answer, error_of, http, make_api

    from scanner_core.functions import evaluate_policy

    outcome = scan(sample_image.path, "dry-run")  # recorded under the built-in default
    before = {name: audits.read(name) for name in audits.all_names()}
    write_policy(scanner_env, tmp_path, {"default": "approve", "rules": [
        {"id": "no-secrets", "action": "reject", "secrets": "> 0"},
        {"id": "no-critical-fixable", "action": "reject", "severity": {"critical": "> 0"}, "fixable-only": True},
        {"id": "end-of-life", "action": "review", "eosl": True},
    ]})
    api = make_api(azurite)
    document = answer(evaluate_policy(http("POST", "policy/evaluate", body={"audit-id": "dry-run"}), api), 200)
    assert document == {
        "audit-id": "dry-run",
        "policy": str(tmp_path / "policy.yaml"),
        "decision": {"action": "reject", "rule": "no-critical-fixable",
                     "reason": "rule no-critical-fixable: 1 critical finding with a fix (CVE-2099-0001)"},
        "rules": [
            {"rule": "no-secrets", "action": "reject", "matched": False, "reason": "rule no-secrets: 0 secrets found, not > 0"},
            {"rule": "no-critical-fixable", "action": "reject", "matched": True,
             "reason": "rule no-critical-fixable: 1 critical finding with a fix (CVE-2099-0001)"},
            {"rule": "end-of-life", "action": "review", "matched": True,
             "reason": "rule end-of-life: the OS is past its end of life"},
        ],
        "recorded": {"action": "review", "rule": "default",
                     "reason": "default: no rule matched; the default action is review"},
        "report-read": True,
    }
    assert {name: audits.read(name) for name in audits.all_names()} == before  # nothing written
    assert outcome.meta_path in before

    assert error_of(evaluate_policy(http("POST", "policy/evaluate", body={"audit-id": "nope"}), api), 404)[
        "field"] == "audit-id"
    assert error_of(evaluate_policy(http("POST", "policy/evaluate", body={}), api), 400)["code"] == "missing-field"
    assert error_of(evaluate_policy(http("POST", "policy/evaluate", body={"audit": "x"}), api), 400)[
        "code"] == "unknown-field"
    assert error_of(evaluate_policy(http("GET", "policy/evaluate"), api), 405)["code"] == "method-not-allowed"
