"""The native report decoder (issue 26) reads what the ijson pass read, on real trivy output.

The reference is the previous decoder, kept in tests/support/ijson_report.py and
ijson_facts.py; both read the same reports in the same run. A report trivy cut short or
garbled ends as a failed audit with reason ``report-unreadable``, never as succeeded."""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
from pathlib import Path

import pytest

from scanner_core.audit import ScanRequest, utc_now
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ReportUnreadable
from scanner_core.models import AuditMeta, AuditResult
from scanner_core.policy import facts_from_audit
from scanner_core.report import decode_report, write_packages_only
from scanner_core.storage import META_BLOB
from scanner_core.trivy import ReportSummariser, iter_findings, summarise_report
from tests.support import ijson_facts, ijson_report
from tests.support.images import SAMPLE_PACKAGES, build_alpine_image, large_fixture
from tests.support.licence_fixtures import LICENCE_FILES
from tests.support.trivy_db import build_trivy_db
from tests.test_licences import DOCKERFILE

FLAGS = ("--no-progress", "--skip-version-check", "--disable-telemetry", "--cache-backend", "memory",
         "--skip-db-update", "--offline-scan", "--format", "json")  # fmt: skip
PLANTED_SECRET = {"app/.env": b"GITHUB_TOKEN=ghp_" + b"Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8\n"}
# What each report must hold for the comparison to mean something.
CASES = {
    "secrets": ("--scanners", "vuln,secret"),
    "licences": ("--scanners", "vuln,license"),
    "misconfigurations": ("--scanners", "vuln,misconfig", "--image-config-scanners", "misconfig", "--skip-check-update"),
    "suppressed": ("--scanners", "vuln", "--show-suppressed"),
    "large": ("--scanners", "vuln",),
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory, trivy_executable, trivy_cache, sample_image) -> dict[str, Path]:
    """Real trivy reports of the suite's fixture images, one per kind of finding."""
    work = tmp_path_factory.mktemp("decoder")
    images = {
        "secrets": build_alpine_image(work / "s.tar", SAMPLE_PACKAGES, extra_files=PLANTED_SECRET).path,
        "licences": build_alpine_image(work / "l.tar", SAMPLE_PACKAGES, extra_files=LICENCE_FILES).path,
        "misconfigurations": build_alpine_image(work / "m.tar", SAMPLE_PACKAGES, extra_files=DOCKERFILE).path,
        "suppressed": sample_image.path,
    }
    packages, advisories = large_fixture(120, 3)
    build_trivy_db(work / "large-cache", advisories)
    images["large"] = build_alpine_image(work / "large.tar", packages).path
    ignore = work / ".trivyignore"
    found: dict[str, Path] = {}
    for name, flags in CASES.items():
        if name == "suppressed":
            first = ijson_report.summarise_report(found["secrets"]).top_findings
            ignore.write_text("\n".join(f.vulnerability_id for f in first[:2]) + "\n")
            flags = (*flags, "--ignorefile", str(ignore))
        cache = work / "large-cache" if name == "large" else trivy_cache
        found[name] = work / f"{name}.json"
        subprocess.run([str(trivy_executable), "image", *FLAGS, *flags, "--cache-dir", str(cache),
                        "--output", str(found[name]), "--input", str(images[name])],
                       check=True, capture_output=True, timeout=300)  # fmt: skip
    return found


def _meta() -> AuditMeta:
    return AuditMeta(audit_id="d", scanner_id="s", scanner_version="1", timestamp=1, requested_at=1,
                     audit_result=AuditResult.SUCCEEDED, image="registry.example/team/app:1")  # fmt: skip


