"""After trivy exits (issue 26.3): the report, then the meta, then, side by side, the index and
the approval follow-up; the approval request the policy's decision reads is read while trivy
runs when the request names a digest. Every storage request is recorded at the SDK's transport
(real Azurite, registry and trivy) and the contract is checked on their times: nothing the meta
names comes after it, and no index entry is written before the meta is."""

from __future__ import annotations

import time
from urllib.parse import unquote, urlsplit

from azure.core.pipeline.transport import RequestsTransport

from scanner_core.audit import ScanRequest, utc_now
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.trivy import Trivy


def test_the_approval_is_read_while_trivy_runs_and_the_index_follows_the_meta(
    scanner_env, registry, pushed_sample, audits, monkeypatch
) -> None:
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})  # fmt: skip
    scanner_env.set(SCAN_DEDUP="false")  # both scans run trivy
    events: list[tuple[str, str, float, float]] = []
    exits: list[float] = []
    send, run_report = RequestsTransport.send, Trivy.run_report

    def recorded_send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return send(self, request, **kwargs)
        finally:
            events.append((request.method, unquote(urlsplit(request.url).path), started, time.perf_counter()))

    def recorded_run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return run_report(self, *args, **kwargs)
        finally:
            exits.append(time.perf_counter())

    monkeypatch.setattr(RequestsTransport, "send", recorded_send)
    monkeypatch.setattr(Trivy, "run_report", recorded_run)
    reference = pushed_sample.reference.rsplit(":", 1)[0] + f"@{pushed_sample.digest}"
    scanner = Scanner(load_config())
    for audit_id in ("path-first", "path-second"):  # the second finds the first's approval request
        events.clear()
        exits.clear()
        outcome = scanner.scan(ScanRequest(audit_id=audit_id, requested_at=utc_now(), image=reference, trigger="watch"))
        assert outcome.succeeded, outcome.failure
        trivy_exit = exits[-1]

        def one(method: str, suffix: str) -> tuple[float, float]:
            found = [(start, end) for m, path, start, end in events if m == method and path.endswith(suffix)]
            assert len(found) == 1, (method, suffix, found)
            return found[0]

        approval_reads = [e for e in events if e[0] == "GET" and "/approvals/requests/" in e[1]]
        assert len(approval_reads) == 1 and approval_reads[0][3] < trivy_exit, approval_reads
        report_end = one("PUT", f"{outcome.folder}/scan-result.json")[1]
        meta_start, meta_end = one("PUT", f"{outcome.folder}/meta")
        assert report_end <= meta_start
        index_writes = [start for m, path, start, _ in events if m == "PUT" and "/index/by-" in path
                        and "/approvals/" not in path]  # fmt: skip
        assert len(index_writes) == 3 and min(index_writes) >= meta_end, index_writes
        approval_write = [s for m, path, s, _ in events if m == "PUT" and "/approvals/requests/" in path]
        assert approval_write and min(approval_write) >= meta_end
        # Side by side: the approval follow-up starts before the index's last write ends.
        index_end = max(end for m, path, _, end in events if m == "PUT" and "/index/by-" in path and "/approvals/" not in path)
        assert min(approval_write) < index_end
