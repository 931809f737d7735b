"""Batched rescans (issue 26): the rescan timer puts many digests in one message, and one
delivery rescans them against one loopback ``trivy server`` that keeps the DB open; each digest
is still its own audit, retried on its own, and a worker killed mid-batch loses no digest and
doubles none. Real trivy (its server too), the registry, Azurite and the queue trigger's body."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.audit import ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.functions import monitor_handlers
from scanner_core.queue import Delivery, batch_message, handle_message, pack_batches, parse_batch
from scanner_core.queue.quarantine import fits
from tests.conftest import REPO_ROOT, Audits
from tests.support.monitor import QueuedMessage, TrivySpy
from tests.test_monitor_rescan import DAY1, DAY2, NEW_ADVISORY, write_db
from tests.test_monitor_watch import Monitor, monitor  # noqa: F401 - the fixture

SERVER_LINE = re.compile(r"^server --listen (127\.0\.0\.1:\d+) ")


def first_scans(monitor: Monitor, tmp_path: Path, repositories: list[str]) -> list[str]:
    """Each repository's image pushed and scanned once (its inventory stored); the references by digest."""
    references = []
    for repository in repositories:
        digest = monitor.push(repository, "1.0", variant=f"{repository}-{tmp_path.name}")
        reference = monitor.ref(repository, digest)
        outcome = Scanner(load_config()).scan(ScanRequest(audit_id=f"first-{repository.replace('/', '-')}",
                                                          requested_at=datetime.now(timezone.utc), image=reference,
                                                          tag="1.0", trigger="watch"))  # fmt: skip
        assert outcome.succeeded and outcome.meta.inventory_path, outcome.meta.failure_description
        references.append(reference)
    return references


def metas(audits: Audits, audit_id: str) -> list[dict]:
    return [audits.json(name) for name in audits.names() if name.endswith(f"-{audit_id}/meta")]


def the_meta(audits: Audits, audit_id: str) -> dict:
    (meta,) = metas(audits, audit_id)
    return meta


def sbom_runs(spy: TrivySpy) -> list[str]:
    return [line for line in spy.invocations() if line.startswith("sbom ")]


def servers(spy: TrivySpy) -> list[str]:
    return [match.group(1) for line in spy.invocations() if (match := SERVER_LINE.match(line))]


@pytest.fixture
def rescan_monitor(monitor: Monitor, tmp_path, trivy_executable) -> tuple[Monitor, TrivySpy, Path]:
    spy = TrivySpy(tmp_path, trivy_executable)
    cache = write_db(tmp_path / "cache", DAY1)
    monitor.configure([], TRIVY_PATH=str(spy.path), TRIVY_CACHE_DIR=str(cache), SCAN_DEDUP="false",
                      RESCAN_SERVER="auto")
    return monitor, spy, cache


def test_the_timer_batches_and_one_server_serves_the_batch_with_a_lost_inventory_pulled_alone(
    rescan_monitor, audits
):
    monitor, spy, cache = rescan_monitor
    references = first_scans(monitor, spy.path.parent, [f"batch/app{n}" for n in range(4)])
    lost = the_meta(audits, "first-batch-app1")["inventory-path"]
    audits.client.delete_blob(lost)  # retention took the second image's inventory

    write_db(cache, DAY2, refreshed=True)
    monitor.env.set(RESCAN_MAX_AGE_HOURS="0", RESCAN_BATCH_SIZE="3")
    spy.reset()
    result = monitor_handlers.on_rescan(TimerRequest(), REPO_ROOT)
    assert (len(result.enqueued), result.messages) == (4, 2)  # a batch of 3, then one alone
    batch, single = monitor.queue.take()
    items = batch.payload["rescans"]
    assert [item["image-full-name"] for item in items] + [single.payload["image-full-name"]] == references
    assert {item["tag"] for item in items} == {"1.0"} and batch.payload["trigger"] == "rescan"

    assert monitor.queue.deliver(batch, REPO_ROOT) == []
    assert monitor.queue.take() == []  # nothing retried, nothing continued
    (server,) = servers(spy)  # one server for the batch...
    with_server = [line for line in sbom_runs(spy) if f"--server http://{server} " in line]
    assert len(with_server) == len(sbom_runs(spy)) == 2  # ...asked by both inventory rescans
    assert len(spy.scans()) == 1  # and the lost inventory's image pulled
    assert "--token" not in " ".join(spy.invocations()).split()  # the token is in the environment only
    for index, item in enumerate(items):
        meta = the_meta(audits, item["image-scan-id"])
        assert meta["audit-result"] == "succeeded" and NEW_ADVISORY.vulnerability_id in {
            d["VulnerabilityID"] for d in meta["details"]}
        assert meta["trivy-db-updated-at"] == "2026-11-02T06:00:00Z" and "trivy-server" not in meta
        if index == 1:
            assert meta["rescan-fallback"] == "inventory-missing" and "rescanned-from" not in meta
        else:
            assert "rescan-fallback" not in meta and meta["rescanned-from"].startswith("first-batch-app")
    assert not answers(server)  # the batch's server is gone with the batch

    spy.reset()
    assert monitor.queue.deliver(single, REPO_ROOT) == []
    assert servers(spy) == [] and len(sbom_runs(spy)) == 1  # one rescan alone: no server for it
    assert "--server" not in sbom_runs(spy)[0]
    assert the_meta(audits, single.payload["image-scan-id"])["rescanned-from"] == "first-batch-app3"


def answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) == 0