def _keys(findings) -> list[tuple[str, str, str]]:
    return sorted((f.vulnerability_id, f.pkg_name, f.severity) for f in findings)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_native_decoder_reads_what_the_ijson_pass_read(reports, name) -> None:
    path = reports[name]
    expected = dataclasses.asdict(ijson_report.summarise_report(path))
    assert dataclasses.asdict(summarise_report(path)) == expected
    raw = path.read_bytes()
    for size in (997, 64 * 1024):  # any chunking: the arrays are cut at every boundary
        summariser = ReportSummariser()
        for start in range(0, len(raw), size):
            summariser.feed(raw[start : start + size])
        assert dataclasses.asdict(summariser.close()) == expected
    compact = tmp_compact = path.with_suffix(".compact.json")
    tmp_compact.write_bytes(raw.replace(b"\n", b""))  # no layout to cut by: decoded whole
    assert dataclasses.asdict(summarise_report(compact)) == expected
    assert _keys(iter_findings(path)) == _keys(ijson_report.iter_findings(path))
    facts = dataclasses.asdict(facts_from_audit(_meta(), path))
    assert facts == dataclasses.asdict(ijson_facts.facts_from_audit(_meta(), path))
    assert dataclasses.asdict(facts_from_audit(_meta(), decode_report(raw))) == facts
    # The comparison is not vacuous: each report holds what its case is about.
    held = {"secrets": expected["secrets"], "licences": sum(expected["licenses"].values()),
            "misconfigurations": sum(expected["misconfigurations"].values()),
            "suppressed": sum(expected["suppressed"].values()), "large": sum(expected["counts"].values()) - 300}
    assert held[name] > 0, (name, held[name])
    assert expected["top_findings"] and facts["findings"]


def _wrapped_trivy(tmp_path: Path, real: Path, damage: str) -> Path:
    """The real trivy, whose report is then damaged as a crash or a bug would."""
    script = tmp_path / "trivy"
    script.write_text(f"""#!/bin/bash
"{real}" "$@"; rc=$?
prev=""; out=""
for a in "$@"; do [ "$prev" = "--output" ] && out="$a"; prev="$a"; done
if [ -n "$out" ] && [ -f "$out" ] && [ "$1" = image ]; then {damage}; fi
exit $rc
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.parametrize("damage", [
    'truncate -s $(( $(stat -c %s "$out") * 2 / 3 )) "$out"',
    'sed -i \'0,/"VulnerabilityID": "/s//"VulnerabilityID": !"/\' "$out"',
], ids=["truncated", "malformed"])
def test_a_damaged_report_is_a_failed_audit_with_its_reason(scanner_env, audits, sample_image, trivy_executable,
                                                             tmp_path, damage) -> None:  # fmt: skip
    scanner_env.set(TRIVY_PATH=str(_wrapped_trivy(tmp_path, trivy_executable, damage)))
    outcome = Scanner(load_config()).scan(ScanRequest(audit_id="damaged", requested_at=utc_now(),
                                                      input_tar=sample_image.path), final_attempt=True)  # fmt: skip
    meta = audits.json(outcome.meta_path)
    assert meta["audit-result"] == "audit-failed"
    assert meta["failure-reason"] == "report-unreadable"
    assert "report" in meta["failure-description"]
    assert not any(name.endswith(f"/{META_BLOB}") and audits.json(name)["audit-result"] == "succeeded"
                   for name in audits.names())  # fmt: skip


def test_a_truncated_report_raises_a_clear_error(reports) -> None:
    raw = reports["large"].read_bytes()
    with pytest.raises(ReportUnreadable, match="truncated"):
        decode_report(raw[: len(raw) // 2])
    with pytest.raises(ReportUnreadable, match="not trivy's JSON"):
        decode_report(raw[:-3])


def test_the_inventory_input_is_the_report_without_its_findings(reports, tmp_path) -> None:
    """What ``trivy convert`` gets for an inventory: every result's findings emptied, the rest as is."""
    for name in ("large", "licences"):
        trimmed = tmp_path / f"{name}.json"
        write_packages_only(reports[name], trimmed)
        expected = json.loads(reports[name].read_bytes())
        assert any(result.get("Vulnerabilities") for result in expected["Results"])
        for result in expected["Results"]:
            if "Vulnerabilities" in result:
                result["Vulnerabilities"] = []
        assert json.loads(trimmed.read_bytes()) == expected
        assert trimmed.stat().st_size < reports[name].stat().st_size
    raw = reports["large"].read_bytes()
    (tmp_path / "cut.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReportUnreadable, match="truncated"):
        write_packages_only(tmp_path / "cut.json", tmp_path / "out.json")
