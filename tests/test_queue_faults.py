"""Faults injected while real listener processes work a real queue (see
``tests/support/fault_harness.py``); ``bench/bench_faults.py`` runs the same harness
with >= 100 messages. Bounded: ~24 messages, a 240 s ceiling (typically ~60 s)."""

from __future__ import annotations

from tests.support.fault_harness import FaultPlan, run_faults


def test_no_message_is_lost_or_scanned_twice_under_faults(scanner_env, registry, pushed_sample, audits, azurite,
                                                          tmp_path):
    report = run_faults(
        FaultPlan(messages=24, hung_messages=2, listeners=2, concurrency=2, trivy_kills=2),
        azurite=azurite, registry=registry, image=pushed_sample.reference,
        scanner_env=dict(scanner_env.values), container_sas_url=audits.sas_url,
        config_path=scanner_env.config_path, workdir=tmp_path,
    )
    print(report.summary())
    assert len(report.faults) >= 4, report.faults  # trivy killed, registry down, Azurite down, a hung registry
    assert report.lost == [] and report.duplicated == [], report.summary()
    assert report.unexplained_poison == [], report.unexplained_poison
    assert report.succeeded == 22 and report.audit_failed == 2 and report.quarantined == 2, report.summary()
    assert report.trivy_left == 0
    assert report.leaked_lines == [], report.leaked_lines[:3]
    assert report.listener_exit_codes == [0, 0]
