"""What the policy and the exploitability feeds cost, beside a bare trivy run.

* the large fixture (``large_fixture(3000, 3)``: 9,000 findings, a ~32 MB report):
  one bare ``trivy image`` (the core's command), then on its report
  ``summarise_report`` (the core's one pass), ``facts_from_audit`` (the policy's
  extra pass, only when a rule needs the findings) and ``Policy.evaluate`` of a
  six-rule policy;
* EPSS: a synthetic feed of 300,000 rows, gzipped as FIRST ships it: parse time,
  the parsed table's memory (tracemalloc) and 100,000 lookups; KEV: 1,500 entries.

    .venv/bin/python bench/bench_policy.py

Prints figures; asserts nothing (the machine is shared).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_scan import build_fixture, run_bare_trivy, trivy_executable  # noqa: E402
from scanner_core.exploits import parse_epss, parse_kev  # noqa: E402
from scanner_core.models import AuditMeta, AuditResult  # noqa: E402
from scanner_core.policy import Policy, PolicyFile, facts_from_audit  # noqa: E402
from scanner_core.trivy import summarise_report  # noqa: E402
from tests.support import ijson_facts, ijson_report  # noqa: E402
from tests.support.feeds import epss_csv_gz, kev_catalogue  # noqa: E402
from tests.support.images import large_fixture  # noqa: E402

RULES = {"default": "review", "allow": [{"id": "CVE-2099-000001", "until": "2099-01-01"}], "rules": [
    {"id": "kev", "action": "reject", "kev": True},
    {"id": "likely", "action": "reject", "epss": ">= 0.9"},
    {"id": "denied", "action": "reject", "cves": ["CVE-2000-0001"]},
    {"id": "no-critical-fixable", "action": "reject", "severity": {"critical": "> 5000"}, "fixable-only": True},
    {"id": "pkgs", "action": "review", "packages": ["nothing-*"]},
    {"id": "old", "action": "review", "image-age-days": "> 100000"},
]}


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, (time.perf_counter() - started) * 1000


def peak_mib(function, *args):
    tracemalloc.start()
    result = function(*args)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, current / 2**20, peak / 2**20


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as work:
        root = Path(work)
        fixture = build_fixture(root / "large", *large_fixture(3000, 3))
        (root / "home").mkdir()
        bare = run_bare_trivy(trivy_executable(), fixture, root / "report.json", root / "home")
        report = root / "report.json"
        print(f"bare trivy image (9,000 findings): {bare.seconds * 1000:.0f} ms, report {bare.report_bytes / 2**20:.1f} MiB")
        summary, ms = timed(summarise_report, report)
        _, old_ms = timed(ijson_report.summarise_report, report)  # the ijson pass it replaced (issue 26)
        print(f"summarise_report (the core's one pass, native): {ms:.0f} ms; the ijson pass: {old_ms:.0f} ms "
              f"({old_ms / ms:.1f}x)")
        meta = AuditMeta(audit_id="b", scanner_id="s", scanner_version="0", timestamp=0, requested_at=0,
                         audit_result=AuditResult.SUCCEEDED, image="registry.example.com/team/app:1",
                         vulnerabilities={k.lower(): v for k, v in summary.counts.items()})  # fmt: skip
        facts, ms = timed(facts_from_audit, meta, report)
        _, _, peak = peak_mib(facts_from_audit, meta, report)
        print(f"facts_from_audit (the policy's pass, {len(facts.findings)} findings): {ms:.0f} ms, peak {peak:.1f} MiB")
        _, old_ms = timed(ijson_facts.facts_from_audit, meta, report)
        _, _, old_peak = peak_mib(ijson_facts.facts_from_audit, meta, report)
        print(f"  the ijson facts pass it replaced: {old_ms:.0f} ms, peak {old_peak:.1f} MiB; on the scan path the "
              "facts now read the report the summary decoded (no second pass)")
        policy = Policy(PolicyFile.model_validate(RULES), "bench")
        decision, ms = timed(policy.evaluate, facts)
        print(f"Policy.evaluate, 6 rules: {ms:.1f} ms -> {decision.rule}")

    rng = random.Random(15)
    scores = {f"CVE-{1999 + i % 27}-{100000 + i}": (rng.random(), rng.random()) for i in range(300_000)}
    feed = epss_csv_gz(scores)
    ms = min(timed(parse_epss, feed)[1] for _ in range(3))
    table, current, peak = peak_mib(parse_epss, feed)  # tracemalloc slows it: timed apart, best of 3
    print(f"EPSS 300,000 rows ({len(feed) / 2**20:.1f} MiB gzipped): parsed in {ms:.0f} ms; "
          f"kept {current:.1f} MiB, peak while parsing {peak:.1f} MiB")
    keys = list(scores)[:100_000]
    _, ms = timed(lambda: [table.get(k) for k in keys])
    print(f"EPSS 100,000 lookups: {ms:.0f} ms")
    kev = kev_catalogue((f"CVE-2020-{10000 + i}", "2021-11-03", "2022-05-03", "Unknown") for i in range(1500))
    ms = min(timed(parse_kev, kev)[1] for _ in range(3))
    _, current, _ = peak_mib(parse_kev, kev)
    print(f"KEV 1,500 entries ({len(kev) / 2**20:.1f} MiB): parsed in {ms:.0f} ms, kept {current:.1f} MiB")


if __name__ == "__main__":
    main()
