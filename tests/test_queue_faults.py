"""Faults injected while real listener processes work a real queue (see
``tests/support/fault_harness.py``); ``bench/bench_faults.py`` runs the same harness
with >= 100 messages. Bounded: ~24 messages, a 240 s ceiling (typically ~60 s).
Issue 17 added instances recycled while holding messages (their deliveries come
back with a higher dequeue count, then meet the registry outage: retried, not
quarantined) and a lifecycle rule deleting audit folders while dedup answers
requests by digest: every succeeded audit must still hold its own report."""

from __future__ import annotations

from tests.support.fault_harness import FaultPlan, run_faults


def test_no_message_is_lost_or_scanned_twice_under_faults(scanner_env, registry, pushed_sample, audits, azurite,
                                                          tmp_path):
    report = run_faults(
        FaultPlan(messages=24, hung_messages=2, listeners=2, concurrency=2, trivy_kills=2,
                  recycles=2, by_digest=4, seeds=1),
        azurite=azurite, registry=registry, image=pushed_sample.reference,
        scanner_env=dict(scanner_env.values), container_sas_url=audits.sas_url,
        config_path=scanner_env.config_path, workdir=tmp_path, digest=pushed_sample.digest,
    )
    print(report.summary())
    # a lifecycle deletion, two instances recycled holding messages, trivy killed, registry down, Azurite down,
    # a hung registry
    assert len(report.faults) >= 7, report.faults
    assert report.not_self_contained == [], report.summary()  # the listener never dedups (it refreshes the DB)
    assert report.lost == [] and report.duplicated == [], report.summary()
    assert report.unexplained_poison == [], report.unexplained_poison
    assert report.succeeded == 22 and report.audit_failed == 2 and report.quarantined == 2, report.summary()
    assert report.trivy_left == 0
    assert report.leaked_lines == [], report.leaked_lines[:3]
    assert report.listener_exit_codes == [0, 0]