def test_a_batch_stops_starting_rescans_when_its_time_is_up_and_the_rest_goes_on(rescan_monitor, audits):
    monitor, spy, cache = rescan_monitor
    references = first_scans(monitor, spy.path.parent, [f"slow/app{n}" for n in range(3)])
    write_db(cache, DAY2, refreshed=True)
    body = batch_message([(reference, f"late-{n}", "1.0") for n, reference in enumerate(references)],
                         time.time()).to_text()
    monitor.env.set(RESCAN_BATCH_SECONDS="0.001")  # every rescan takes longer: one per delivery
    assert monitor.queue.deliver(QueuedMessage("batch-late", body, None), REPO_ROOT) == []
    assert [m["audit-result"] for m in metas(audits, "late-0")] == ["succeeded"]
    assert metas(audits, "late-1") == metas(audits, "late-2") == []
    (rest,) = monitor.queue.take()
    assert [item["image-scan-id"] for item in rest.payload["rescans"]] == ["late-1", "late-2"]
    assert rest.envelope["headers"]["creation-time"] == parse_batch(body.encode()).headers.creation_time
    assert monitor.queue.deliver(rest, REPO_ROOT) == []
    (last,) = monitor.queue.take()
    assert monitor.queue.deliver(last, REPO_ROOT) == [] and monitor.queue.take() == []
    for n in range(3):  # each digest once, in the folder its first message named
        assert [m["audit-result"] for m in metas(audits, f"late-{n}")] == ["succeeded"]


CRASHING_TRIVY = """#!/bin/sh
printf "%s\\n" "$*" >> "{log}"
if [ "$1" = sbom ] && [ "$(grep -c '^sbom ' "{log}")" = 2 ]; then
  kill -9 "$PPID"   # the worker dies during the batch's second rescan (out of memory, recycled)
  sleep 30
fi
exec "{real}" "$@"
"""

DELIVER_ONCE = """
import sys
from pathlib import Path
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.queue import Delivery, handle_message
handle_message(Delivery(Path(sys.argv[1]).read_bytes(), "batch-crash", 1), Scanner(load_config()),
               max_dequeue_count=3, quarantine=print, retry_later=lambda text, delay: print(text))
"""


def test_a_worker_killed_mid_batch_loses_no_digest_and_doubles_none(rescan_monitor, audits, tmp_path,
                                                                     trivy_executable):
    monitor, spy, cache = rescan_monitor
    references = first_scans(monitor, tmp_path, [f"crash/app{n}" for n in range(3)])
    write_db(cache, DAY2, refreshed=True)
    spy.reset()
    spy.path.write_text(CRASHING_TRIVY.format(log=spy.log, real=trivy_executable))
    body = batch_message([(reference, f"crash-{n}", "1.0") for n, reference in enumerate(references)],
                         time.time()).to_text()
    (tmp_path / "batch.json").write_text(body)
    worker = subprocess.run([sys.executable, "-c", DELIVER_ONCE, str(tmp_path / "batch.json")], cwd=REPO_ROOT,
                            env=os.environ.copy(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert worker.returncode == -9, worker.stderr[-2000:]
    done = the_meta(audits, "crash-0")
    assert done["audit-result"] == "succeeded" and metas(audits, "crash-1") == metas(audits, "crash-2") == []
    (server,) = servers(spy)
    deadline = time.monotonic() + 10
    while answers(server):  # it died with its worker
        assert time.monotonic() < deadline, "the batch's trivy server outlived its worker"
        time.sleep(0.1)

    # The platform delivers the batch again: the digests not done go on alone, the done one stays done.
    sent: list[str] = []
    quarantined: list[str] = []
    handle_message(Delivery(body.encode(), "batch-crash", 2), Scanner(load_config()), max_dequeue_count=3,
                   quarantine=quarantined.append, retry_later=lambda text, delay: sent.append(text))
    assert quarantined == [] and [parse_batch(text.encode()) for text in sent] == [None, None]
    singles = [QueuedMessage(f"single-{n}", text, None) for n, text in enumerate(sent)]
    assert [m.payload["image-scan-id"] for m in singles] == ["crash-1", "crash-2"]
    for message in singles:
        assert monitor.queue.deliver(message, REPO_ROOT) == []
    assert len(sbom_runs(spy)) == 4  # 2 before the crash, 1 each after: crash-0 never again
    assert the_meta(audits, "crash-0") == done
    for n in range(3):
        meta = the_meta(audits, f"crash-{n}")  # exactly one audit each
        assert meta["audit-result"] == "succeeded" and meta["rescanned-from"] == f"first-crash-app{n}"
        assert NEW_ADVISORY.vulnerability_id in {d["VulnerabilityID"] for d in meta["details"]}


def test_batches_are_packed_to_fit_a_queue_message_and_a_bad_batch_is_quarantined_naming_the_field(
    scanner_env, audits
):
    long_name = "r.example/" + "/".join(["team-with-a-long-name"] * 10)
    rescans = [(f"{long_name}/app{n}@sha256:{n:064x}", f"rescan-{n:012x}-1795300000", "release-2026.11")
               for n in range(400)]  # fmt: skip
    packed = pack_batches(rescans, 1795300000, 400)
    assert len(packed) > 1 and all(fits(batch.to_text()) for batch in packed)
    assert [(i.image_full_name, i.image_scan_id, i.tag) for b in packed for i in b.payload.rescans] == rescans
    assert [len(b.payload.rescans) for b in pack_batches(rescans[:7], 1795300000, 3)] == [3, 3, 1]

    quarantined: list[str] = []
    bad = batch_message(rescans[:2], 1795300000).to_text().replace('"rescan-000000000001', '"../evil')
    handle_message(Delivery(bad.encode(), "bad-batch", 1), Scanner(load_config()), max_dequeue_count=3,
                   quarantine=quarantined.append)
    (entry,) = quarantined
    assert '"failure-reason": "invalid-payload.rescans.image-scan-id"' in entry and "bad-batch" in entry
